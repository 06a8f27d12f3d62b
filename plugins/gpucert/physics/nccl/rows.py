"""The sweep's rows: one per collective × size, the same keys whether measured or not.

Time is nccl-tests': each rank averages its timed iterations and the row takes the slowest rank
(an all-reduce MAX of the per-rank averages). `samples_us` keeps, per iteration, the slowest
rank's time, and `min_time_us` is the best of those, so a noisy size shows as a spread rather than
a better average.
"""

from __future__ import annotations

from statistics import fmean
from typing import Any

from . import formulas

ROW_KEYS = ("op", "bytes", "count", "dtype", "time_us", "min_time_us", "algbw_gbps", "busbw_gbps",
            "wrong", "status", "error", "iters", "samples_us", "rank_time_us", "note")
STATUSES = ("ok", "error", "timeout")


def unmeasured(op: str, count: int, nbytes: int, dtype: str, status: str, error: str) -> dict[str, Any]:
    """A planned row that has no measurement: the rank crashed, hung or the budget ran out."""
    assert status in STATUSES
    row = dict.fromkeys(ROW_KEYS)
    row.update(op=op, bytes=nbytes, count=count, dtype=dtype, status=status, error=error,
               samples_us=[], rank_time_us=[])
    return row


def measured(op: str, count: int, nbytes: int, dtype: str, nranks: int,
             rank_samples_s: list[list[float]], rank_wrong: list[int], note: str | None = None) -> dict[str, Any]:
    """A row from every rank's per-iteration seconds and wrong-element count."""
    if len(rank_samples_s) != nranks or len({len(s) for s in rank_samples_s}) != 1 or not rank_samples_s[0]:
        raise ValueError("every rank must bring the same, non-zero number of timed iterations")
    rank_mean = [fmean(samples) for samples in rank_samples_s]
    per_iteration = [max(step) for step in zip(*rank_samples_s)]
    seconds = max(rank_mean)
    wrong = int(sum(rank_wrong))
    row = dict.fromkeys(ROW_KEYS)
    row.update(
        op=op, bytes=nbytes, count=count, dtype=dtype,
        time_us=seconds * 1e6, min_time_us=min(per_iteration) * 1e6,
        algbw_gbps=formulas.algbw_gbps(nbytes, seconds),
        busbw_gbps=formulas.busbw_gbps(op, nbytes, seconds, nranks),
        wrong=wrong, status="ok", iters=len(per_iteration),
        samples_us=[s * 1e6 for s in per_iteration], rank_time_us=[t * 1e6 for t in rank_mean], note=note)
    if wrong:
        where = ", ".join(f"rank {r}: {w}" for r, w in enumerate(rank_wrong) if w)
        row.update(status="error", error=f"data check: {wrong} wrong element(s) ({where})")
    return row


def busbw_samples(row: dict[str, Any], nranks: int) -> list[float]:
    """Per-iteration busbw (GB/s) of a measured row."""
    factor = formulas.bus_factor(row["op"], nranks)
    return [row["bytes"] / (us * 1e-6) / 1e9 * factor for us in row["samples_us"] if us > 0]


def algbw_samples(row: dict[str, Any]) -> list[float]:
    return [row["bytes"] / (us * 1e-6) / 1e9 for us in row["samples_us"] if us > 0]
