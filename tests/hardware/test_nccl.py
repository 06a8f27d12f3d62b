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

from .nccl_record import TIMING, headline_row, record_row, sweep_plan

pytestmark = pytest.mark.hardware


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ == "test_nccl":  # ids read op first: all_reduce-8B
        metafunc.parametrize("op", nccl.OPS)
        metafunc.parametrize("size", [nccl.format_size(size) for size in sweep_plan(metafunc.config)[1]])


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


def test_nccl(gpucert, sweep, op, size):
    row = sweep.row(op, nccl.parse_size(size))
    if row is None:
        pytest.skip(not_applicable(f"{size} rounds down to 0 bytes for {op} on {sweep.config.nproc} ranks"))
    nvlink, why = nvlink_peak(gpucert, sweep)
    record_row(gpucert, row, sweep.config.nproc, nvlink, why)


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
