"""Fixtures shared by the hardware checks: which CUDA devices exist and what their datasheet says.

Collection never initializes CUDA (a forked NCCL worker must not inherit a CUDA context): the
count comes from gpucert.gpus, which asks torch.cuda.device_count() (NVML first).
"""

import pytest

from gpucert import gpus


@pytest.fixture(scope="session")
def cuda_devices() -> list[int]:
    """Indices of the visible CUDA devices; skips the check (with the reason) where there are none."""
    count, reason = gpus.visible()
    if count == 0:
        pytest.skip(reason)
    return list(range(count))
