"""Parser for `nvidia-smi topo -m`: the GPU/NIC connection matrix and each GPU's CPU/NUMA affinity.

The header names the device columns, then the per-row attribute columns ("CPU Affinity",
"NUMA Affinity", and since R535 "GPU NUMA ID"). Cells are separated by tabs *and* padded with
extra tabs, so rows are split on whitespace (no cell contains a space) and matched to the header
by position: label, one cell per device column, then the attribute columns in order.
"""

from __future__ import annotations

import re

from .values import strip_ansi, text

_NIC_LEGEND = re.compile(r"^\s*(?P<nic>NIC\d+)\s*:\s*(?P<name>\S+)\s*$")


def parse(raw: str) -> dict:
    """{"matrix": {"GPU0": {"GPU0": "X", "GPU1": "NV18"}, ...}, "cpu_affinity": {"GPU0": "0-31"},
    "numa_affinity": {"GPU0": "0"}, "nics": {"NIC0": "mlx5_0"}}. Empty dicts when nothing parses."""
    lines = strip_ansi(raw).splitlines()
    result: dict = {"matrix": {}, "cpu_affinity": {}, "numa_affinity": {}, "nics": {}}
    header_at = next((i for i, line in enumerate(lines) if "Affinity" in line), None)
    if header_at is None:
        return result
    header = lines[header_at]
    devices, attributes = _header_columns(header)
    for line in lines[header_at + 1:]:
        cells = line.split()
        if not cells or cells[0] not in devices:
            if line.strip().startswith("Legend"):
                break
            continue
        label, links, rest = cells[0], cells[1:1 + len(devices)], cells[1 + len(devices):]
        result["matrix"][label] = dict(zip(devices, links))
        row_attributes = dict(zip(attributes, rest))
        if "CPU Affinity" in row_attributes:
            result["cpu_affinity"][label] = text(row_attributes["CPU Affinity"])
        if "NUMA Affinity" in row_attributes:
            result["numa_affinity"][label] = text(row_attributes["NUMA Affinity"])
    for line in lines:
        match = _NIC_LEGEND.match(line)
        if match:
            result["nics"][match.group("nic")] = match.group("name")
    return result


def device_columns(raw: str) -> list[str]:
    """The device column names of the header (GPUs and NICs); [] without a header."""
    lines = strip_ansi(raw).splitlines()
    header = next((line for line in lines if "Affinity" in line), None)
    return _header_columns(header)[0] if header is not None else []


def _header_columns(header: str) -> tuple[list[str], list[str]]:
    """Device column names (everything before "CPU Affinity") and attribute column names."""
    attribute_start = header.find("CPU Affinity")
    if attribute_start < 0:
        attribute_start = header.find("Affinity")
    devices = header[:attribute_start].split()
    # Attribute names contain spaces, so they are separated by tabs (or runs of 2+ spaces).
    attributes = [name.strip() for name in re.split(r"\t+| {2,}", header[attribute_start:])
                  if name.strip()]
    return devices, attributes
