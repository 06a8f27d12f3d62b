"""How many CUDA GPUs this node shows, and why none — the one place gpucert asks (collection,
checks and the `gpucert` command alike).

torch.cuda.device_count() asks NVML first and creates no CUDA context, so collection can ask
before a forked NCCL worker starts (a worker must not inherit a context).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

from .certification import not_applicable

# what visible() answers, asked of another interpreter (one line of JSON)
_PROBE = ("import json\ntry:\n    import torch\nexcept ImportError:\n    print(json.dumps([0, 'PyTorch is not installed']))\n"
          "else:\n    cuda = torch.version.cuda\n    ok = cuda is not None and torch.cuda.is_available()\n"
          "    why = '' if ok else (f'no CUDA device: PyTorch {torch.__version__} is a CPU build' if cuda is None "
          "else 'no CUDA device visible (driver missing or CUDA_VISIBLE_DEVICES empty)')\n"
          "    print(json.dumps([torch.cuda.device_count() if ok else 0, why]))\n")


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


def visible_to(python: str | None) -> tuple[int, str]:
    """visible(), as another interpreter sees it — the engine's (`--engine-python`), whose PyTorch
    and GPUs are the ones vLLM will use, while gpucert's own may be a CPU build. None or this
    interpreter: visible()."""
    if not python or os.path.realpath(python) == os.path.realpath(sys.executable):
        return visible()
    return _probe(python)


@functools.cache  # a Python with CUDA torch takes seconds to import it: ask each once
def _probe(python: str) -> tuple[int, str]:
    try:
        probe = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=300)
        found, why = json.loads(probe.stdout.strip().splitlines()[-1])
        return int(found), f"{why} (in {python})" if why else ""
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0, f"{python} could not be asked how many GPUs it sees"


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
