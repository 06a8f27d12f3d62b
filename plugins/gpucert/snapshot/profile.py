"""Profile names (GPU model × count × interconnect) and the strength order of topology links.

The profile keys a baseline to hardware only: a driver or CUDA upgrade on the same node keeps
the profile, so the baseline catches exactly that drift.
"""

from __future__ import annotations

import re
from collections import Counter

# `nvidia-smi topo -m` link kinds from strongest to weakest; NV<n> (n bonded NVLinks) ranks above
# all of them, more links first. "SOC" is the pre-R384 spelling of SYS.
_PCIE_ORDER = ("PIX", "PXB", "PHB", "NODE", "SYS", "SOC")
_NV = re.compile(r"^NV(?P<links>\d+)$")


def link_rank(link: str | None) -> float:
    """Larger is stronger: NV18 > NV12 > PIX > PXB > PHB > NODE > SYS; unknown/None weakest."""
    if not link:
        return float("-inf")
    nv = _NV.match(link)
    if nv:
        return 100 + int(nv.group("links"))
    if link in _PCIE_ORDER:
        return len(_PCIE_ORDER) - _PCIE_ORDER.index(link)
    return 0


def is_weaker(old: str | None, new: str | None) -> bool:
    return link_rank(new) < link_rank(old)


def gpu_pairs(topology: dict | None) -> list[tuple[str, str, str]]:
    """(GPUa, GPUb, link) once per unordered GPU pair, from the matrix (NICs left out)."""
    matrix = (topology or {}).get("matrix") or {}
    gpus = sorted((name for name in matrix if name.startswith("GPU")), key=natural_key)
    return [(a, b, matrix[a].get(b)) for i, a in enumerate(gpus) for b in gpus[i + 1:]
            if matrix[a].get(b) is not None]


def weakest_gpu_link(topology: dict | None) -> str | None:
    links = [link for _, _, link in gpu_pairs(topology)]
    return min(links, key=link_rank) if links else None


def model_token(name: str | None) -> str:
    """"NVIDIA H100 80GB HBM3" → "H100-80GB-HBM3" (safe in a directory name)."""
    name = re.sub(r"^NVIDIA\s+", "", (name or "unknown").strip())
    return re.sub(r"[^A-Za-z0-9.-]", "", re.sub(r"\s+", "-", name)) or "unknown"


def profile_name(snapshot: dict) -> str:
    """"2xH100-80GB-HBM3-NV18"; "1xH100-80GB-HBM3" for one GPU; "1xA-1xB-NV12" for mixed
    models; "no-gpu" without GPUs. The interconnect is the weakest GPU↔GPU link, since a
    collective runs at the pace of its slowest pair."""
    gpus = snapshot.get("gpus") or []
    if not gpus:
        return "no-gpu"
    counts = Counter(model_token(gpu.get("name")) for gpu in gpus)  # keeps first-seen order
    parts = [f"{count}x{model}" for model, count in counts.items()]
    if len(gpus) > 1:
        link = weakest_gpu_link(snapshot.get("topology"))
        if link:
            parts.append(re.sub(r"[^A-Za-z0-9.-]", "", link))
    return "-".join(parts)


def natural_key(name: str) -> tuple:
    """"GPU10" after "GPU9"."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))
