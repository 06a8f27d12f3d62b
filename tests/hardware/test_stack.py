"""The stack check: what is installed and how the GPUs are wired, compared with the profile's
baseline snapshot. Every change is listed with its path, old and new value and severity; the
counts per severity are the metrics thresholds.yaml judges (critical fails, warning warns)."""

import pytest

from gpucert import snapshot as stack

pytestmark = pytest.mark.hardware

SEVERITIES = ("critical", "warning", "info")


def test_stack(gpucert):
    current = gpucert.snapshot
    gpucert.artifact("snapshot", current)
    baseline = gpucert.baseline_artifact("snapshot")
    changes = stack.diff(baseline, current) if baseline is not None else []
    for change in changes:
        gpucert.finding("drift", **change)
    for severity in SEVERITIES:
        found = [c for c in changes if c["severity"] == severity]
        gpucert.record(
            f"drift_{severity}", len(found), unit="changes", direction="lower",
            note="; ".join(f"{c['path']}: {c['old']!r} -> {c['new']!r}" for c in found) or None,
        )
    gpucert.record("gpu_count", len(current.get("gpus") or []), unit="GPUs", direction="higher")
