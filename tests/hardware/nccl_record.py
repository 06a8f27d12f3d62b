"""What the NCCL checks share — the node's sweep (test_nccl.py) and the sweeps across a cluster's
nodes (tests/fleet/test_fleet_nccl.py): the sizes and timing the options give, and how a row
becomes metrics."""

from __future__ import annotations

import pytest

from gpucert.physics import nccl
from gpucert.physics.nccl import rows


def sweep_plan(config: pytest.Config) -> tuple[str, list[int]]:
    """(backend, sizes) from the options (checked at configure)."""
    backend = config.getoption("--nccl-backend")
    largest = nccl.parse_size(config.getoption("--nccl-max-bytes") or ("8G" if backend == "nccl" else "1M"))
    return backend, [size for size in nccl.HARDWARE_SIZES if size <= largest]


# 20 timed iterations per size (fewer where they would take over 1 s); the whole sweep is bounded
# so `pytest -m hardware` keeps its 5-minute budget even on a node far below its physics
TIMING = {"warmup": 5, "iters": 20, "size_budget_s": 1.0, "timeout_s": 300.0, "stall_timeout_s": 60.0}


# wrong first: where data is wrong, the check's first failure line names it
ROW_METRICS = (("wrong", "wrong", "elements", "lower"), ("busbw_gbps", "busbw_gbps", "GB/s", "higher"),
               ("algbw_gbps", "algbw_gbps", "GB/s", "higher"), ("time_us", "time_us", "us", "lower"))


def record_failed(gpucert, row, metrics=ROW_METRICS):
    """A row that did not measure, or measured wrong data: every metric fails with the row's error
    (values kept where there are some), so no baseline ever learns them."""
    for metric, key, unit, direction in metrics:
        gpucert.record(metric, row.get(key), unit=unit, direction=direction, status="error", error=row["error"])


def record_row(gpucert, row, nproc: int, peak: float | None = None, why: str | None = None) -> None:
    """A row's wrong elements, bus and algorithm bandwidth and time, per-iteration samples kept;
    `peak` (GB/s) lets a min_fraction_of_peak rule judge the bus bandwidth."""
    if row["status"] != "ok":
        record_failed(gpucert, row)
        return
    gpucert.record("wrong", row["wrong"], unit="elements", direction="lower")
    gpucert.record("busbw_gbps", row["busbw_gbps"], unit="GB/s", direction="higher", peak=peak,
                   samples=rows.busbw_samples(row, nproc),
                   note="; ".join(n for n in (row["note"], why) if n) or None)
    gpucert.record("algbw_gbps", row["algbw_gbps"], unit="GB/s", direction="higher",
                   samples=rows.algbw_samples(row))
    gpucert.record("time_us", row["time_us"], unit="us", direction="lower", samples=row["samples_us"])


def headline_row(gpucert, sweep, size, metric, key, unit, direction):
    """The all_reduce row at `size`, or its failure recorded; None if there is nothing to add."""
    params = {"op": "all_reduce", "size": nccl.format_size(size)}
    row = sweep.row("all_reduce", size)
    if row is None or row["status"] != "ok":
        error = row["error"] if row else "no all_reduce row in the sweep"
        gpucert.record(metric, row.get(key) if row else None, unit=unit, direction=direction, params=params,
                       status="error", error=error)
        return None, params
    return row, params
