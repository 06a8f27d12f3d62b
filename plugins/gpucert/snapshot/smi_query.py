"""Parser for `nvidia-smi -q`: indentation tree first, then the snapshot fields picked from it.

The tree step knows nothing about field names, so a driver that adds, drops or reorders sections
still parses; the picking step lists the spellings each field has had across driver releases
("Clocks Event Reasons" was "Clocks Throttle Reasons", "GPU Power Readings" was "Power Readings").
"""

from __future__ import annotations

import re

from .schema import ecc_counts, empty_gpu
from .values import snake, text, to_bool, to_float, to_int

# "Key     : value"; a line with no " : " is a section header ("ECC Errors", "GPU 0000:01:00.0").
_KEY_VALUE = re.compile(r"^(?P<key>.+?)\s+:(?:\s+(?P<value>.*))?$")
_GPU_HEADER = re.compile(r"^GPU\s+(?P<bus>[0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f]+)$")
# A key that carries a value *and* has indented children ("HW Slowdown : Not Active" with its
# thermal/power-brake sub-reasons) becomes a section whose own value sits under this key.
SELF = ""


def parse_tree(raw: str) -> dict:
    """Nested dicts by indentation; leaves are the raw value strings. Repeated keys in one
    section keep the first and number the rest ("Key (2)") so nothing is silently overwritten."""
    root: dict = {}
    # Each entry: (indent of the line that owns the container, container, key of a leaf that
    # may still turn into a section when an indented child follows it).
    stack: list[tuple[int, dict, str | None]] = [(-1, root, None)]
    for line in raw.expandtabs(4).splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("====="):
            continue
        indent = len(line) - len(line.lstrip())
        while stack[-1][0] >= indent:
            stack.pop()
        owner_indent, container, leaf_key = stack[-1]
        if leaf_key is not None:  # first child of a key that had a value: promote it
            promoted = {SELF: container[leaf_key]}
            container[leaf_key] = promoted
            stack[-1] = (owner_indent, promoted, None)
            container = promoted
        match = _KEY_VALUE.match(stripped)
        if match:
            key = _unique_key(container, match.group("key").strip())
            container[key] = (match.group("value") or "").strip()
            stack.append((indent, container, key))
        else:
            section: dict = {}
            container[_unique_key(container, stripped)] = section
            stack.append((indent, section, None))
    return root


def _unique_key(container: dict, key: str) -> str:
    if key not in container:
        return key
    n = 2
    while f"{key} ({n})" in container:
        n += 1
    return f"{key} ({n})"


def lookup(node, *path: str):
    """Walk section names case-insensitively (nvidia-smi's capitalisation and trailing spaces
    vary); a section asked for as a value yields its own value. None when any step is absent."""
    for name in path:
        if not isinstance(node, dict):
            return None
        wanted = name.strip().lower()
        node = next((v for k, v in node.items() if k.strip().lower() == wanted), None)
    if isinstance(node, dict) and SELF in node:
        return node[SELF]
    return node


def first(node, *paths: tuple[str, ...]):
    """The first of several spellings of a field that is present."""
    for path in paths:
        found = lookup(node, *path)
        if found is not None:
            return found
    return None


def parse(raw: str) -> dict:
    """{"driver": {"version", "cuda_driver_version"}, "gpus": [...]} from `nvidia-smi -q`."""
    tree = parse_tree(raw)
    gpu_nodes = gpu_blocks(tree)
    return {
        "driver": {
            "version": text(lookup(tree, "Driver Version")),
            "cuda_driver_version": text(lookup(tree, "CUDA Version")),
        },
        "gpus": [_gpu(index, bus_id, node) for index, (bus_id, node) in enumerate(gpu_nodes)],
    }


def gpu_blocks(tree: dict) -> list[tuple[str, dict]]:
    """(PCI bus id, section) of each "GPU 0000:..." section, in the file's order."""
    return [(match.group("bus"), node) for key, node in tree.items()
            if isinstance(node, dict) and (match := _GPU_HEADER.match(key))]


def _gpu(index: int, bus_id: str, node: dict) -> dict:
    gpu = empty_gpu(index)
    gpu.update({
        "name": text(lookup(node, "Product Name")),
        "uuid": text(lookup(node, "GPU UUID")),
        "serial": text(lookup(node, "Serial Number")),
        "pci_bus_id": text(lookup(node, "PCI", "Bus Id")) or bus_id,
        "memory_total_mib": to_int(lookup(node, "FB Memory Usage", "Total")),
        "vbios": text(lookup(node, "VBIOS Version")),
        "architecture": text(lookup(node, "Product Architecture")),
        "persistence_mode": to_bool(lookup(node, "Persistence Mode")),
        "compute_mode": text(lookup(node, "Compute Mode")),
        "mig_mode": {
            "current": to_bool(lookup(node, "MIG Mode", "Current")),
            "pending": to_bool(lookup(node, "MIG Mode", "Pending")),
        },
        "ecc": {
            "mode_current": to_bool(lookup(node, "ECC Mode", "Current")),
            "mode_pending": to_bool(lookup(node, "ECC Mode", "Pending")),
            "volatile": _ecc_counts(lookup(node, "ECC Errors", "Volatile")),
            "aggregate": _ecc_counts(lookup(node, "ECC Errors", "Aggregate")),
        },
        "retired_pages": {
            "single_bit": to_int(lookup(node, "Retired Pages", "Single Bit ECC")),
            "double_bit": to_int(lookup(node, "Retired Pages", "Double Bit ECC")),
            "pending": to_bool(first(node, ("Retired Pages", "Pending Page Blacklist"),
                                     ("Retired Pages", "Pending Page Retirement"),
                                     ("Retired Pages", "Pending"))),
        },
        "remapped_rows": {
            "correctable": to_int(lookup(node, "Remapped Rows", "Correctable Error")),
            "uncorrectable": to_int(lookup(node, "Remapped Rows", "Uncorrectable Error")),
            "pending": to_bool(lookup(node, "Remapped Rows", "Pending")),
            "failure": to_bool(lookup(node, "Remapped Rows", "Remapping Failure Occurred")),
        },
        "power_limit_w": _power_limits(first(node, ("GPU Power Readings",), ("Power Readings",))),
        "clocks_max_mhz": {
            "graphics": to_int(lookup(node, "Max Clocks", "Graphics")),
            "sm": to_int(lookup(node, "Max Clocks", "SM")),
            "memory": to_int(lookup(node, "Max Clocks", "Memory")),
        },
        "clocks_applications_mhz": {
            "graphics": to_int(lookup(node, "Applications Clocks", "Graphics")),
            "memory": to_int(lookup(node, "Applications Clocks", "Memory")),
        },
        "pcie": {
            "gen_current": to_int(lookup(node, "PCI", "GPU Link Info", "PCIe Generation", "Current")),
            "gen_max": to_int(lookup(node, "PCI", "GPU Link Info", "PCIe Generation", "Max")),
            "width_current": to_int(lookup(node, "PCI", "GPU Link Info", "Link Width", "Current")),
            "width_max": to_int(lookup(node, "PCI", "GPU Link Info", "Link Width", "Max")),
        },
        "throttle_reasons": _active_reasons(
            first(node, ("Clocks Event Reasons",), ("Clocks Throttle Reasons",))),
        "volatile": {
            "performance_state": text(lookup(node, "Performance State")),
            "temperature_c": to_int(lookup(node, "Temperature", "GPU Current Temp")),
            "memory_temperature_c": to_int(lookup(node, "Temperature", "Memory Current Temp")),
            "power_draw_w": to_float(first(node, ("GPU Power Readings", "Instantaneous Power Draw"),
                                           ("GPU Power Readings", "Power Draw"),
                                           ("Power Readings", "Power Draw"))),
            "clocks_mhz": {
                "graphics": to_int(lookup(node, "Clocks", "Graphics")),
                "sm": to_int(lookup(node, "Clocks", "SM")),
                "memory": to_int(lookup(node, "Clocks", "Memory")),
            },
            "utilization_pct": {
                "gpu": to_int(lookup(node, "Utilization", "GPU")),
                "memory": to_int(lookup(node, "Utilization", "Memory")),
            },
        },
    })
    return gpu


def _ecc_counts(section) -> dict:
    if not isinstance(section, dict):
        return ecc_counts()
    # Since R550 the SRAM uncorrectable count is split by detection (parity, SEC-DED); older
    # drivers print one "SRAM Uncorrectable" line. Both mean the same counter to an operator.
    split = [to_int(lookup(section, name)) for name in
             ("SRAM Uncorrectable Parity", "SRAM Uncorrectable SEC-DED")]
    split = [n for n in split if n is not None]
    sram_uncorrectable = sum(split) if split else to_int(lookup(section, "SRAM Uncorrectable"))
    return ecc_counts(
        sram_correctable=to_int(lookup(section, "SRAM Correctable")),
        sram_uncorrectable=sram_uncorrectable,
        dram_correctable=to_int(lookup(section, "DRAM Correctable")),
        dram_uncorrectable=to_int(lookup(section, "DRAM Uncorrectable")),
    )


def _power_limits(section) -> dict:
    return {
        # "Current Power Limit" since R535; older drivers call the same value "Power Limit".
        "current": to_float(first(section, ("Current Power Limit",), ("Power Limit",),
                                  ("Enforced Power Limit",))),
        "default": to_float(lookup(section, "Default Power Limit")),
        "max": to_float(lookup(section, "Max Power Limit")),
    }


def _active_reasons(section) -> list[str] | None:
    """Names of the reasons marked Active, nested ones (HW Thermal under HW Slowdown) included."""
    if not isinstance(section, dict):
        return None
    active: list[str] = []

    def walk(node: dict) -> None:
        for key, value in node.items():
            if key == SELF:
                continue
            if to_bool(lookup(node, key)) is True:
                active.append(snake(key))
            if isinstance(value, dict):
                walk(value)

    walk(section)
    return sorted(active)
