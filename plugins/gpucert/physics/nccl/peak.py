"""The NVLink peak a node's collective busbw is judged against (a `min_fraction_of_peak` rule).

busbw is defined so that it compares with the bandwidth of one GPU's links in one direction
(nccl-tests doc/PERFORMANCE.md), so the peak is the datasheet's NVLink GB/s per GPU per direction
— when every pair of the ranks' GPUs is joined by NVLink in the snapshot's topology. Anything else
(no datasheet entry, no NVLink, a pair over PCIe) gives no peak and says why: such a node is
judged on its baselines only.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable


def nvlink_peak(snapshot: dict[str, Any] | None, nranks: int,
                lookup: Callable[[str], Any] | None = None) -> tuple[float | None, str | None]:
    """(peak GB/s or None, why there is none)."""
    gpus = (snapshot or {}).get("gpus") or []
    if len(gpus) < nranks:
        return None, f"the stack snapshot lists {len(gpus)} GPU(s) for {nranks} ranks: no NVLink peak"
    names = sorted({str(g.get("name")) for g in gpus[:nranks]})
    if len(names) != 1:
        return None, f"mixed GPU models ({', '.join(names)}): no single NVLink peak"
    if lookup is None:
        from gpucert.physics import datasheet
        lookup = datasheet.lookup
    spec = lookup(names[0])
    if spec is None:
        return None, f"no datasheet entry for {names[0]}: judged on baselines only"
    if not spec.nvlink_gbps:
        return None, f"{spec.model} has no NVLink in the datasheet: judged on baselines only"
    matrix = ((snapshot or {}).get("topology") or {}).get("matrix") or {}
    for i in range(nranks):
        for j in range(i + 1, nranks):
            link = (matrix.get(f"GPU{i}") or {}).get(f"GPU{j}")
            if link is not None and not str(link).startswith("NV"):
                return None, f"GPU{i}-GPU{j} are joined by {link}, not NVLink: no NVLink peak applies"
    return float(spec.nvlink_gbps), None
