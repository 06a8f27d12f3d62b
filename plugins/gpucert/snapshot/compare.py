"""Digest and drift between two snapshots. The severity policy is the RULES table below.

Paths are dotted with list indices (`gpus[1].nvlink[3].active`, `driver.version`); a rule's
pattern writes indices as `[]` and `*` for one name part, and the first rule whose pattern and
condition both hold gives the severity. A change is reported only when old != new: a node that
was already degraded in the baseline is not flagged again here (the checks judge absolute health).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable

from .profile import is_weaker, natural_key
from .schema import SnapshotError

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITIES = (CRITICAL, WARNING, INFO)

# Moment-to-moment state and bookkeeping: in neither the digest nor the diff.
_NOT_STACK = ("taken_at", "source", "notes", "incomplete", "gpus[].volatile")
# The digest names the node's stack: also leave out what flips with load (clock-event reasons)
# and the version of the tool that took the snapshot.
NOT_IN_DIGEST = _NOT_STACK + ("gpus[].throttle_reasons", "software.gpucert")
# gpu_found only restates whether `gpus` is empty; the GPU count change already reports it.
NOT_IN_DIFF = _NOT_STACK + ("gpu_found",)
# A change implied by a sibling's change is not listed twice: an inactive link has no speed,
# a different GPU has a different serial.
IMPLIED_BY = {
    "gpus[].nvlink[].speed_gbps": "active",
    "gpus[].serial": "uuid",
}
# Lists compared by length instead of element by element beyond the common part.
COUNTED_LISTS = ("gpus",)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _any(old, new) -> bool:
    return True


def _increased(old, new) -> bool:
    return _number(new) and new > (old if _number(old) else 0)


def _decreased(old, new) -> bool:
    """Lower, or gone: a value that can no longer be read counts as lost."""
    return _number(old) and (new is None or (_number(new) and new < old))


def _lost(old, new) -> bool:
    return old is not None and new is None


def _became_false(old, new) -> bool:
    return old is True and new is not True


def _became_true(old, new) -> bool:
    return new is True and old is not True


def _major_changed(old, new) -> bool:
    def major(version):
        return str(version).split(".")[0] if version is not None else None
    return major(old) != major(new)


def _weaker_link(old, new) -> bool:
    return is_weaker(old, new)


# (path pattern, condition, severity, why) — first match wins; no match is INFO.
RULES: tuple[tuple[str, Callable, str, str], ...] = (
    ("gpus", _any, CRITICAL, "GPU count changed"),
    ("gpus[].name", _any, CRITICAL, "GPU model changed"),
    ("gpus[].uuid", _any, CRITICAL, "a different physical GPU"),
    ("gpus[].nvlink[]", _lost, CRITICAL, "NVLink link disappeared"),
    ("gpus[].nvlink[].active", _became_false, CRITICAL, "NVLink link went inactive"),
    ("gpus[].nvlink[].speed_gbps", _decreased, CRITICAL, "NVLink link slower"),
    ("gpus[].pcie.width_current", _decreased, CRITICAL, "PCIe link narrower"),
    ("gpus[].pcie.gen_current", _decreased, CRITICAL, "PCIe link at a lower generation"),
    ("gpus[].ecc.*.*_uncorrectable", _increased, CRITICAL, "new uncorrectable ECC errors"),
    ("gpus[].remapped_rows.uncorrectable", _increased, CRITICAL, "rows remapped for uncorrectable errors"),
    ("gpus[].remapped_rows.failure", _became_true, CRITICAL, "row remapping failed"),
    ("gpus[].retired_pages.double_bit", _increased, CRITICAL, "pages retired for double-bit errors"),
    ("gpus[].mig_mode.*", _any, CRITICAL, "MIG mode changed"),
    ("driver.version", _major_changed, CRITICAL, "driver major version changed"),
    ("topology.matrix.*.*", _weaker_link, CRITICAL, "GPU interconnect got weaker"),

    ("driver.version", _any, WARNING, "driver version changed"),
    ("driver.cuda_driver_version", _any, WARNING, "CUDA driver version changed"),
    ("software.gpucert", _any, INFO, "the suite's own version"),
    ("software.*", _any, WARNING, "software version changed"),
    ("software", _any, WARNING, "software versions appeared or disappeared"),
    ("gpus[].clocks_max_mhz.*", _any, WARNING, "maximum clocks changed"),
    ("gpus[].clocks_applications_mhz.*", _any, WARNING, "application clocks changed"),
    ("gpus[].power_limit_w.*", _any, WARNING, "power limit changed"),
    ("gpus[].ecc.mode_*", _any, WARNING, "ECC mode changed"),
    ("gpus[].ecc.*.*_correctable", _increased, WARNING, "new correctable ECC errors"),
    ("gpus[].retired_pages.single_bit", _increased, WARNING, "pages retired for single-bit errors"),
    ("gpus[].retired_pages.pending", _became_true, WARNING, "page retirement pending (reset needed)"),
    ("gpus[].remapped_rows.correctable", _increased, WARNING, "rows remapped for correctable errors"),
    ("gpus[].remapped_rows.pending", _became_true, WARNING, "row remap pending (reset needed)"),
    ("gpus[].persistence_mode", _any, WARNING, "persistence mode changed"),
    ("gpus[].compute_mode", _any, WARNING, "compute mode changed"),
    ("gpus[].vbios", _any, WARNING, "VBIOS changed"),
    ("gpus[].memory_total_mib", _any, WARNING, "GPU memory size changed"),
    ("gpus[].architecture", _any, WARNING, "GPU architecture changed"),
    ("gpus[].pci_bus_id", _any, WARNING, "GPU moved to another PCI address"),
    ("gpus[].pcie.*", _any, WARNING, "PCIe link capability changed"),
    ("gpus[].nvlink", _lost, WARNING, "NVLink status no longer readable"),
    ("gpus[].nvlink[]", _any, WARNING, "NVLink link appeared"),
    ("topology.matrix.*.*", _any, WARNING, "GPU interconnect changed"),
    ("topology.matrix.*", _any, WARNING, "a device joined or left the topology"),
    ("topology.cpu_affinity.*", _any, WARNING, "CPU affinity changed"),
    ("topology.numa_affinity.*", _any, WARNING, "NUMA affinity changed"),
    ("topology.nics.*", _any, WARNING, "NIC naming changed"),
    ("topology.*", _any, WARNING, "topology section changed"),
    ("topology", _any, WARNING, "topology appeared or disappeared"),
    ("schema_version", _any, WARNING, "snapshot schema changed: compare with care"),
)


def _compile(pattern: str) -> re.Pattern:
    regex = re.escape(pattern).replace(r"\[\]", r"\[\d+\]").replace(r"\*", r"[^.\[\]]*")
    return re.compile(f"^{regex}$")


_RULES = tuple((_compile(p), when, severity, why) for p, when, severity, why in RULES)
_NOT_IN_DIGEST = tuple(_compile(p) for p in NOT_IN_DIGEST)
_NOT_IN_DIFF = tuple(_compile(p) for p in NOT_IN_DIFF)
_NOT_STACK_PATTERNS = tuple(_compile(p) for p in _NOT_STACK)
_IMPLIED_BY = tuple((_compile(p), sibling) for p, sibling in IMPLIED_BY.items())
_COUNTED = tuple(_compile(p) for p in COUNTED_LISTS)


def classify(path: str, old, new) -> tuple[str, str]:
    """(severity, why) of one change by the RULES table."""
    for pattern, when, severity, why in _RULES:
        if pattern.match(path) and when(old, new):
            return severity, why
    return INFO, "other change"


_UUID = _compile("gpus[].uuid")


def another_node(old: dict, new: dict) -> bool:
    """Two snapshots of different machines of one profile, not one machine with a GPU swapped:
    as many GPUs, at least two, and not one UUID in common. (A profile's baselines certify every
    node of that hardware; a lent node is another machine each time — session 5.)"""
    def uuids(snapshot):
        return [g.get("uuid") for g in snapshot.get("gpus") or [] if isinstance(g, dict)]
    before, after = uuids(old), uuids(new)
    return (len(before) == len(after) >= 2 and None not in before + after
            and not set(before) & set(after))


def stack_view(snapshot: dict) -> dict:
    """The snapshot without moment-to-moment readings: what a baseline keeps, so that its git
    diff shows stack changes, not temperatures."""
    return _prune(snapshot, "", _NOT_STACK_PATTERNS)


def stable_view(snapshot: dict) -> dict:
    """The snapshot without its volatile parts (what the digest covers)."""
    return _prune(snapshot, "", _NOT_IN_DIGEST)


def digest(snapshot: dict) -> str:
    """"sha256:..." of the stable fields, key order independent."""
    canonical = json.dumps(stable_view(snapshot), sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


def explain(old: dict, new: dict) -> list[dict]:
    """Changes with the rule's reason: {"path", "old", "new", "severity", "reason"}."""
    for name, snapshot in (("old", old), ("new", new)):
        if not isinstance(snapshot, dict) or "schema_version" not in snapshot:
            raise SnapshotError(f"{name} is not a gpucert snapshot (no schema_version)")
    raw: list[tuple[str, object, object]] = []
    _walk(old, new, "", raw)
    changed = {path for path, _, _ in raw}
    other_node = another_node(old, new)
    changes = []
    for path, before, after in raw:
        if _implied(path, changed):
            continue
        severity, why = classify(path, before, after)
        if other_node and _UUID.match(path):
            severity, why = INFO, ("another node of this profile: every GPU's UUID differs (a swapped GPU "
                                   "changes one); its other changes are judged as usual")
        changes.append({"path": path, "old": before, "new": after,
                        "severity": severity, "reason": why})
    order = {severity: rank for rank, severity in enumerate(SEVERITIES)}
    changes.sort(key=lambda c: (order[c["severity"]], natural_key(c["path"])))
    return changes


def diff(old: dict, new: dict) -> list[dict]:
    """Stable-field changes {"path", "old", "new", "severity"}, critical first, then by path."""
    return [{key: change[key] for key in ("path", "old", "new", "severity")}
            for change in explain(old, new)]


def counts(changes: list[dict]) -> dict[str, int]:
    return {severity: sum(c["severity"] == severity for c in changes) for severity in SEVERITIES}


def _join(path: str, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def _excluded(path: str, patterns) -> bool:
    return any(pattern.match(path) for pattern in patterns)


def _prune(value, path: str, patterns):
    if isinstance(value, dict):
        return {key: _prune(item, _join(path, key), patterns) for key, item in value.items()
                if not _excluded(_join(path, key), patterns)}
    if isinstance(value, list):
        return [_prune(item, _join(path, i), patterns) for i, item in enumerate(value)]
    return value


def _is_mirror(path: str) -> bool:
    """topo -m is symmetric: diff each matrix pair once (row before column), never the diagonal."""
    match = re.match(r"^topology\.matrix\.([^.]+)\.([^.]+)$", path)
    return bool(match) and natural_key(match.group(1)) >= natural_key(match.group(2))


def _implied(path: str, changed: set[str]) -> bool:
    for pattern, sibling in _IMPLIED_BY:
        if pattern.match(path):
            if path.rsplit(".", 1)[0] + "." + sibling in changed:
                return True
    return False


_ABSENT = None  # a key or element present on one side only compares against None


def _walk(old, new, path: str, out: list) -> None:
    if path and (_excluded(path, _NOT_IN_DIFF) or _is_mirror(path)):
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            _walk(old.get(key, _ABSENT), new.get(key, _ABSENT), _join(path, key), out)
        return
    if _dict_list(old) and _dict_list(new):
        if len(old) != len(new) and _excluded(path, _COUNTED):
            out.append((path, len(old), len(new)))
            common = min(len(old), len(new))
            old, new = old[:common], new[:common]
        for i in range(max(len(old), len(new))):
            _walk(old[i] if i < len(old) else _ABSENT, new[i] if i < len(new) else _ABSENT,
                  _join(path, i), out)
        return
    if old != new:
        out.append((path, old, new))


def _dict_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)
