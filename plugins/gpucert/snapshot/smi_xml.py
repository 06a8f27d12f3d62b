"""Parser for `nvidia-smi -q -x`: the same snapshot fields as smi_query reads from `nvidia-smi -q`.

The XML (nvsmi_device_v*.dtd) names every field by a tag that does not depend on how the text
form happens to label or indent it, which is why a live node is read from it first; the text
parser stays for captured bundles. Element names that changed between schema versions are listed
in order of preference, newest first (v13: `sram_uncorrectable_parity`/`_secded`,
`instant_power_draw`; v12: `gpu_power_readings`, `current_power_limit`, `clocks_event_reasons`;
v11: `power_readings`, `power_limit`, `clocks_throttle_reasons`). Parsed with the standard
library's ElementTree: nvidia-smi's output names its DTD by a SYSTEM id, which is never fetched.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from .schema import ecc_counts, empty_gpu
from .values import text, to_bool, to_float, to_int

ROOT = "nvidia_smi_log"
# clock-event reasons whose tag says it another way than `nvidia-smi -q` (and NVML's names here)
_REASON_NAMES = {"gpu_idle": "idle", "display_clocks_setting": "display_clock_setting"}
_REASON_PREFIXES = ("clocks_event_reason_", "clocks_throttle_reason_")


class XmlError(ValueError):
    """Not `nvidia-smi -q -x` output: one line saying why."""


def parse_root(raw: str) -> ET.Element:
    try:
        root = ET.fromstring(raw.lstrip("\ufeff").strip())
    except ET.ParseError as err:
        raise XmlError(f"not readable as XML ({err})") from None
    if root.tag != ROOT:
        raise XmlError(f"not `nvidia-smi -q -x` output (root element <{root.tag}>, not <{ROOT}>)")
    return root


def value(node: ET.Element | None, *path: str) -> str | None:
    """The text of the element at path (direct children, step by step), or None where absent. An
    element that only holds children (e.g. <remapped_rows> on a driver that has them) has no value;
    one whose text is "N/A" stands for all of its would-be children."""
    for tag in path:
        if node is None:
            return None
        node = node.find(tag)
    if node is None:
        return None
    return (node.text or "").strip() if len(node) == 0 else None


def first(node: ET.Element | None, *paths: tuple[str, ...]) -> str | None:
    """The first of several spellings of a field that is present."""
    for path in paths:
        found = value(node, *path)
        if found is not None:
            return found
    return None


def section(node: ET.Element, *tags: str) -> ET.Element | None:
    return next((found for tag in tags if (found := node.find(tag)) is not None), None)


def gpu_elements(root: ET.Element) -> list[ET.Element]:
    return root.findall("gpu")


def parse(raw: str) -> dict:
    """{"driver": {"version", "cuda_driver_version"}, "gpus": [...]} from `nvidia-smi -q -x`."""
    root = parse_root(raw)
    return {
        "driver": {
            "version": text(value(root, "driver_version")),
            "cuda_driver_version": text(value(root, "cuda_version")),
        },
        "gpus": [_gpu(index, node) for index, node in enumerate(gpu_elements(root))],
    }


def _gpu(index: int, node: ET.Element) -> dict:
    gpu = empty_gpu(index)
    power = section(node, "gpu_power_readings", "power_readings")
    link = node.find("pci/pci_gpu_link_info")
    gpu.update({
        "name": text(value(node, "product_name")),
        "uuid": text(value(node, "uuid")),
        "serial": text(value(node, "serial")),
        "pci_bus_id": text(value(node, "pci", "pci_bus_id")) or text(node.get("id")),
        "memory_total_mib": to_int(value(node, "fb_memory_usage", "total")),
        "vbios": text(value(node, "vbios_version")),
        "architecture": text(value(node, "product_architecture")),
        "persistence_mode": to_bool(value(node, "persistence_mode")),
        "compute_mode": text(value(node, "compute_mode")),
        "mig_mode": {
            "current": to_bool(value(node, "mig_mode", "current_mig")),
            "pending": to_bool(value(node, "mig_mode", "pending_mig")),
        },
        "ecc": {
            "mode_current": to_bool(value(node, "ecc_mode", "current_ecc")),
            "mode_pending": to_bool(value(node, "ecc_mode", "pending_ecc")),
            "volatile": _ecc_counts(node.find("ecc_errors/volatile")),
            "aggregate": _ecc_counts(node.find("ecc_errors/aggregate")),
        },
        "retired_pages": {
            "single_bit": to_int(value(node, "retired_pages", "multiple_single_bit_retirement", "retired_count")),
            "double_bit": to_int(value(node, "retired_pages", "double_bit_retirement", "retired_count")),
            "pending": to_bool(first(node, ("retired_pages", "pending_blacklist"),
                                     ("retired_pages", "pending_retirement"))),
        },
        "remapped_rows": {
            "correctable": to_int(value(node, "remapped_rows", "remapped_row_corr")),
            "uncorrectable": to_int(value(node, "remapped_rows", "remapped_row_unc")),
            "pending": to_bool(value(node, "remapped_rows", "remapped_row_pending")),
            "failure": to_bool(value(node, "remapped_rows", "remapped_row_failure")),
        },
        "power_limit_w": {
            # "current_power_limit" since R535; older drivers: "power_limit" / "enforced_power_limit"
            "current": to_float(first(power, ("current_power_limit",), ("power_limit",),
                                      ("enforced_power_limit",))),
            "default": to_float(value(power, "default_power_limit")),
            "max": to_float(value(power, "max_power_limit")),
        },
        "clocks_max_mhz": {
            "graphics": to_int(value(node, "max_clocks", "graphics_clock")),
            "sm": to_int(value(node, "max_clocks", "sm_clock")),
            "memory": to_int(value(node, "max_clocks", "mem_clock")),
        },
        "clocks_applications_mhz": {
            "graphics": to_int(value(node, "applications_clocks", "graphics_clock")),
            "memory": to_int(value(node, "applications_clocks", "mem_clock")),
        },
        "pcie": {
            "gen_current": to_int(value(link, "pcie_gen", "current_link_gen")),
            "gen_max": to_int(value(link, "pcie_gen", "max_link_gen")),
            "width_current": to_int(value(link, "link_widths", "current_link_width")),
            "width_max": to_int(value(link, "link_widths", "max_link_width")),
        },
        "throttle_reasons": _active_reasons(section(node, "clocks_event_reasons", "clocks_throttle_reasons")),
        "volatile": {
            "performance_state": text(value(node, "performance_state")),
            "temperature_c": to_int(value(node, "temperature", "gpu_temp")),
            "memory_temperature_c": to_int(value(node, "temperature", "memory_temp")),
            "power_draw_w": to_float(first(power, ("instant_power_draw",), ("power_draw",))),
            "clocks_mhz": {
                "graphics": to_int(value(node, "clocks", "graphics_clock")),
                "sm": to_int(value(node, "clocks", "sm_clock")),
                "memory": to_int(value(node, "clocks", "mem_clock")),
            },
            "utilization_pct": {
                "gpu": to_int(value(node, "utilization", "gpu_util")),
                "memory": to_int(value(node, "utilization", "memory_util")),
            },
        },
    })
    return gpu


def _ecc_counts(counts: ET.Element | None) -> dict:
    if counts is None:
        return ecc_counts()
    # since R550 the SRAM uncorrectable count is split by detection (parity, SEC-DED), as in -q
    split = [to_int(value(counts, tag)) for tag in ("sram_uncorrectable_parity", "sram_uncorrectable_secded")]
    split = [n for n in split if n is not None]
    return ecc_counts(
        sram_correctable=to_int(value(counts, "sram_correctable")),
        sram_uncorrectable=sum(split) if split else to_int(value(counts, "sram_uncorrectable")),
        dram_correctable=to_int(value(counts, "dram_correctable")),
        dram_uncorrectable=to_int(value(counts, "dram_uncorrectable")),
    )


def _active_reasons(reasons: ET.Element | None) -> list[str] | None:
    """Names of the reasons marked Active, as `nvidia-smi -q` and NVML name them here."""
    if reasons is None:
        return None
    active = []
    for child in reasons:
        name = child.tag
        for prefix in _REASON_PREFIXES:
            name = name.removeprefix(prefix)
        if to_bool((child.text or "").strip()) is True:
            active.append(_REASON_NAMES.get(name, name))
    return sorted(active)
