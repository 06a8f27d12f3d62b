"""The stack check: what is installed and how the GPUs are wired.

Two views, each counted per severity as metrics thresholds.yaml judges (critical fails, warning
warns) and listed as findings on the card:
- drift: every change from the profile's baseline snapshot (path, old, new, severity);
- health: what is wrong with the node as it stands, baseline or not (an NVLink link down while its
  siblings are up, PCIe narrower than its max, uncorrectable ECC errors, a failed row remap), so a
  node that was already degraded when its baseline was taken is not blessed by it; a stack read
  only in part (the snapshot's `incomplete`) is a critical health finding and is not baselined.
"""

import pytest

from gpucert import snapshot as stack

pytestmark = pytest.mark.hardware


def _record_counts(gpucert, view, items, severities, unit, describe):
    for severity in severities:
        found = [item for item in items if item["severity"] == severity]
        gpucert.record(f"{view}_{severity}", len(found), unit=unit, direction="lower",
                       note="; ".join(describe(item) for item in found) or None)


def test_stack(gpucert):
    current = gpucert.snapshot
    if not current.get("incomplete"):  # a stack read only in part never becomes the baseline
        gpucert.artifact("snapshot", stack.stack_view(current))
    baseline = gpucert.baseline_artifact("snapshot")

    if baseline is None:
        for severity in ("critical", "warning", "info"):
            gpucert.record(f"drift_{severity}", None, unit="changes", direction="lower", status="skipped",
                           error=f"no baseline snapshot for profile {gpucert.profile} yet: drift not measured "
                                 "(--update-baselines takes one)")
    else:
        changes = stack.diff(baseline, current)
        for change in changes:
            gpucert.finding("drift", **change)
        _record_counts(gpucert, "drift", changes, ("critical", "warning", "info"), "changes",
                       lambda c: f"{c['path']}: {c['old']!r} -> {c['new']!r}")

    findings = stack.health(current)
    for item in findings:
        gpucert.finding("health", **item)
    _record_counts(gpucert, "health", findings, ("critical", "warning"), "findings",
                   lambda f: f"{f['path']} = {f['value']!r}: {f['reason']}")

    gpucert.record("gpu_count", len(current.get("gpus") or []), unit="GPUs", direction="higher")
