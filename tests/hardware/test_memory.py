"""Memory checks, per GPU: device copy bandwidth (bytes read + written) against the datasheet
memory bandwidth, and host↔device copies (pinned, pageable) against PCIe per direction.

One test per copy kind × GPU index (ids like `device_copy-gpu1`). The GPU indices come from the
visible device count at collection (without initializing CUDA, as tests/hardware/conftest.py
does); with no GPU there is one index per kind, and the `cuda_devices` fixture skips it with
the reason.
"""

import pytest

from gpucert import gpus
from gpucert.physics import datasheet
from gpucert.physics import memory as engine
from gpucert.physics.core import measure

pytestmark = pytest.mark.hardware

DEVICE_TIMING = {"warmup": 3, "reps": 20, "max_time_s": 10.0}
HOST_TIMING = {"warmup": 2, "reps": 10, "max_time_s": 10.0}  # a pageable 1 GiB copy takes ~0.1 s


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ == "test_memory":  # ids read kind first: device_copy-gpu0
        metafunc.parametrize("kind", engine.KINDS)
        metafunc.parametrize("gpu", range(max(gpus.count(), 1)), ids=lambda i: f"gpu{i}")


def test_memory(gpucert, cuda_devices, kind, gpu):
    on_gpu = kind == "device_copy"
    size = engine.DEVICE_COPY_BYTES if on_gpu else engine.HOST_COPY_BYTES
    result = measure(engine.MemoryCopy(kind, size), f"cuda:{gpu}", **(DEVICE_TIMING if on_gpu else HOST_TIMING))

    name, spec = datasheet.gpu_of(gpucert.snapshot, gpu)
    peak = engine.datasheet_peak(kind, spec)
    gpucert.record_result("gbps", result, result.gbps, unit="GB/s", direction="higher",
                          samples=result.rate_samples("gbps"), peak=peak,
                          note=None if spec else datasheet.no_entry_note(name))
    if result.status == "skipped":
        pytest.skip(result.error)
