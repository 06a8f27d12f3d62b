"""What a study concludes from its points: the KV capacity's prediction of where preemption starts,
where latency knees, the Pareto front of throughput against latency. Pure functions: every rule
here is the one docs/METRICS.md defines."""

from __future__ import annotations

import math
from collections.abc import Sequence

from gpucert.physics import datasheet

# vLLM V1's block pool keeps one block as its "null block" (never handed to a request)
RESERVED_BLOCKS = 1


def fp8_weights_note(engine: dict, snapshot: dict | None) -> str | None:
    """What a variant with fp8 weights measures on a GPU the datasheet table knows has no FP8
    tensor cores (Ampere: the A100's entry has no fp8 peak): vLLM still serves it, through
    weight-only kernels (Marlin) that dequantize to 16 bits for the math — half the weight memory
    and traffic, not FP8 compute. None for other variants, FP8-capable or unknown GPUs."""
    if engine.get("quantization") != "fp8":
        return None
    gpus = (snapshot or {}).get("gpus") or []
    name = gpus[0].get("name") if gpus else None
    spec = datasheet.lookup(name)
    if spec is None or "fp8" in spec.dense_tflops:
        return None
    return (f"{name} has no FP8 tensor cores (compute capability < 8.9): vLLM runs these fp8 weights "
            "weight-only (Marlin), dequantized to 16 bits for the math — the weight memory and traffic "
            "halve, the compute is not FP8")


def blocks_per_request(input_len: int, output_len: int, block_size: int) -> int:
    """KV blocks one request holds at its longest: its prompt and every generated token but the
    last (the last sampled token is returned, never written to the cache)."""
    if min(input_len, block_size) < 1 or output_len < 1:
        raise ValueError("input_len, output_len and block_size must be >= 1")
    return math.ceil((input_len + output_len - 1) / block_size)


def predicted_full_concurrency(num_gpu_blocks: int, block_size: int, input_len: int, output_len: int) -> int:
    """The most requests of this shape the reported KV cache holds at full length at once: one
    more running together must preempt (no prefix sharing: every prompt its own blocks)."""
    usable = num_gpu_blocks - RESERVED_BLOCKS
    return max(usable // blocks_per_request(input_len, output_len, block_size), 0)


def onset_bracket(rows: Sequence[dict]) -> tuple[int | None, int | None]:
    """Of the KV study's onset probes ({concurrency, preemptions, failed, crashed}): (highest level
    that ran whole without preemption, lowest level above it that preempted or failed) — the
    onset lies in (low, high]."""
    clean = [r["concurrency"] for r in rows if r.get("preemptions") == 0 and not r.get("failed")]
    low = max(clean) if clean else None
    over = [r["concurrency"] for r in rows if (r.get("preemptions") or r.get("failed") or r.get("crashed"))
            and (low is None or r["concurrency"] > low)]
    return low, (min(over) if over else None)


def knee(levels: Sequence[float], values: Sequence[float | None], factor: float) -> float | None:
    """The lowest level whose value is at least `factor` × the value at the lowest level measured
    (e.g. TPOT p99 1.5× its light-load figure): where latency stops being flat. None when no level
    reaches it or nothing was measured at the lowest level."""
    pairs = sorted((x, y) for x, y in zip(levels, values) if y is not None and math.isfinite(y))
    if len(pairs) < 2 or not pairs[0][1] > 0:
        return None
    base = pairs[0][1]
    return next((x for x, y in pairs[1:] if y >= factor * base), None)


# a point is "under the SLOs" at a level when this share of its requests met every SLO
SLO_SHARE_PCT = 99.0


def best_under_slo(rows: Sequence[dict]) -> dict | None:
    """Of the rows ({output_tok_s, slo_attainment_pct, …}) whose SLO attainment reaches
    SLO_SHARE_PCT, the one with the most output tok/s; None when none does."""
    under = [r for r in rows if r.get("output_tok_s") is not None
             and (r.get("slo_attainment_pct") or 0) >= SLO_SHARE_PCT]
    return max(under, key=lambda r: r["output_tok_s"], default=None)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats: (throughput, higher better; latency, lower
    better). A point is dominated by one at least as good in both and better in one."""
    front = []
    for i, (tput, lat) in enumerate(points):
        if not (math.isfinite(tput) and math.isfinite(lat)):
            continue
        dominated = any(t >= tput and y <= lat and (t > tput or y < lat)
                        for j, (t, y) in enumerate(points) if j != i and math.isfinite(t) and math.isfinite(y))
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def serve_line(argv: list[str], model_note: str | None = None) -> str:
    """A ready-to-paste `vllm serve …` from the engine's argv (`python -m vllm.entrypoints.cli.main
    serve MODEL --flags`): the same flags, without the host and port the lifecycle chose."""
    import shlex

    args = list(argv)
    if "serve" in args:
        args = args[args.index("serve") + 1:]
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg in ("--host", "--port"):
            skip = True
            continue
        out.append(arg)
    line = shlex.join(["vllm", "serve", *out])
    return f"{line}  # {model_note}" if model_note else line


def _figure(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None or not before:
        return "n/a"
    return f"{_figure(before)} → {_figure(after)} ({(after - before) / abs(before) * 100:+.0f} %)"


def explain(changed: dict[str, tuple], default: dict[str, float | None], tuned: dict[str, float | None],
            level: int) -> list[str]:
    """Why the tuned configuration is faster (or not), in plain words, from what was measured at
    `level`: `changed` maps each setting that differs to (default, tuned) (None: vLLM's own
    default); `default`/`tuned` hold each side's output_tok_s, tpot_ms_p99, ttft_ms_p99,
    gpu_util_mean_pct, preemptions and cudagraph_max (the largest CUDA-graph batch its engine log
    reports), None where not measured. Each line states the figures it
    rests on; the rules are docs/METRICS.md's."""
    lines = [f"at concurrency {level:,}: output tok/s {_change(default.get('output_tok_s'), tuned.get('output_tok_s'))}, "
             f"TPOT p99 ms {_change(default.get('tpot_ms_p99'), tuned.get('tpot_ms_p99'))}, "
             f"TTFT p99 ms {_change(default.get('ttft_ms_p99'), tuned.get('ttft_ms_p99'))}"]
    util_before, util_after = default.get("gpu_util_mean_pct"), tuned.get("gpu_util_mean_pct")
    gpu_waited = util_before is not None and util_after is not None and util_after - util_before >= 10
    if "api_server_count" in changed:
        before, after = changed["api_server_count"]
        lines.append(f"api_server_count {before or 1} → {after}: one API server process parses, tokenizes and "
                     "streams every request" + (f"; GPU utilization {util_before:.0f} % → {util_after:.0f} %: the "
                                                "front end, not the GPU, limited the default" if gpu_waited else ""))
    logged = default.get("cudagraph_max")  # what the default engine's log says it captured
    if "max_cudagraph_capture_size" in changed:
        before, after = changed["max_cudagraph_capture_size"]
        shown = before if before is not None else (
            f"{logged:.0f}, the engine log's" if logged else "vLLM's default (min(2 × max_num_seqs, 512))")
        if after and after >= level:
            lines.append(f"CUDA graphs captured up to batch {after} (default: {shown}): decode batches up to "
                         f"{level:,} replay graphs instead of launching every kernel")
        else:
            lines.append(f"max_cudagraph_capture_size {shown} → {after}")
    elif logged and logged < level:
        lines.append(f"CUDA graphs captured up to batch {logged:.0f} (the engine log): decode batches past it at "
                     f"concurrency {level:,} ran without them in both configurations")
    if "max_num_seqs" in changed:
        before, after = changed["max_num_seqs"]
        lines.append(f"max_num_seqs {before or 'default'} → {after}: "
                     + ("more requests decode in one step" if (before or 0) < after else "fewer requests decode at once"))
    pre_before, pre_after = default.get("preemptions"), tuned.get("preemptions")
    if pre_before and (pre_after or 0) < pre_before:
        lines.append(f"preemptions {pre_before:.0f} → {pre_after or 0:.0f}: less KV-cache pressure")
    for name, (before, after) in changed.items():
        if name not in ("api_server_count", "max_cudagraph_capture_size", "max_num_seqs"):
            lines.append(f"{name} {before if before is not None else 'default'} → {after}")
    if gpu_waited and "api_server_count" not in changed:
        lines.append(f"GPU utilization {util_before:.0f} % → {util_after:.0f} %: the default left the GPU waiting")
    return lines
