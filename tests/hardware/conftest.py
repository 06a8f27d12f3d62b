"""Fixtures shared by the hardware checks: which CUDA devices exist and what their datasheet says.

Collection never initializes CUDA (a forked NCCL worker must not inherit a CUDA context); the
device count comes from torch.cuda.device_count(), which asks NVML first.
"""

import pytest


def cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def no_gpu_reason() -> str:
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed"
    if torch.version.cuda is None:
        return f"no CUDA device: PyTorch {torch.__version__} is a CPU build"
    return "no CUDA device visible (driver missing or CUDA_VISIBLE_DEVICES empty)"


@pytest.fixture(scope="session")
def cuda_devices() -> list[int]:
    """Indices of the visible CUDA devices; skips the check (with the reason) where there are none."""
    count = cuda_device_count()
    if count == 0:
        pytest.skip(no_gpu_reason())
    return list(range(count))
