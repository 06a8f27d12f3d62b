"""Stack snapshot engine: what is installed and how the GPUs are wired, as one JSON-able dict.

Public API (the plugin, the CLI and the stack check rely on these names):

    collect(from_dir=None) -> dict        live (NVML first, nvidia-smi where NVML lacks a field,
                                          package metadata for software) or from captured
                                          nvidia-smi outputs in from_dir
    digest(snapshot) -> str               "sha256:..." of the stable (non-volatile) fields
    profile_name(snapshot) -> str         e.g. "2xH100-80GB-HBM3-NV18"; "no-gpu" without GPUs
    diff(old, new) -> list[dict]          each {"path", "old", "new", "severity"} with severity
                                          critical | warning | info, critical first
    summary(snapshot) -> list[tuple[str, str]]   label/value rows for the report card
    stack_view(snapshot) -> dict          the snapshot less its volatile readings (what baselines keep)
    health(snapshot) -> list[dict]        absolute findings of one snapshot, no baseline needed:
                                          {"path", "value", "expected", "severity", "reason"}
    host_profile(baselines_dir, snapshot, derived) -> (profile, why) | None
                                          the baselined profile that is this host, when the
                                          derived one has no baselines (identity.py)

Also: SnapshotError (bad input: raised by collect(from_dir) and diff), explain(old, new) (diff
with each rule's reason), RULES (the severity policy), SEVERITIES.
"""

from .collect import collect
from .compare import RULES, SEVERITIES, another_node, counts, diff, digest, explain, stack_view
from .health import health
from .identity import host_profile
from .profile import profile_name
from .schema import SCHEMA_VERSION, SnapshotError
from .summary import summary

__all__ = ["collect", "digest", "profile_name", "diff", "summary", "health", "explain", "RULES",
           "SEVERITIES", "SCHEMA_VERSION", "SnapshotError", "stack_view", "another_node", "counts",
           "host_profile"]
