"""How many CUDA GPUs a Python sees, and why none — standalone (the standard library and torch
only), so that gpucert.gpus imports it and another interpreter (the engine's `--engine-python`,
which need not have gpucert) runs this same source (`python -c <it>`), which prints the answer
as one line of JSON.

torch.cuda.device_count() asks NVML first and creates no CUDA context.
"""

import importlib.util
import json
from importlib import metadata
from pathlib import Path


def _cpu_wheel() -> "str | None":
    """The installed PyTorch's version when its wheel is a CPU build (`2.13.0+cpu`, the local
    label of PyTorch's CPU index), read from its metadata: importing torch costs seconds, paid by
    every pytest run that collects the checks (the memory check parametrizes by GPU count). Only
    when that wheel is the torch an import would find: a torch earlier on the path (a source
    build, an engine's own) is asked by importing it."""
    try:
        dist = metadata.distribution("torch")
        spec = importlib.util.find_spec("torch")
    except (metadata.PackageNotFoundError, ImportError, ValueError):
        return None
    version = dist.version or ""
    if not version.endswith("+cpu") or spec is None or not spec.origin:
        return None
    try:
        same = Path(str(dist.locate_file("torch/__init__.py"))).samefile(spec.origin)
    except OSError:  # the wheel's files are not where its metadata says
        return None
    return version if same else None


def visible() -> tuple[int, str]:
    """(CUDA device count, why there are none: "" when there are some)."""
    cpu = _cpu_wheel()
    if cpu:
        return 0, f"no CUDA device: PyTorch {cpu} is a CPU build"
    try:
        import torch
    except ImportError:
        return 0, "PyTorch is not installed"
    if torch.version.cuda is None:
        return 0, f"no CUDA device: PyTorch {torch.__version__} is a CPU build"
    if not torch.cuda.is_available():
        return 0, "no CUDA device visible (driver missing or CUDA_VISIBLE_DEVICES empty)"
    return torch.cuda.device_count(), ""


if __name__ == "__main__":
    print(json.dumps(visible()))
