"""Captured nvidia-smi outputs checked before they become a snapshot.

The parsers are lenient on purpose (a driver that adds or renames a field still parses), so on
their own they turn a capture cut after its first GPU into a healthy 1-GPU node: a new profile
with no baselines, nothing compared, exit 0. These checks stand between the files and the
parsers. What makes the snapshot wrong — a required file missing, empty, binary, not UTF-8, not
the command's output, cut short so that GPUs are lost, files that disagree about the GPUs — is
a SnapshotError naming the file and what is wrong (one line, exit 4). What leaves it usable but
partial (the last GPU's section cut after its identity) comes back as a problem the snapshot
carries in `incomplete`, which health() fails.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import smi_query, smi_table, smi_topo, smi_xml
from .profile import natural_key
from .schema import QUERY_FILE, SnapshotError
from .values import to_int

# Sections every `nvidia-smi -q` GPU block has had since the R3xx drivers, whatever the board:
# a block without one of them was cut short.
EVERY_GPU_HAS = ("PCI", "FB Memory Usage", "Processes")
NUL = b"\0"
_LINK_KIND = re.compile(r"^[A-Z][A-Z0-9]*$")
_NVLINK_HEADER = re.compile(r"^GPU\s+(?P<index>\d+)\s*:.*?(?:\(UUID:\s*(?P<uuid>[^)\s]+)\))?\s*$")


def read(path: Path) -> str | None:
    """The file's text, or None when it is absent. A file that cannot be read, holds binary
    data or is not UTF-8 is an error naming it: a NUL byte or a stray encoding would otherwise
    parse as "no GPUs" without a word."""
    if not path.exists():
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SnapshotError(f"{path}: cannot be read ({err.strerror or err})") from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # what PowerShell's `>` writes
        raise SnapshotError(f"{path}: UTF-16 text, not UTF-8 (PowerShell's `>` writes UTF-16): "
                            "capture it again as UTF-8")
    if NUL in data:
        raise SnapshotError(f"{path}: binary data (NUL byte at offset {data.index(NUL)}), "
                            "not nvidia-smi output")
    try:
        return data.decode("utf-8-sig")  # a BOM (Windows editors) is not content
    except UnicodeDecodeError as err:
        raise SnapshotError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
                            f"{err.start}), not nvidia-smi output") from None


def check_query(path: Path, raw: str) -> list[str]:
    """`nvidia-smi -q`: raises when GPUs are lost or unknown; returns what is only partial."""
    if not raw.strip():
        raise SnapshotError(f"{path}: empty (the GPUs, and so the profile, come from it)")
    tree = smi_query.parse_tree(raw)
    attached_text = smi_query.lookup(tree, "Attached GPUs")
    if attached_text is None:
        raise SnapshotError(f"{path}: not `nvidia-smi -q` output (no 'Attached GPUs' line)")
    attached = to_int(attached_text)
    if attached is None or attached < 0:
        raise SnapshotError(f"{path}: 'Attached GPUs' is {attached_text!r}, not a number")
    blocks = smi_query.gpu_blocks(tree)
    if len(blocks) < attached:
        raise SnapshotError(f"{path}: truncated: 'Attached GPUs : {attached}' but {len(blocks)} GPU "
                            f"section(s) ({_names(blocks) or 'none'})")
    if len(blocks) > attached:
        raise SnapshotError(f"{path}: {len(blocks)} GPU sections ({_names(blocks)}) but "
                            f"'Attached GPUs : {attached}': not one capture")
    for bus, node in blocks:
        for field in ("Product Name", "GPU UUID"):
            if not smi_query.lookup(node, field):
                raise SnapshotError(f"{path}: GPU {bus} has no {field}: truncated or garbled")
    # a block without a section every GPU has was cut short (a truncated file loses the last
    # block's tail). Not compared with its siblings: MIG or a mixed node adds sections to some.
    problems = []
    for bus, node in blocks:
        lacking = [key for key in EVERY_GPU_HAS if smi_query.lookup(node, key) is None]
        if lacking:
            problems.append(f"{path.name}: GPU {bus} was cut short (no {', '.join(lacking)} section): "
                            "its fields from there on are unknown")
    return problems


def check_query_xml(path: Path, raw: str) -> None:
    """`nvidia-smi -q -x`: raises when it is not that output or GPUs are lost or unknown. (A cut
    XML file is not well-formed: it cannot be read in part, as the text can.)"""
    if not raw.strip():
        raise SnapshotError(f"{path}: empty (the GPUs, and so the profile, come from it)")
    try:
        root = smi_xml.parse_root(raw)
    except smi_xml.XmlError as err:
        raise SnapshotError(f"{path}: {err}") from None
    attached_text = smi_xml.value(root, "attached_gpus")
    if attached_text is None:
        raise SnapshotError(f"{path}: not `nvidia-smi -q -x` output (no <attached_gpus> element)")
    attached = to_int(attached_text)
    if attached is None or attached < 0:
        raise SnapshotError(f"{path}: <attached_gpus> is {attached_text!r}, not a number")
    gpus = smi_xml.gpu_elements(root)
    names = ", ".join(gpu.get("id") or "?" for gpu in gpus)
    if len(gpus) < attached:
        raise SnapshotError(f"{path}: truncated: <attached_gpus>{attached}</attached_gpus> but {len(gpus)} "
                            f"<gpu> element(s) ({names or 'none'})")
    if len(gpus) > attached:
        raise SnapshotError(f"{path}: {len(gpus)} <gpu> elements ({names}) but "
                            f"<attached_gpus>{attached}</attached_gpus>: not one capture")
    for gpu in gpus:
        for tag in ("product_name", "uuid"):
            if not smi_xml.value(gpu, tag):
                raise SnapshotError(f"{path}: GPU {gpu.get('id') or '?'} has no <{tag}>: garbled")


def check_same_gpus(path: Path, raw: str, gpus: list[dict], read_from: str) -> None:
    """`nvidia-smi -q` text captured beside the XML the GPUs are read from: the same GPUs (UUIDs
    in order), or the two are not one node's capture."""
    check_query(path, raw)
    here = [gpu["uuid"] for gpu in smi_query.parse(raw)["gpus"]]
    there = [gpu["uuid"] for gpu in gpus]
    if here != there:
        raise SnapshotError(f"{path}: GPUs {', '.join(here) or 'none'} here, {', '.join(there) or 'none'} in "
                            f"{read_from}: captured on different nodes or at different times")


def _names(blocks) -> str:
    return ", ".join(bus for bus, _ in blocks)


def check_topology(path: Path, raw: str, gpu_count: int, query_name: str = QUERY_FILE) -> None:
    """`nvidia-smi topo -m`: a square GPU matrix of known link kinds, as many GPUs as -q."""
    if not raw.strip():
        raise SnapshotError(f"{path}: empty (with {gpu_count} GPUs the profile's interconnect comes from it)")
    topology = smi_topo.parse(raw)
    columns = [name for name in smi_topo.device_columns(raw) if name.startswith("GPU")]
    if not topology["matrix"] and not columns:
        raise SnapshotError(f"{path}: not `nvidia-smi topo -m` output (no header line with 'CPU Affinity')")
    rows = sorted((label for label in topology["matrix"] if label.startswith("GPU")), key=natural_key)
    if rows != columns:
        raise SnapshotError(f"{path}: matrix not square: GPU columns {', '.join(columns) or 'none'}, "
                            f"GPU rows {', '.join(rows) or 'none'} (truncated?)")
    for label in rows:
        cells = topology["matrix"][label]
        if any(column not in cells for column in columns):
            raise SnapshotError(f"{path}: matrix not square: row {label} has {len(cells)} of "
                                f"{len(smi_topo.device_columns(raw))} cells (truncated?)")
        for column in columns:
            link = cells[column]
            # a link kind a newer driver adds still passes (NV<n>, SYS, … all look like this)
            if (column == label) != (link == "X") or not _LINK_KIND.match(link):
                raise SnapshotError(f"{path}: {label}→{column} is {link!r}, not a link `topo -m` prints")
    if len(columns) != gpu_count:
        raise SnapshotError(f"{path}: shows {len(columns)} GPU(s), {query_name} {gpu_count}: "
                            "captured on different nodes or at different times")


def check_nvlink(path: Path, raw: str, gpus: list[dict], query_name: str = QUERY_FILE) -> None:
    """`nvidia-smi nvlink -s`: empty means no NVLink; otherwise one block per GPU of -q, same UUIDs."""
    if not raw.strip():
        return
    headers = [match for line in raw.splitlines() if (match := _NVLINK_HEADER.match(line.strip()))]
    if not headers:
        raise SnapshotError(f"{path}: not `nvidia-smi nvlink -s` output (no 'GPU <n>:' line)")
    indices = [int(match.group("index")) for match in headers]
    if indices != list(range(len(gpus))):
        shown = ", ".join(map(str, indices))
        what = "truncated" if indices == list(range(len(indices))) and len(indices) < len(gpus) else "mismatched"
        raise SnapshotError(f"{path}: {what}: blocks for GPU {shown}, {query_name} has {len(gpus)} GPU(s)")
    for match, gpu in zip(headers, gpus):
        uuid = match.group("uuid")
        if uuid and gpu.get("uuid") and uuid != gpu["uuid"]:
            raise SnapshotError(f"{path}: GPU {match.group('index')} is {uuid} here, {gpu['uuid']} in "
                                f"{query_name}: captured on different nodes")


def check_table(path: Path, raw: str) -> None:
    """Plain `nvidia-smi`: optional, but when present its banner must name the driver."""
    if not raw.strip():
        raise SnapshotError(f"{path}: empty")
    if smi_table.parse(raw)["version"] is None:
        raise SnapshotError(f"{path}: not `nvidia-smi` output (no 'Driver Version:' banner)")
