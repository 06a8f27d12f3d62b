"""Engine steps: per vLLM step, wall time against GPU time and the time the GPU waited on the host.

Definitions (to be copied into docs/METRICS.md, Forensics):

- step: a host range whose name matches vLLM's step annotation (vLLM `gpu_worker.annotate_profile`,
  one per `execute_model`): the simple form `execute_context_{C}({T})_generation_{G}({g})` or the
  detailed one `execute_[{N}_]context_{C}(sq{T}sk…sqsq…sqsk…)_generation_{G}(sq{g}sk…sqsq…sqsk…)`:
  C context (prefill) requests with T tokens, G generation (decode) requests with g tokens. A
  user's `step_pattern` (a Python regex, searched in each range name) may replace it; its named
  groups `context`, `context_tokens`, `generation`, `generation_tokens` (or, without names, its
  first four groups in that order) give the counts; without them every step's kind is "unknown".
  Where several threads annotate steps (an nsys capture of several workers), the thread with the
  most step ranges is used; repeated ranges with the same start count once.
- step window: from the step range's start to the next step's start; the last step's from its
  start to its range's end, or to the end of the last device op (any GPU) that started at or after
  its start, if that is later: a step's GPU work runs after the host has left its range (vLLM
  launches a step's sampling in a separate call, outside the annotation, and CUDA graphs queue
  work faster than it runs), and after the last annotation only the trace's end bounds it.
  Whatever the host did between two steps (scheduling, output processing) belongs to the step
  before, as does any idle time of the engine there.
- kind: decode (C = 0, G > 0), prefill (C > 0, G = 0), mixed (C > 0, G > 0), empty (C = 0, G = 0:
  a step that scheduled nothing, e.g. KV-transfer polling), unknown (the pattern gives no counts).
- wall_ms: the window's length. gpu_ms: busy time (the union of its ops, as in gaps.py) of ONE GPU
  inside the window: the GPU with the most busy time inside all step windows (with tensor
  parallelism every rank runs the same steps; the busiest is the one the steps wait for).
- host_wait_ms: time of that GPU's host-bound idle gaps (gaps.py; ≥ gap_us) inside the window,
  clipped to it.
- per scope (decode steps; all steps): batch {p50, min, max} (generation requests a step; None
  where the pattern gives no counts), step_ms {p50, p99, mean}, gpu_ms {p50, mean},
  host_wait_ms {p50, mean} (percentiles: numpy linear, Hyndman & Fan type 7);
  host_wait_pct = Σ host_wait / Σ wall × 100 — the judged metric, "host-bound share of decode
  time"; gpu_busy_pct = Σ gpu / Σ wall × 100.
- top kernels (decode steps; all steps where there are no decode steps): device ops of the chosen
  GPU assigned to the step whose window holds their start, their time clipped to that window,
  summed per name: total_ms, share_pct of the scope's GPU time (ops on concurrent streams can add
  up to more than 100 %), count, per_step (count / steps in scope), ms_per_step.
- worst steps: the longest (wall) steps of the scope, with top_host: the innermost host range
  that covers most of the step's host-wait time (time-weighted over its host-bound gaps).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .gaps import HOST_BOUND, DeviceGaps, HostIndex, time_inside
from .timeline import OP_KINDS, Timeline

DEFAULT_STEP_PATTERN = (r"execute_(?:\d+_)?context_(?P<context>\d+)\((?:sq)?(?P<context_tokens>\d+)[^)]*\)"
                        r"_generation_(?P<generation>\d+)\((?:sq)?(?P<generation_tokens>\d+)[^)]*\)")
NO_STEPS_NOTE = "no step annotations (vLLM's execute_context_… ranges) in the trace"
STEP_KINDS = ("decode", "prefill", "mixed", "empty", "unknown")
DECODE, PREFILL, MIXED, EMPTY, UNKNOWN = range(len(STEP_KINDS))
COUNT_FIELDS = ("context", "context_tokens", "generation", "generation_tokens")
UNKNOWN_COUNT = -1


@dataclass
class Steps:
    """The engine steps found in a timeline, as columns sorted by start."""

    start: np.ndarray  # window start, µs
    end: np.ndarray  # window end, µs
    label: np.ndarray  # name id of the annotation
    counts: dict[str, np.ndarray]  # COUNT_FIELDS -> int64, UNKNOWN_COUNT where the pattern gives none
    kind: np.ndarray  # int8 into STEP_KINDS
    thread: int
    other_threads: int  # threads that also annotated steps, left out

    def __len__(self) -> int:
        return len(self.start)

    @property
    def wall(self) -> np.ndarray:
        return self.end - self.start


def compile_pattern(pattern: str | None) -> re.Pattern:
    """The step regex (raises re.error for a bad one: the command turns it into one line)."""
    return re.compile(pattern or DEFAULT_STEP_PATTERN)


def _counts_of(regex: re.Pattern, name: str) -> tuple[int, ...] | None:
    """The four counts of a step annotation, UNKNOWN_COUNT for those the pattern has no group for;
    None: not a step."""
    match = regex.search(name)
    if match is None:
        return None
    if all(field in regex.groupindex for field in COUNT_FIELDS):
        values = [match.group(field) for field in COUNT_FIELDS]
    elif regex.groups >= len(COUNT_FIELDS):
        values = list(match.groups()[:len(COUNT_FIELDS)])
    else:
        values = [None] * len(COUNT_FIELDS)
    return tuple(int(v) if v is not None and v.isdigit() else UNKNOWN_COUNT for v in values)


def step_kind(context: np.ndarray, generation: np.ndarray) -> np.ndarray:
    kind = np.full(len(context), UNKNOWN, dtype=np.int8)
    known = (context >= 0) & (generation >= 0)
    kind[known & (context == 0) & (generation > 0)] = DECODE
    kind[known & (context > 0) & (generation == 0)] = PREFILL
    kind[known & (context > 0) & (generation > 0)] = MIXED
    kind[known & (context == 0) & (generation == 0)] = EMPTY
    return kind


def find_steps(timeline: Timeline, regex: re.Pattern) -> Steps | None:
    ranges = timeline.ranges
    if not len(ranges):
        return None
    # one regex per distinct range name, not per range
    distinct = np.unique(ranges.name)
    parsed = {int(i): _counts_of(regex, timeline.names[int(i)]) for i in distinct}
    step_ids = np.asarray([i for i, counts in parsed.items() if counts is not None], dtype=np.int64)
    if not len(step_ids):
        return None
    is_step = np.isin(ranges.name, step_ids)
    threads, per_thread = np.unique(ranges.thread[is_step], return_counts=True)
    thread = int(threads[np.argmax(per_thread)])
    rows = np.flatnonzero(is_step & (ranges.thread == thread))
    _, first = np.unique(ranges.start_us[rows], return_index=True)  # sorted by start, repeats once
    rows = rows[first]
    start, range_end, label = ranges.start_us[rows], ranges.end_us[rows], ranges.name[rows]
    end = np.append(start[1:], max(float(range_end[-1]), _last_op_end(timeline, start[-1])))
    table = np.asarray([parsed[int(i)] for i in label], dtype=np.int64).reshape(len(rows), len(COUNT_FIELDS))
    counts = {field: table[:, k] for k, field in enumerate(COUNT_FIELDS)}
    return Steps(start=start, end=end, label=label, counts=counts,
                 kind=step_kind(counts["context"], counts["generation"]), thread=thread,
                 other_threads=len(threads) - 1)


def _last_op_end(timeline: Timeline, t0: float) -> float:
    """The latest end of the device ops (any GPU) that started at or after t0; -inf if none."""
    latest = -np.inf
    for ops in timeline.devices.values():
        i0 = int(np.searchsorted(ops.start_us, t0, side="left"))
        if i0 < len(ops):
            latest = max(latest, float(ops.end_us[i0:].max()))
    return latest


# ---- measuring the steps against one device ---------------------------------------------------

def busiest_device(steps: Steps, gaps: dict[int, DeviceGaps]) -> int | None:
    best, best_busy = None, -1.0
    for device, g in sorted(gaps.items()):
        busy = float(time_inside(g.busy_start, g.busy_end, steps.start, steps.end).sum())
        if busy > best_busy:
            best, best_busy = device, busy
    return best


def host_bound_intervals(g: DeviceGaps) -> tuple[np.ndarray, np.ndarray]:
    late = g.cause == HOST_BOUND
    return g.start[late], g.end[late]


def summarize_steps(timeline: Timeline, gaps: dict[int, DeviceGaps], host: HostIndex,
                    step_pattern: str | None = None, top: int = 10) -> dict:
    regex = compile_pattern(step_pattern)
    steps = find_steps(timeline, regex)
    if steps is None:
        note = NO_STEPS_NOTE if step_pattern is None else f"no host range matches --step-pattern {step_pattern!r}"
        return {"count": 0, "note": note, "pattern": regex.pattern}
    device = busiest_device(steps, gaps)
    if device is None:
        gpu = wait = np.zeros(len(steps))
    else:
        g = gaps[device]
        gpu = time_inside(g.busy_start, g.busy_end, steps.start, steps.end)
        wait = time_inside(*host_bound_intervals(g), steps.start, steps.end)
    decode = steps.kind == DECODE
    scope_name, scope = ("decode", decode) if decode.any() else ("all", np.ones(len(steps), dtype=bool))
    return {
        "count": int(len(steps)),
        "pattern": regex.pattern,
        "thread": steps.thread,
        "other_threads_with_steps": steps.other_threads,
        "device": device,
        "device_note": (None if device is None else
                        f"GPU time and host wait are GPU {device}'s" + (", the busiest GPU inside the steps"
                                                                        if len(gaps) > 1 else "")),
        "kinds": {kind: int(np.sum(steps.kind == k)) for k, kind in enumerate(STEP_KINDS) if np.any(steps.kind == k)},
        "decode": _scope_stats(steps.wall[decode], gpu[decode], wait[decode], _batch(steps)[decode]),
        "all": _scope_stats(steps.wall, gpu, wait, _batch(steps)),
        "scope": scope_name,
        "top_kernels": [] if device is None else _top_kernels(timeline, gaps[device], steps, scope, gpu, top),
        "worst": _worst_steps(timeline, steps, scope, gpu, wait, host,
                                    None if device is None else gaps[device], max(1, top // 2)),
        "cuda_graphs": cuda_graph_use(timeline, steps, scope, wait),
    }


_GRAPH_LAUNCH = re.compile(r"^(cudaGraphLaunch|cuGraphLaunch)")


def cuda_graph_use(timeline: Timeline, steps: Steps, scope: np.ndarray, wait: np.ndarray) -> dict | None:
    """Which steps of the scope replayed a CUDA graph (a cudaGraphLaunch / cuGraphLaunch host call
    started inside the step's window) and which launched every kernel from the host: counts, the
    batch (generation requests) each side ran, and each side's host-wait share. vLLM captures
    graphs up to `max_cudagraph_capture_size` (min(2 × max_num_seqs, 512) by default): larger
    decode batches run eagerly. None where the trace has no graph launch at all."""
    calls = timeline.host_calls
    if not len(calls):
        return None
    is_graph = np.array([bool(_GRAPH_LAUNCH.match(name)) for name in timeline.names], dtype=bool)
    launches = np.sort(calls.start_us[is_graph[calls.name]])
    if not len(launches):
        return None
    replayed = (np.searchsorted(launches, steps.end, side="left")
                - np.searchsorted(launches, steps.start, side="left")) > 0
    batch = steps.counts.get("generation")

    def side(mask: np.ndarray) -> dict:
        chosen = mask & scope
        wall = steps.wall[chosen]
        sizes = batch[chosen] if batch is not None else np.zeros(0, dtype=np.int64)
        sizes = sizes[sizes >= 0]
        return {"steps": int(chosen.sum()),
                "batch_min": int(sizes.min()) if len(sizes) else None,
                "batch_max": int(sizes.max()) if len(sizes) else None,
                "step_ms_p50": _ms(float(np.percentile(wall, 50))) if len(wall) else None,
                "host_wait_pct": _pct(float(wait[chosen].sum()), float(wall.sum())) if len(wall) else None}
    return {"replayed": side(replayed), "eager": side(~replayed)}


def _batch(steps: Steps) -> np.ndarray:
    """Each step's generation (decode) requests; UNKNOWN_COUNT where the pattern gives none."""
    batch = steps.counts.get("generation")
    return batch if batch is not None else np.full(len(steps), UNKNOWN_COUNT, dtype=np.int64)


def _batch_stats(batch: np.ndarray) -> dict | None:
    known = batch[batch >= 0]
    if not len(known):
        return None
    return {"p50": float(np.percentile(known, 50, method="linear")), "min": int(known.min()), "max": int(known.max())}


def _scope_stats(wall: np.ndarray, gpu: np.ndarray, wait: np.ndarray, batch: np.ndarray) -> dict:
    total_wall = float(wall.sum())
    if not len(wall):
        return {"count": 0}
    p50, p99 = np.percentile(wall, [50, 99], method="linear")  # Hyndman & Fan type 7
    return {
        "batch": _batch_stats(batch),
        "count": int(len(wall)),
        "wall_ms": _ms(total_wall),
        "step_ms": {"p50": _ms(p50), "p99": _ms(p99), "mean": _ms(wall.mean())},
        "gpu_ms": {"p50": _ms(np.percentile(gpu, 50, method="linear")), "mean": _ms(gpu.mean())},
        "host_wait_ms": {"p50": _ms(np.percentile(wait, 50, method="linear")), "mean": _ms(wait.mean())},
        "host_wait_pct": _pct(float(wait.sum()), total_wall),
        "gpu_busy_pct": _pct(float(gpu.sum()), total_wall),
    }


def _ops_by_step(g: DeviceGaps, steps: Steps) -> tuple[np.ndarray, np.ndarray]:
    """Each op's step (the window holding its start; -1 outside every window) and its time clipped
    to that window."""
    ops = g.ops
    step = np.searchsorted(steps.start, ops.start_us, side="right") - 1
    inside = step >= 0
    inside[inside] = ops.start_us[inside] < steps.end[step[inside]]
    step = np.where(inside, step, -1)
    clipped = np.minimum(ops.end_us, steps.end[np.maximum(step, 0)]) - ops.start_us
    return step, np.where(inside, np.clip(clipped, 0.0, None), 0.0)


def _top_kernels(timeline: Timeline, g: DeviceGaps, steps: Steps, scope: np.ndarray, gpu: np.ndarray,
                 top: int) -> list[dict]:
    step, clipped = _ops_by_step(g, steps)
    mine = step >= 0
    mine[mine] = scope[step[mine]]
    names = g.ops.name[mine].astype(np.int64)
    n_names = len(timeline.names)
    total = np.bincount(names, weights=clipped[mine], minlength=n_names)
    count = np.bincount(names, minlength=n_names)
    kind_of = np.zeros(n_names, dtype=np.int64)
    kind_of[names] = g.ops.kind[mine]
    scope_gpu, scope_steps = float(gpu[scope].sum()), int(scope.sum())
    rows = []
    for i in np.argsort(-total, kind="stable")[:top]:
        if count[i] == 0:
            break
        rows.append({"name": timeline.names[i], "kind": OP_KINDS[kind_of[i]], "total_ms": _ms(total[i]),
                     "share_pct": _pct(float(total[i]), scope_gpu), "count": int(count[i]),
                     "per_step": round(count[i] / scope_steps, 3), "ms_per_step": _ms(total[i] / scope_steps)})
    return rows


def _worst_steps(timeline: Timeline, steps: Steps, scope: np.ndarray, gpu: np.ndarray, wait: np.ndarray,
                 host: HostIndex, g: DeviceGaps | None, n: int) -> list[dict]:
    candidates = np.flatnonzero(scope)
    worst = candidates[np.argsort(-steps.wall[candidates], kind="stable")[:n]]
    offset = timeline.wall_offset_us
    rows = []
    for i in worst:
        w0, w1 = float(steps.start[i]), float(steps.end[i])
        top_host, top_host_us = _top_host(g, host, w0, w1) if g is not None else (None, 0.0)
        rows.append({
            "index": int(i), "start_us": round(w0, 3), "end_us": round(w1, 3),
            "wall_start_unix_s": None if offset is None else round((offset + w0) / 1e6, 6),
            "step_ms": _ms(w1 - w0), "gpu_ms": _ms(gpu[i]), "host_wait_ms": _ms(wait[i]),
            "kind": STEP_KINDS[steps.kind[i]], "label": timeline.names[steps.label[i]],
            **{field: _count(steps.counts[field][i]) for field in COUNT_FIELDS},
            "top_host": top_host, "top_host_ms": _ms(top_host_us),
            "top_kernels": [] if g is None else _step_kernels(timeline, g, w0, w1),
        })
    return rows


def _top_host(g: DeviceGaps, host: HostIndex, w0: float, w1: float) -> tuple[str | None, float]:
    """The innermost host range that covers most of the host-bound gap time inside [w0, w1)."""
    late_start, late_end = host_bound_intervals(g)
    i0 = np.searchsorted(late_end, w0, side="right")
    i1 = np.searchsorted(late_start, w1, side="left")
    if i1 <= i0:
        return None, 0.0
    a, b = np.maximum(late_start[i0:i1], w0), np.minimum(late_end[i0:i1], w1)
    by_name, _ = host.innermost.time_by_name(a, b, len(host.names))
    best = int(np.argmax(by_name)) if len(by_name) else -1
    if best < 0 or by_name[best] <= 0:
        return None, 0.0
    return host.names[best], float(by_name[best])


def _step_kernels(timeline: Timeline, g: DeviceGaps, w0: float, w1: float, n: int = 3) -> list[dict]:
    ops = g.ops
    i0, i1 = np.searchsorted(ops.start_us, [w0, w1], side="left")
    if i1 <= i0:
        return []
    names = ops.name[i0:i1].astype(np.int64)
    clipped = np.clip(np.minimum(ops.end_us[i0:i1], w1) - ops.start_us[i0:i1], 0.0, None)
    ids, inverse = np.unique(names, return_inverse=True)
    total = np.bincount(inverse, weights=clipped)
    return [{"name": timeline.names[ids[k]], "ms": _ms(total[k])} for k in np.argsort(-total, kind="stable")[:n]]


def _ms(us: float) -> float:
    return round(float(us) / 1e3, 4)


def _pct(part: float, whole: float) -> float | None:
    return round(part / whole * 100.0, 3) if whole > 0 else None


def _count(value: int) -> int | None:
    return None if value == UNKNOWN_COUNT else int(value)
