"""NCCL collectives across the node's GPUs, measured as nccl-tests measures them.

One sweep runs once for this module (one process per GPU, every collective × size, out-of-place
where torch allows it, data checked at every size); each test looks up its row:
- nccl[op, size]: busbw_gbps, algbw_gbps, time_us and wrong (elements); a wrong element fails;
- nccl_small_message_latency: all_reduce time at the smallest size (latency_us);
- nccl_large_message_busbw: all_reduce busbw at the largest size, with the datasheet NVLink peak,
  so a `min_fraction_of_peak` rule in thresholds.yaml can judge it.

Options (nothing to set on a GPU node): --nccl-backend gloo runs the same sweep on CPU processes
(the self-tests; certifies nothing), --nccl-nproc and --nccl-max-bytes bound it.
"""

import pytest

from gpucert import gpus
from gpucert.certification import not_applicable
from gpucert.physics import nccl
from gpucert.physics.nccl import peak, rows

pytestmark = pytest.mark.hardware



def sweep_plan(config: pytest.Config) -> tuple[str, list[int]]:
    """(backend, sizes) from the options (checked at configure)."""
    backend = config.getoption("--nccl-backend")
    largest = nccl.parse_size(config.getoption("--nccl-max-bytes") or ("8G" if backend == "nccl" else "1M"))
    return backend, [size for size in nccl.HARDWARE_SIZES if size <= largest]


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ == "test_nccl":  # ids read op first: all_reduce-8B
        metafunc.parametrize("op", nccl.OPS)
        metafunc.parametrize("size", [nccl.format_size(size) for size in sweep_plan(metafunc.config)[1]])


# 20 timed iterations per size (fewer where they would take over 1 s); the whole sweep is bounded
# so `pytest -m hardware` keeps its 5-minute budget even on a node far below its physics
TIMING = {"warmup": 5, "iters": 20, "size_budget_s": 1.0, "timeout_s": 300.0, "stall_timeout_s": 60.0}


@pytest.fixture(scope="module")
def sweep(request) -> nccl.SweepResult:
    backend, sizes = sweep_plan(request.config)
    nproc = request.config.getoption("--nccl-nproc")
    if backend == "nccl":
        found = len(request.getfixturevalue("cuda_devices"))  # skips, with the reason, without CUDA
        if found < 2:
            pytest.skip(gpus.too_few("NCCL", 2, found))
        nproc = nproc or found
    if not sizes:
        pytest.skip(not_applicable("--nccl-max-bytes is below the smallest size of the sweep"))
    try:
        return nccl.run(nccl.SweepConfig(backend=backend, nproc=nproc or 2, sizes=tuple(sizes), **TIMING))
    except nccl.SweepError as err:
        pytest.fail(f"the NCCL sweep cannot start: {err}", pytrace=False)


def nvlink_peak(gpucert, sweep):
    if sweep.config.backend != "nccl":
        return None, f"{sweep.config.backend} on CPU: no NVLink peak"
    return peak.nvlink_peak(gpucert.snapshot, sweep.config.nproc)


def record_failed(gpucert, row, metrics):
    """A row that did not measure, or measured wrong data: every metric fails with the row's error
    (values kept where there are some), so no baseline ever learns them."""
    for metric, key, unit, direction in metrics:
        gpucert.record(metric, row.get(key), unit=unit, direction=direction, status="error", error=row["error"])


# wrong first: where data is wrong, the check's first failure line names it
ROW_METRICS = (("wrong", "wrong", "elements", "lower"), ("busbw_gbps", "busbw_gbps", "GB/s", "higher"),
               ("algbw_gbps", "algbw_gbps", "GB/s", "higher"), ("time_us", "time_us", "us", "lower"))


def test_nccl(gpucert, sweep, op, size):
    row = sweep.row(op, nccl.parse_size(size))
    if row is None:
        pytest.skip(not_applicable(f"{size} rounds down to 0 bytes for {op} on {sweep.config.nproc} ranks"))
    if row["status"] != "ok":
        record_failed(gpucert, row, ROW_METRICS)
        return
    gpucert.record("wrong", row["wrong"], unit="elements", direction="lower")
    nvlink, why = nvlink_peak(gpucert, sweep)
    gpucert.record("busbw_gbps", row["busbw_gbps"], unit="GB/s", direction="higher", peak=nvlink,
                   samples=rows.busbw_samples(row, sweep.config.nproc),
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


def test_nccl_small_message_latency(gpucert, sweep):
    row, params = headline_row(gpucert, sweep, min(sweep.config.sizes), "latency_us", "time_us", "us", "lower")
    if row:
        gpucert.record("latency_us", row["time_us"], unit="us", direction="lower", params=params,
                       samples=row["samples_us"])


def test_nccl_large_message_busbw(gpucert, sweep):
    row, params = headline_row(gpucert, sweep, max(sweep.config.sizes), "busbw_gbps", "busbw_gbps", "GB/s", "higher")
    if row:
        nvlink, why = nvlink_peak(gpucert, sweep)
        gpucert.record("busbw_gbps", row["busbw_gbps"], unit="GB/s", direction="higher", params=params,
                       samples=rows.busbw_samples(row, sweep.config.nproc), peak=nvlink, note=why)
