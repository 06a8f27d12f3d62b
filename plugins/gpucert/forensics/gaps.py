"""Per GPU: how much of the time it was busy, and every idle gap with its cause.

Definitions (to be copied into docs/METRICS.md, Forensics):

- busy intervals: the union of every device op (kernel, memcpy, memset) of one GPU over all its
  streams; ops that overlap or touch merge into one interval. Two streams running at once count
  once: the question is "was the GPU doing anything", not "how much".
- span: the first op's start to the last op's end on that GPU (not the trace's whole window: a
  profile that starts before the engine is loaded would otherwise read as idle).
- busy_pct = Σ busy intervals / span × 100.
- idle gap: a hole [g0, g1) between two consecutive busy intervals that lasts at least `gap_us`
  (default 20 µs; nsys's own gpu_gaps report uses 500 ms and misses every decode-step gap). A gap
  of exactly `gap_us` counts (1e-6 µs of float rounding is tolerated).
- cause of a gap, the first rule that applies:
  1. communication: the op that ends the busy interval before the gap (the one with the latest
     end) or the op that starts the one after it is an NCCL kernel (its name contains "nccl", any
     case), or a host call or host range whose name starts with "nccl" (any case) overlaps the gap.
  2. host-bound: nothing was queued when the GPU went idle: the host call that launched the op
     after the gap (the HostCalls row with the same correlation id; with several rows, the one that
     ended first) ended after g0. The CPU was late.
  3. sync/memcpy: work was queued but the GPU waited: the op before or after the gap is a memcpy or
     memset, or a synchronizing host call overlaps the gap (cudaStreamSynchronize,
     cudaDeviceSynchronize, cudaEventSynchronize, cudaStreamWaitEvent, a blocking cudaMemcpy* (no
     "Async" in the name), cuStreamSynchronize, cuCtxSynchronize, cuEventSynchronize,
     cuStreamWaitEvent, a blocking cuMemcpy*; nsys's "_v3020" / "_ptsz" suffixes allowed).
  4. other, with a reason: "launch not in the trace" (no host call has the op's correlation id:
     an nsys capture without CUDA runtime tracing, or a launch before the profile window) or
     "queued, cause not in the trace".
  An interval [s, e) overlaps the gap when s < g1 and e > g0.
- what the host was doing in a gap: `host_range`, the innermost host range at g0 (of the ranges
  covering g0, the one that started last, on any thread; at equal starts the shorter), and
  `sync_call`, the first synchronizing call that ended inside the gap (its return is what the GPU's
  going idle released; what the host did after it is what the gap waited on).
- percentiles (p50_us, p99_us): numpy's default linear interpolation between closest ranks
  (method="linear", Hyndman & Fan type 7) over every counted gap.
- histogram: bin edges gap_us × 1, 2, 5, 10, 20, 50, … (the 1-2-5 series: log-spaced, and the edges
  read as round numbers), bins half-open [e_k, e_k+1), counts per cause.
- host_bound_by_range: host-bound gap time split by the innermost host range at each instant of
  the gaps (time-weighted, not only at g0).

Everything is numpy over whole columns: a trace has millions of ops, and each gap is classified
with O(log n) searchsorted look-ups, never a scan of the host calls per gap. Python loops run over
distinct names (one regex per name, not per op) and over the few worst gaps that are listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .timeline import KERNEL, NO_CORRELATION, OP_KINDS, DeviceOps, HostCalls, Ranges, Timeline

DEFAULT_GAP_US = 20.0
# Kineto writes µs with 3 decimals; a 20 µs hole computed as 19.999999999996 is still 20 µs
EPS_US = 1e-6

CAUSES = ("communication", "host-bound", "sync/memcpy", "other")
COMMUNICATION, HOST_BOUND, SYNC_MEMCPY, OTHER = range(len(CAUSES))

# why a gap got its cause; REASON_CAUSE[i] is the cause reason i belongs to
REASONS = (
    "NCCL kernel before the gap",
    "NCCL kernel after the gap",
    "host in an NCCL call",
    "launch ended after the GPU went idle",
    "memcpy/memset before the gap",
    "memcpy/memset after the gap",
    "synchronizing host call during the gap",
    "launch not in the trace",
    "queued, cause not in the trace",
)
(R_NCCL_BEFORE, R_NCCL_AFTER, R_NCCL_HOST, R_LATE_LAUNCH, R_COPY_BEFORE, R_COPY_AFTER, R_SYNC_CALL,
 R_NO_LAUNCH, R_QUEUED) = range(len(REASONS))
REASON_CAUSE = (COMMUNICATION,) * 3 + (HOST_BOUND,) + (SYNC_MEMCPY,) * 3 + (OTHER,) * 2

_SYNC_CALL = re.compile(r"(cudaStreamSynchronize|cudaDeviceSynchronize|cudaEventSynchronize|cudaStreamWaitEvent"
                        r"|cuStreamSynchronize|cuCtxSynchronize|cuEventSynchronize|cuStreamWaitEvent)"
                        r"(_v\d+|_ptsz|_ptds)*")
_COPY_CALL = re.compile(r"(cudaMemcpy|cuMemcpy)\w*")

# the innermost-range index expands each range over the elementary segments it covers; nested
# annotations cover a few segments each, but a pathological trace (thousands of overlapping
# whole-run ranges) could ask for billions: past this many the widest ranges are left out
MAX_RANGE_CELLS = 4_000_000


def is_sync_call(name: str) -> bool:
    """A host call after which the GPU can wait with work queued (or the host waits for the GPU)."""
    if _SYNC_CALL.fullmatch(name):
        return True
    return bool(_COPY_CALL.fullmatch(name)) and "Async" not in name


def name_flags(names: list[str], predicate) -> np.ndarray:
    """predicate over every distinct name, as a boolean array indexed by name id (one call per
    name, not per event)."""
    return np.fromiter((bool(predicate(name)) for name in names), dtype=bool, count=len(names))


# ---- interval arithmetic over sorted columns ---------------------------------------------------

def busy_union(start: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge ops sorted by start into disjoint busy intervals.

    Returns (interval start, interval end, index of the op that starts each interval, index of the
    op that ends it: the one whose end is the interval's end, the latest such op at ties)."""
    n = len(start)
    if n == 0:
        none = np.empty(0, dtype=np.int64)
        return np.empty(0), np.empty(0), none, none
    reach = np.maximum.accumulate(end)  # the latest end so far: where the busy interval reaches
    opens = np.ones(n, dtype=bool)
    opens[1:] = start[1:] > reach[:-1]  # a hole before op i: it starts a new interval
    first = np.flatnonzero(opens)
    last = np.append(first[1:] - 1, n - 1)
    # running argmax of end: the op that set the current reach
    setter = np.where(end >= reach, np.arange(n), 0)
    reach_owner = np.maximum.accumulate(setter)
    return start[first], reach[last], first, reach_owner[last]


def covered_before(iv_start: np.ndarray, iv_end: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Σ over disjoint sorted intervals of their length before time t (vectorized over t): the
    time inside a window [a, b) is covered_before(b) - covered_before(a)."""
    t = np.asarray(t, dtype=np.float64)
    if not len(iv_start):
        return np.zeros(t.shape)
    cumulative = np.concatenate(([0.0], np.cumsum(iv_end - iv_start)))
    i = np.searchsorted(iv_start, t, side="right")  # intervals starting at or before t
    last = np.maximum(i - 1, 0)
    partial = np.clip(np.minimum(t, iv_end[last]) - iv_start[last], 0.0, None)
    return np.where(i > 0, cumulative[last] + partial, 0.0)


def time_inside(iv_start: np.ndarray, iv_end: np.ndarray, w0: np.ndarray, w1: np.ndarray) -> np.ndarray:
    """Time of disjoint sorted intervals inside each window [w0, w1)."""
    return covered_before(iv_start, iv_end, w1) - covered_before(iv_start, iv_end, w0)


class OverlapIndex:
    """Host intervals that may overlap each other (several threads, nested calls), sorted by start
    with the running maximum of their ends: "does any overlap [g0, g1)" in O(log n) per query, and
    "the first to end inside it" from a copy sorted by end."""

    def __init__(self, start: np.ndarray, end: np.ndarray, name: np.ndarray):
        order = np.argsort(start, kind="stable")
        self.start, self.end, self.name = start[order], end[order], name[order]
        self.reach = np.maximum.accumulate(self.end) if len(order) else self.end
        by_end = np.argsort(end, kind="stable")
        self.end_sorted, self.name_by_end = end[by_end], name[by_end]

    def __len__(self) -> int:
        return len(self.start)

    def overlaps(self, g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
        if not len(self):
            return np.zeros(len(g0), dtype=bool)
        i = np.searchsorted(self.start, g1, side="left")  # intervals with start < g1
        return (i > 0) & (self.reach[np.maximum(i - 1, 0)] > g0)

    def first_ending_inside(self, g0: np.ndarray, g1: np.ndarray) -> np.ndarray:
        """Name id of the first interval that ends in [g0, g1), -1 where none does."""
        if not len(self):
            return np.full(len(g0), -1, dtype=np.int64)
        i = np.searchsorted(self.end_sorted, g0, side="left")
        inside = i < len(self.end_sorted)
        inside[inside] = self.end_sorted[i[inside]] < g1[inside]
        return np.where(inside, self.name_by_end[np.minimum(i, len(self) - 1)], -1)

    def one_overlapping(self, g0: float, g1: float, look_back: int = 10_000) -> int:
        """Name id of an interval overlapping [g0, g1), -1 if none (the latest-starting; for the
        few listed gaps only)."""
        i = int(np.searchsorted(self.start, g1, side="left"))
        for j in range(i - 1, max(i - 1 - look_back, -1), -1):
            if self.end[j] > g0:
                return int(self.name[j])
            if self.reach[j] <= g0:
                break
        return -1


class InnermostRange:
    """Which host range the host was innermost in, at any instant.

    The range boundaries cut time into elementary segments; each segment gets the covering range
    that started last (ranges ordered by start, then longest first, so a nested range outranks its
    parent). Painting is vectorized: every (segment, range) cell is generated with np.repeat and
    the winner per segment taken with np.maximum.at."""

    def __init__(self, ranges: Ranges, max_cells: int = MAX_RANGE_CELLS):
        self.left_out = 0
        if not len(ranges):
            self.bounds = np.empty(0)
            self.segment_name = np.empty(0, dtype=np.int64)
            return
        order = np.lexsort((-ranges.end_us, ranges.start_us))
        start, end = ranges.start_us[order], np.maximum(ranges.end_us[order], ranges.start_us[order])
        self.bounds = np.unique(np.concatenate((start, end)))
        first = np.searchsorted(self.bounds, start)
        width = np.searchsorted(self.bounds, end) - first
        if width.sum() > max_cells:
            narrowest_first = np.argsort(width, kind="stable")
            dropped = narrowest_first[np.cumsum(width[narrowest_first]) > max_cells]
            width[dropped] = 0
            self.left_out = len(dropped)
        segment, rank = _expand(first, width)
        best = np.full(max(len(self.bounds) - 1, 0), -1, dtype=np.int64)
        np.maximum.at(best, segment, rank)
        names = ranges.name[order].astype(np.int64)
        self.segment_name = np.where(best >= 0, names[np.maximum(best, 0)], -1)

    def at(self, t: np.ndarray) -> np.ndarray:
        """Name id of the innermost range covering each time t, -1 where none does."""
        t = np.asarray(t, dtype=np.float64)
        if not len(self.segment_name):
            return np.full(t.shape, -1, dtype=np.int64)
        j = np.searchsorted(self.bounds, t, side="right") - 1
        valid = (j >= 0) & (j < len(self.segment_name))
        return np.where(valid, self.segment_name[np.clip(j, 0, len(self.segment_name) - 1)], -1)

    def time_by_name(self, w0: np.ndarray, w1: np.ndarray, n_names: int) -> tuple[np.ndarray, float]:
        """Time of the disjoint intervals [w0, w1) per innermost range name (µs, indexed by name
        id), and the time not inside any range."""
        total = float(np.sum(w1 - w0))
        if not len(self.segment_name) or not len(w0):
            return np.zeros(n_names), total
        n_seg = len(self.segment_name)
        first = np.clip(np.searchsorted(self.bounds, w0, side="right") - 1, 0, n_seg)
        stop = np.minimum(np.searchsorted(self.bounds, w1, side="left"), n_seg)
        segment, which = _expand(first, np.maximum(stop - first, 0))
        piece = (np.minimum(self.bounds[segment + 1], w1[which]) - np.maximum(self.bounds[segment], w0[which]))
        piece = np.clip(piece, 0.0, None)
        name = self.segment_name[segment]
        inside = name >= 0
        by_name = np.bincount(name[inside], weights=piece[inside], minlength=n_names)
        return by_name, total - float(by_name.sum())


def _expand(first: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows with (first, width): every (first + k, row) for k < width, as two flat arrays."""
    width = width.astype(np.int64)
    row = np.repeat(np.arange(len(first)), width)
    offset = np.arange(int(width.sum())) - np.repeat(np.cumsum(width) - width, width)
    return np.repeat(first.astype(np.int64), width) + offset, row


# ---- what the host did: the look-ups every device shares -------------------------------------

class HostIndex:
    """The host side of one timeline, prepared once: launches by correlation id, synchronizing
    calls, NCCL calls and ranges, and the innermost host range at any instant."""

    def __init__(self, timeline: Timeline):
        names = timeline.names
        calls: HostCalls = timeline.host_calls
        self.names = names
        self.nccl_op_name = name_flags(names, lambda n: "nccl" in n.lower())
        nccl_host_name = name_flags(names, lambda n: n.lower().startswith("nccl"))
        self.sync_name = name_flags(names, is_sync_call)
        # launches sorted by (correlation, end): searchsorted finds a correlation's first-ending call
        known = calls.correlation != NO_CORRELATION
        order = np.lexsort((calls.end_us[known], calls.correlation[known]))
        self.launch_correlation = calls.correlation[known][order]
        self.launch_end = calls.end_us[known][order]
        self.launch_name = calls.name[known][order]
        sync = self.sync_name[calls.name] if len(calls) else np.zeros(0, dtype=bool)
        self.sync_calls = OverlapIndex(calls.start_us[sync], calls.end_us[sync], calls.name[sync])
        ranges = timeline.ranges
        nccl_call = nccl_host_name[calls.name] if len(calls) else np.zeros(0, dtype=bool)
        nccl_range = nccl_host_name[ranges.name] if len(ranges) else np.zeros(0, dtype=bool)
        self.nccl_host = OverlapIndex(np.concatenate((calls.start_us[nccl_call], ranges.start_us[nccl_range])),
                                      np.concatenate((calls.end_us[nccl_call], ranges.end_us[nccl_range])),
                                      np.concatenate((calls.name[nccl_call], ranges.name[nccl_range])))
        self.innermost = InnermostRange(ranges)

    def launch_of(self, correlation: np.ndarray) -> np.ndarray:
        """Row (into the launch_* columns) of the host call that launched each op, -1 if none."""
        if not len(self.launch_correlation):
            return np.full(len(correlation), -1, dtype=np.int64)
        i = np.searchsorted(self.launch_correlation, correlation, side="left")
        clipped = np.minimum(i, len(self.launch_correlation) - 1)
        found = (i < len(self.launch_correlation)) & (self.launch_correlation[clipped] == correlation)
        found &= correlation != NO_CORRELATION
        return np.where(found, clipped, -1)


# ---- the gaps of one device ---------------------------------------------------------------------

@dataclass
class DeviceGaps:
    """One GPU's busy intervals and its idle gaps (≥ gap_us) with their causes, as columns."""

    device: int
    ops: DeviceOps
    busy_start: np.ndarray
    busy_end: np.ndarray
    start: np.ndarray  # g0 of each gap
    end: np.ndarray  # g1
    before: np.ndarray  # index (into ops) of the op that ends the busy interval before the gap
    after: np.ndarray  # index of the op that starts the busy interval after it
    cause: np.ndarray  # int8 into CAUSES
    reason: np.ndarray  # int8 into REASONS
    launch: np.ndarray  # row into HostIndex.launch_* of the after-op's launch, -1 if none
    host_range: np.ndarray  # name id of the innermost host range at g0, -1 if none
    sync_call: np.ndarray  # name id of the first synchronizing call that ended inside the gap, -1

    @property
    def duration(self) -> np.ndarray:
        return self.end - self.start

    @property
    def span_us(self) -> float:
        return float(self.busy_end[-1] - self.busy_start[0]) if len(self.busy_start) else 0.0

    @property
    def busy_us(self) -> float:
        return float(np.sum(self.busy_end - self.busy_start))

    def of_cause(self, cause: int) -> np.ndarray:
        return self.cause == cause


def find_gaps(device: int, ops: DeviceOps, host: HostIndex, gap_us: float = DEFAULT_GAP_US) -> DeviceGaps:
    end = np.maximum(ops.end_us, ops.start_us)  # an op that "ends before it starts" is a point
    busy_start, busy_end, first_op, last_op = busy_union(ops.start_us, end)
    hole = busy_start[1:] - busy_end[:-1]
    kept = np.flatnonzero(hole >= gap_us - EPS_US)
    g0, g1 = busy_end[kept], busy_start[kept + 1]
    before, after = last_op[kept], first_op[kept + 1]
    launch = host.launch_of(ops.correlation[after])
    cause, reason = classify(ops, host, g0, g1, before, after, launch)
    return DeviceGaps(device=device, ops=ops, busy_start=busy_start, busy_end=busy_end, start=g0, end=g1,
                      before=before, after=after, cause=cause, reason=reason, launch=launch,
                      host_range=host.innermost.at(g0), sync_call=host.sync_calls.first_ending_inside(g0, g1))


def classify(ops: DeviceOps, host: HostIndex, g0: np.ndarray, g1: np.ndarray, before: np.ndarray,
             after: np.ndarray, launch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cause and reason of every gap, vectorized; the rules are applied from the last to the first
    so the first rule that applies is the one left standing."""
    has_launch = launch >= 0
    launch_end = np.full(len(launch), np.nan)
    launch_end[has_launch] = host.launch_end[launch[has_launch]]
    reason = np.where(has_launch, R_QUEUED, R_NO_LAUNCH).astype(np.int8)

    copy_before = ops.kind[before] != KERNEL
    copy_after = ops.kind[after] != KERNEL
    sync_during = host.sync_calls.overlaps(g0, g1)
    waited = copy_before | copy_after | sync_during
    reason[waited] = np.where(copy_before, R_COPY_BEFORE, np.where(copy_after, R_COPY_AFTER, R_SYNC_CALL))[waited]

    late = has_launch & (launch_end > g0)
    reason[late] = R_LATE_LAUNCH

    nccl_before = host.nccl_op_name[ops.name[before]]
    nccl_after = host.nccl_op_name[ops.name[after]]
    nccl_host = host.nccl_host.overlaps(g0, g1)
    talking = nccl_before | nccl_after | nccl_host
    reason[talking] = np.where(nccl_before, R_NCCL_BEFORE, np.where(nccl_after, R_NCCL_AFTER, R_NCCL_HOST))[talking]

    cause = np.asarray(REASON_CAUSE, dtype=np.int8)[reason]
    return cause, reason


# ---- one device's summary -------------------------------------------------------------------------

def percentiles_us(values: np.ndarray) -> tuple[float | None, float | None]:
    """p50 and p99 with numpy's linear interpolation (method="linear", Hyndman & Fan type 7)."""
    if not len(values):
        return None, None
    p50, p99 = np.percentile(values, [50, 99], method="linear")
    return float(p50), float(p99)


def histogram_edges(gap_us: float, longest_us: float) -> np.ndarray:
    """gap_us × 1, 2, 5, 10, 20, 50, …, up to the first edge above the longest gap."""
    edges = [gap_us]
    steps = (2.0, 2.5, 2.0)  # 1 → 2 → 5 → 10
    k = 0
    while edges[-1] <= longest_us or len(edges) < 2:
        edges.append(edges[-1] * steps[k % 3])
        k += 1
    return np.round(np.asarray(edges), 6)


def summarize_device(gaps: DeviceGaps, host: HostIndex, gap_us: float, wall_offset_us: float | None,
                     top: int = 10) -> dict:
    ops = gaps.ops
    dur = gaps.duration
    span = gaps.span_us
    kind_counts = np.bincount(ops.kind.astype(np.int64), minlength=len(OP_KINDS)) if len(ops) else np.zeros(3, int)
    p50, p99 = percentiles_us(dur)
    idle_total = float(dur.sum())
    return {
        "busy_pct": _round(gaps.busy_us / span * 100.0) if span > 0 else None,
        "busy_ms": _round(gaps.busy_us / 1e3, 4),
        "span_ms": _round(span / 1e3, 4),
        "first_op_us": _round(float(gaps.busy_start[0])) if len(gaps.busy_start) else None,
        "ops": {**{kind: int(kind_counts[i]) for i, kind in enumerate(OP_KINDS)}, "total": int(len(ops))},
        "streams": int(len(np.unique(ops.stream))),
        "idle_gaps": {"count": int(len(dur)), "total_ms": _round(idle_total / 1e3, 4), "p50_us": _round(p50),
                      "p99_us": _round(p99), "max_us": _round(float(dur.max())) if len(dur) else None,
                      "span_pct": _round(idle_total / span * 100.0) if span > 0 else None},
        "by_cause": _by_cause(gaps, idle_total),
        "histogram": _histogram(gaps, gap_us),
        "host_bound_by_range": _host_bound_by_range(gaps, host),
        "worst_gaps": _worst_gaps(gaps, host, wall_offset_us, top),
    }


def _by_cause(gaps: DeviceGaps, idle_total: float) -> dict:
    dur = gaps.duration
    count_by_reason = np.bincount(gaps.reason.astype(np.int64), minlength=len(REASONS))
    time_by_reason = np.bincount(gaps.reason.astype(np.int64), weights=dur, minlength=len(REASONS))
    out = {}
    for c, cause in enumerate(CAUSES):
        mine = [r for r in range(len(REASONS)) if REASON_CAUSE[r] == c]
        total = float(time_by_reason[mine].sum())
        out[cause] = {"count": int(count_by_reason[mine].sum()), "total_ms": _round(total / 1e3, 4),
                      "share_pct": _round(total / idle_total * 100.0) if idle_total > 0 else None,
                      "reasons": {REASONS[r]: {"count": int(count_by_reason[r]),
                                               "total_ms": _round(float(time_by_reason[r]) / 1e3, 4)}
                                  for r in mine if count_by_reason[r]}}
    return out


def _histogram(gaps: DeviceGaps, gap_us: float) -> dict:
    dur = gaps.duration
    edges = histogram_edges(gap_us, float(dur.max()) if len(dur) else gap_us)
    bins = len(edges) - 1
    which = np.clip(np.searchsorted(edges, dur + EPS_US, side="right") - 1, 0, bins - 1)
    counts = {cause: np.bincount(which[gaps.cause == c], minlength=bins).tolist() for c, cause in enumerate(CAUSES)}
    return {"edges_us": [float(e) for e in edges], "counts": counts}


def _host_bound_by_range(gaps: DeviceGaps, host: HostIndex, top: int = 5) -> list[dict]:
    """Where the host was while the GPU waited on it: host-bound time per innermost host range."""
    late = gaps.of_cause(HOST_BOUND)
    if not late.any():
        return []
    by_name, outside = host.innermost.time_by_name(gaps.start[late], gaps.end[late], len(host.names))
    total = float(by_name.sum()) + outside
    rows = [(float(by_name[i]), host.names[i]) for i in np.argsort(-by_name, kind="stable")[:top] if by_name[i] > 0]
    if outside > 0:
        rows.append((outside, None))
        rows.sort(key=lambda row: -row[0])
        rows = rows[:top]
    return [{"range": name, "total_ms": _round(us / 1e3, 4), "share_pct": _round(us / total * 100.0)}
            for us, name in rows]


def _worst_gaps(gaps: DeviceGaps, host: HostIndex, wall_offset_us: float | None, top: int) -> list[dict]:
    dur = gaps.duration
    worst = np.argsort(-dur, kind="stable")[:top]
    names = host.names
    rows = []
    for i in worst:
        g0, g1 = float(gaps.start[i]), float(gaps.end[i])
        host_range = names[gaps.host_range[i]] if gaps.host_range[i] >= 0 else None
        sync_call = names[gaps.sync_call[i]] if gaps.sync_call[i] >= 0 else None
        rows.append({
            "start_us": _round(g0), "dur_us": _round(g1 - g0),
            "wall_unix_s": _round((wall_offset_us + g0) / 1e6, 6) if wall_offset_us is not None else None,
            "cause": CAUSES[gaps.cause[i]], "reason": _reason_text(gaps, host, int(i)),
            "before": names[gaps.ops.name[gaps.before[i]]], "after": names[gaps.ops.name[gaps.after[i]]],
            "host": _host_text(host_range, sync_call), "host_range": host_range, "sync_call": sync_call,
        })
    return rows


def _reason_text(gaps: DeviceGaps, host: HostIndex, i: int) -> str:
    """The reason in words, with the numbers the listed gap has (per listed gap only)."""
    reason = int(gaps.reason[i])
    text = REASONS[reason]
    if reason == R_LATE_LAUNCH:
        row = int(gaps.launch[i])
        late_by = float(host.launch_end[row] - gaps.start[i])
        text = f"{host.names[host.launch_name[row]]} ended {late_by:.1f} µs after the GPU went idle"
    elif reason == R_SYNC_CALL:
        name = host.sync_calls.one_overlapping(float(gaps.start[i]), float(gaps.end[i]))
        if name >= 0:
            text = f"{host.names[name]} during the gap"
    elif reason == R_NCCL_HOST:
        name = host.nccl_host.one_overlapping(float(gaps.start[i]), float(gaps.end[i]))
        if name >= 0:
            text = f"host in {host.names[name]}"
    return text


def _host_text(host_range: str | None, sync_call: str | None) -> str | None:
    parts = [f"in '{host_range}'" if host_range else None, f"after {sync_call}" if sync_call else None]
    return ", ".join(p for p in parts if p) or None


def _round(value: float | None, digits: int = 3) -> float | None:
    if value is None or not np.isfinite(value):
        return None
    return round(float(value), digits)
