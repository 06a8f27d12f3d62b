"""Absolute health of one snapshot, with no baseline: what is wrong with the node as it stands.

Drift (compare.py) only sees what changed, so a node that was already degraded when its first
baseline was taken would be blessed by it. These findings close that hole: a half-down NVLink
bundle or a PCIe link narrower than its max fails on the very first run.
"""

from __future__ import annotations

from .compare import CRITICAL, WARNING

# clock-event reasons that mean the GPU is being slowed by heat or power delivery, not by choice
_SLOWDOWN_REASONS = {"hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown", "sw_thermal_slowdown"}


def _finding(path: str, value, expected: str, severity: str, reason: str) -> dict:
    return {"path": path, "value": value, "expected": expected, "severity": severity, "reason": reason}


def _nvlink(prefix: str, links: list[dict]) -> list[dict]:
    active = [link for link in links if link.get("active")]
    if not links or active == links:
        return []
    if not active:
        return [_finding(f"{prefix}.nvlink", "0 active", f"{len(links)} active", WARNING,
                         "no NVLink link is active (a PCIe-only board reports none at all)")]
    return [_finding(f"{prefix}.nvlink[{link['link']}].active", False, "true", CRITICAL,
                     "NVLink link down while its siblings are up")
            for link in links if not link.get("active")]


def _pcie(prefix: str, pcie: dict) -> list[dict]:
    out = []
    width, width_max = pcie.get("width_current"), pcie.get("width_max")
    if width is not None and width_max is not None and width < width_max:
        out.append(_finding(f"{prefix}.pcie.width_current", width, f"x{width_max}", CRITICAL,
                            "PCIe link trained narrower than the board supports"))
    gen, gen_max = pcie.get("gen_current"), pcie.get("gen_max")
    if gen is not None and gen_max is not None and gen < gen_max:
        # many boards drop the link generation when idle to save power: suspicious, not proof
        out.append(_finding(f"{prefix}.pcie.gen_current", gen, f"Gen{gen_max}", WARNING,
                            "PCIe link below its max generation (can be idle power saving: recheck under load)"))
    return out


def _memory_errors(prefix: str, gpu: dict) -> list[dict]:
    out = []
    ecc = gpu.get("ecc") or {}
    if ecc.get("mode_current") is False:
        out.append(_finding(f"{prefix}.ecc.mode_current", False, "true", WARNING, "ECC is disabled"))
    for scope, severity, why in (("volatile", CRITICAL, "uncorrectable ECC errors since the last driver load"),
                                 ("aggregate", WARNING, "uncorrectable ECC errors in the board's lifetime")):
        counts = ecc.get(scope) or {}
        for name in ("sram_uncorrectable", "dram_uncorrectable"):
            if (counts.get(name) or 0) > 0:
                out.append(_finding(f"{prefix}.ecc.{scope}.{name}", counts[name], "0", severity, why))
    rows = gpu.get("remapped_rows") or {}
    if rows.get("failure"):
        out.append(_finding(f"{prefix}.remapped_rows.failure", True, "false", CRITICAL,
                            "row remapping failed: the board needs service"))
    if rows.get("pending"):
        out.append(_finding(f"{prefix}.remapped_rows.pending", True, "false", WARNING,
                            "a row remap is pending: it takes effect at the next GPU reset"))
    if (gpu.get("retired_pages") or {}).get("pending"):
        out.append(_finding(f"{prefix}.retired_pages.pending", True, "false", WARNING,
                            "a page retirement is pending: it takes effect at the next GPU reset"))
    return out


def health(snapshot: dict) -> list[dict]:
    """Findings {path, value, expected, severity, reason} of the snapshot alone, critical first."""
    # a stack read only in part is not certified: what could not be read may be what is broken
    findings = [_finding("incomplete", problem, "read in full", CRITICAL,
                         "part of the stack could not be read, so nothing about it is certified")
                for problem in snapshot.get("incomplete") or []]
    for i, gpu in enumerate(snapshot.get("gpus") or []):
        prefix = f"gpus[{i}]"
        findings += _nvlink(prefix, gpu.get("nvlink") or [])
        findings += _pcie(prefix, gpu.get("pcie") or {})
        findings += _memory_errors(prefix, gpu)
        slowed = sorted(set(gpu.get("throttle_reasons") or []) & _SLOWDOWN_REASONS)
        if slowed:
            findings.append(_finding(f"{prefix}.throttle_reasons", ", ".join(slowed), "none of these", WARNING,
                                     "the GPU is being slowed by heat or power delivery"))
    return sorted(findings, key=lambda f: f["severity"] != CRITICAL)
