"""What a study concludes from its points: the KV capacity's prediction of where preemption starts,
where latency knees, the Pareto front of throughput against latency. Pure functions: every rule
here is the one docs/METRICS.md defines."""

from __future__ import annotations

import math
from collections.abc import Sequence

# vLLM V1's block pool keeps one block as its "null block" (never handed to a request)
RESERVED_BLOCKS = 1


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


def knee(levels: Sequence[float], values: Sequence[float | None], factor: float) -> float | None:
    """The lowest level whose value is at least `factor` × the value at the lowest level measured
    (e.g. TPOT p99 1.5× its light-load figure): where latency stops being flat. None when no level
    reaches it or nothing was measured at the lowest level."""
    pairs = sorted((x, y) for x, y in zip(levels, values) if y is not None and math.isfinite(y))
    if len(pairs) < 2 or not pairs[0][1] > 0:
        return None
    base = pairs[0][1]
    return next((x for x, y in pairs[1:] if y >= factor * base), None)


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
