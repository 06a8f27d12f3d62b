"""Which baselined profile is this host's: the answer when the snapshot's own profile has none.

A profile is derived from the hardware the snapshot sees, so a node that lost a GPU (or whose
driver stopped answering) derives a new profile with no baselines: every metric `new`, nothing
compared, exit 0. The stack baseline of each profile keeps the snapshot it was taken on, with the
GPUs' UUIDs and the host; when one of them is this host, the run is judged against that profile
and the stack drift shows what changed.

"This host": a GPU UUID in common (a UUID names one physical board). Only when no GPU UUID can be
read now, the host itself: the same hostname, CPU model and CPU count, and memory within 2 %
(hostnames alone repeat: lent machines are often all called "vm").
"""

from __future__ import annotations

import json
from pathlib import Path

STACK_FAMILY = "stack"
SNAPSHOT_ARTIFACT = "stack::snapshot"  # test_stack's artifact "snapshot", as the baseline keys it
_MEMORY_TOLERANCE = 0.02  # MemTotal moves by a few MiB between kernels, not by 2 %


def _uuids(snapshot: dict) -> set[str]:
    return {gpu["uuid"] for gpu in snapshot.get("gpus") or []
            if isinstance(gpu, dict) and isinstance(gpu.get("uuid"), str)}


def same_host(stored: dict | None, current: dict) -> str | None:
    """Why `stored` (a baseline's snapshot) was taken on this host, or None."""
    if not isinstance(stored, dict):
        return None
    now = _uuids(current)
    if now:
        shared = sorted(now & _uuids(stored))
        return f"GPU {', '.join(shared)} in both" if shared else None
    host, before = current.get("host") or {}, stored.get("host") or {}
    if not isinstance(before, dict):
        return None
    keys = ("hostname", "cpu_model", "cpu_count")
    if any(host.get(key) is None or host.get(key) != before.get(key) for key in keys):
        return None
    memory, memory_before = host.get("memory_total_mib"), before.get("memory_total_mib")
    if not memory or not memory_before or abs(memory - memory_before) > _MEMORY_TOLERANCE * memory_before:
        return None
    return (f"no GPU UUID readable now; host {host['hostname']} with the same CPU "
            f"({host['cpu_model']} × {host['cpu_count']}) and memory")


def host_profile(baselines_dir: str | Path, snapshot: dict, derived: str) -> tuple[str, str] | None:
    """(profile, why) of another profile whose stack baseline is this host, when `derived` has
    no baselines at all; None otherwise. Several: the one updated last."""
    root = Path(baselines_dir)
    if (root / derived).is_dir():
        return None  # the snapshot's profile has baselines: judged against them as always
    found = []
    for path in sorted(root.glob(f"*/{STACK_FAMILY}.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # read strictly (one-line error) only if this profile is the one used
        if not isinstance(doc, dict) or doc.get("profile") != path.parent.name:
            continue
        why = same_host((doc.get("artifacts") or {}).get(SNAPSHOT_ARTIFACT), snapshot)
        if why:
            found.append((str(doc.get("updated_at") or ""), path.parent.name, why))
    if not found:
        return None
    _, profile, why = max(found)
    return profile, why
