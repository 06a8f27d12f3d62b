"""How many CUDA GPUs this node shows, and why none — the one place gpucert asks (collection,
checks and the `gpucert` command alike).

torch.cuda.device_count() asks NVML first and creates no CUDA context, so collection can ask
before a forked NCCL worker starts (a worker must not inherit a context).
"""

from __future__ import annotations

from .certification import not_applicable


def visible() -> tuple[int, str]:
    """(CUDA device count, why there are none: "" when there are some)."""
    try:
        import torch
    except ImportError:
        return 0, "PyTorch is not installed"
    if torch.version.cuda is None:
        return 0, f"no CUDA device: PyTorch {torch.__version__} is a CPU build"
    if not torch.cuda.is_available():
        return 0, "no CUDA device visible (driver missing or CUDA_VISIBLE_DEVICES empty)"
    return torch.cuda.device_count(), ""


def count() -> int:
    return visible()[0]


def none_reason() -> str:
    """Why no GPU is visible (for a check or command that needs one)."""
    return visible()[1] or "no CUDA device visible"


def too_few(what: str, need: int, found: int, reason: str = "") -> str:
    """The skip reason of a check that needs `need` GPUs on a node showing `found`. On a node with
    GPUs but fewer (P2P on one GPU) the check does not apply: it does not count against
    certification. With none at all it could not run here (no CUDA device: nothing certified)."""
    text = f"{what} needs ≥ {need} GPUs, found {found}"
    if found >= 1:
        return not_applicable(f"{text} (this node's shape)")
    return text + (f" ({reason})" if reason else "")
