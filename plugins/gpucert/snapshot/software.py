"""Versions of the software stack, from package metadata: nothing heavy is imported.

torch's CUDA version is read from torch/version.py without importing torch; torch itself is
imported only to ask a CUDA build for the NCCL it was built with (which does not initialise CUDA).
vLLM and Ray are never imported: importing them starts work a snapshot should not trigger.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import platform
from pathlib import Path

# snapshot key → distribution name
PACKAGES = {
    "torch": "torch",
    "vllm": "vllm",
    "ray": "ray",
    "transformers": "transformers",
    "nvidia-ml-py": "nvidia-ml-py",
    "gpucert": "gpucert",
}
# NCCL wheels torch's CUDA builds depend on, newest CUDA first.
NCCL_PACKAGES = ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11")


def collect() -> dict:
    """{"python", "torch", "cuda_runtime", "nccl", "vllm", "ray", "transformers",
    "nvidia-ml-py", "gpucert"}; None for what is not installed."""
    versions = {"python": platform.python_version()}
    versions.update({key: package_version(dist) for key, dist in PACKAGES.items()})
    cuda_runtime = torch_cuda_version() if versions["torch"] else None
    versions["cuda_runtime"] = cuda_runtime
    versions["nccl"] = nccl_version(torch_has_cuda=cuda_runtime is not None)
    order = ("python", "torch", "cuda_runtime", "nccl", "vllm", "ray", "transformers",
             "nvidia-ml-py", "gpucert")
    return {key: versions[key] for key in order}


def package_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def torch_cuda_version() -> str | None:
    """`torch.version.cuda` read from the source file: "12.8", or None for a CPU build."""
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        version_file = Path(location) / "version.py"
        try:
            tree = ast.parse(version_file.read_text())
        except (OSError, SyntaxError, UnicodeDecodeError):
            continue
        return _assigned_constant(tree, "cuda")
    return None


def _assigned_constant(tree: ast.Module, name: str):
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            value = node.value
            return value.value if isinstance(value, ast.Constant) else None
    return None


def nccl_version(torch_has_cuda: bool) -> str | None:
    """The NCCL a CUDA build of torch reports, else the version of an installed NCCL wheel."""
    if torch_has_cuda:
        found = _torch_nccl_version()
        if found:
            return found
    for distribution in NCCL_PACKAGES:
        found = package_version(distribution)
        if found:
            return found
    return None


def _torch_nccl_version() -> str | None:
    try:
        import torch
        version = torch.cuda.nccl.version()
    except (ImportError, AttributeError, RuntimeError, OSError):
        # a broken or partial install must not cost the rest of the snapshot
        return None
    if isinstance(version, tuple):
        return ".".join(str(part) for part in version)
    # torch < 1.13 returned an int like 21803 for 2.18.3
    return f"{version // 10000}.{version // 100 % 100}.{version % 100}" if isinstance(version, int) else None
