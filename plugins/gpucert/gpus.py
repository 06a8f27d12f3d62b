"""How many CUDA GPUs this node shows, and why none — the one place gpucert asks (collection,
checks and the `gpucert` command alike); the answer itself is gpu_probe.visible(), which creates
no CUDA context, so collection can ask before a forked NCCL worker starts (a worker must not
inherit a context).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

from . import gpu_probe
from .certification import not_applicable
from .gpu_probe import visible


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
        # the file's source with -c, not the file as a script: a script's folder (gpucert's own
        # modules) would come first on that interpreter's path
        source = Path(gpu_probe.__file__).read_text()
        probe = subprocess.run([python, "-c", source], capture_output=True, text=True, timeout=300)
        found, why = json.loads(probe.stdout.strip().splitlines()[-1])
        return int(found), f"{why} (in {python})" if why else ""
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0, f"{python} could not be asked how many GPUs it sees"


def too_few(what: str, need: int, found: int, reason: str = "") -> str:
    """The skip reason of a check that needs `need` GPUs on a node showing `found`. On a node with
    GPUs but fewer (P2P on one GPU) the check does not apply: it does not count against
    certification. With none at all it could not run here (no CUDA device: nothing certified)."""
    text = f"{what} needs ≥ {need} GPUs, found {found}"
    if found >= 1:
        return not_applicable(f"{text} (this node's shape)")
    return text + (f" ({reason})" if reason else "")
