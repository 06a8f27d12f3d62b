"""Assemble a snapshot: live (NVML, then nvidia-smi where NVML lacks a field) or from captured
nvidia-smi outputs. An optional source that is missing leaves its part null and says so in
`notes`; a capture that would change the profile without a word (capture.py) is a SnapshotError,
and what was read only in part is listed in `incomplete`, which fails the stack's health.

Where the GPUs come from nvidia-smi (no NVML live, or a capture), `nvidia-smi -q -x` (XML,
smi_xml) is read where it exists — live it is asked first, and a failing or unusable answer falls
back to the text of `nvidia-smi -q` with a note; a captured nvidia-smi-q.xml is read instead of
nvidia-smi-q.txt (which, captured beside it, must name the same GPUs). Both give the same fields."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from . import capture, host, nvml, smi, smi_nvlink, smi_query, smi_table, smi_topo, smi_xml, software
from .schema import (CAPTURE_FILES, HOST_FILES, NVLINK_FILE, QUERY_FILE, QUERY_XML_FILE, SCHEMA_VERSION,
                     TABLE_FILE, TOPO_FILE, SnapshotError)

# What is lost when a captured file is absent.
_WITHOUT = {
    QUERY_FILE: "GPU details skipped",
    TOPO_FILE: "topology skipped",
    NVLINK_FILE: "NVLink status skipped",
    TABLE_FILE: "driver version unknown",
}


def collect(from_dir: str | Path | None = None) -> dict:
    snapshot = collect_captured(Path(from_dir)) if from_dir is not None else collect_live()
    # said where the run's notes are read too, not only as the stack check's health finding
    snapshot["notes"].extend(f"incomplete snapshot: {problem}" for problem in snapshot["incomplete"])
    return snapshot


def _empty(source: str) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "taken_at": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "source": source,
        "gpu_found": False,
        "notes": [],
        "incomplete": [],  # what could not be read in full: each one fails health()
        "host": None,
        "driver": {"version": None, "cuda_driver_version": None},
        "software": None,
        "gpus": [],
        "topology": None,
    }


def collect_captured(directory: Path) -> dict:
    if not directory.is_dir():
        raise SnapshotError(f"{directory}: not a directory")
    # An empty file is a capture too: `nvidia-smi nvlink -s` prints nothing without NVLink.
    texts = {name: capture.read(directory / name) for name in CAPTURE_FILES}
    xml = capture.read(directory / QUERY_XML_FILE)
    if all(content is None for content in texts.values()) and xml is None:
        raise SnapshotError(f"{directory}: no captured nvidia-smi output "
                            f"(expected any of {', '.join(CAPTURE_FILES + (QUERY_XML_FILE,))})")
    query, incomplete = _check_captured(directory, texts, xml)
    snapshot = _empty(f"captured:{directory.resolve().name}")
    notes = snapshot["notes"]
    for name, content in texts.items():
        # -q names the driver without the banner; -q -x stands for -q
        if content is None and name != TABLE_FILE and not (name == QUERY_FILE and xml is not None):
            notes.append(f"{name} not captured: {_WITHOUT[name]}")
    _fill_from_smi(snapshot, query, texts)
    snapshot["incomplete"] = incomplete
    snapshot["host"] = host.captured(directory)
    if snapshot["host"] is None:
        notes.append(f"host not captured ({', '.join(HOST_FILES)} absent): host is null")
    notes.append("software versions are not part of a capture: software is null")
    return snapshot


def _check_captured(directory: Path, texts: dict, xml: str | None) -> tuple[dict, list[str]]:
    """Raise for a capture that is wrong (file named, what is wrong); return the GPUs' query
    (nvidia-smi-q.xml where captured, else nvidia-smi-q.txt) parsed, and what is partial."""
    query = texts[QUERY_FILE]
    if xml is not None:
        read_from = QUERY_XML_FILE
        capture.check_query_xml(directory / QUERY_XML_FILE, xml)
        parsed, incomplete = smi_xml.parse(xml), []
        if query is not None:
            capture.check_same_gpus(directory / QUERY_FILE, query, parsed["gpus"], QUERY_XML_FILE)
    elif query is None:
        raise SnapshotError(f"{directory / QUERY_FILE}: missing (the GPUs, and so the profile, come from "
                            f"it: capture `nvidia-smi -q > {QUERY_FILE}` or `nvidia-smi -q -x > {QUERY_XML_FILE}`)")
    else:
        read_from = QUERY_FILE
        incomplete = capture.check_query(directory / QUERY_FILE, query)
        parsed = smi_query.parse(query)
    topo = texts[TOPO_FILE]
    if topo is not None:
        capture.check_topology(directory / TOPO_FILE, topo, len(parsed["gpus"]), read_from)
    elif len(parsed["gpus"]) > 1:
        raise SnapshotError(f"{directory / TOPO_FILE}: missing (with {len(parsed['gpus'])} GPUs the profile's "
                            f"interconnect comes from it: capture `nvidia-smi topo -m > {TOPO_FILE}`)")
    if texts[NVLINK_FILE] is not None:
        capture.check_nvlink(directory / NVLINK_FILE, texts[NVLINK_FILE], parsed["gpus"], read_from)
    if texts[TABLE_FILE] is not None:
        capture.check_table(directory / TABLE_FILE, texts[TABLE_FILE])
    return parsed, incomplete


def _fill_from_smi(snapshot: dict, parsed: dict | None, texts: dict) -> None:
    """driver, gpus, topology and gpu_found from nvidia-smi's query (`parsed`: smi_query or
    smi_xml's parse, None without one) and texts (captured or just run)."""
    table = texts.get(TABLE_FILE)
    nvlink_text, topo_text = texts.get(NVLINK_FILE), texts.get(TOPO_FILE)
    driver = parsed["driver"] if parsed else {"version": None, "cuda_driver_version": None}
    if table:
        banner = smi_table.parse(table)
        driver = {key: driver[key] or banner[key] for key in driver}
    links = smi_nvlink.parse(nvlink_text) if nvlink_text is not None else None
    gpus = parsed["gpus"] if parsed else None
    for gpu in gpus or []:
        if links is not None:
            gpu["nvlink"] = links.get(gpu["index"], [])
    snapshot["driver"] = driver
    snapshot["gpus"] = gpus
    snapshot["topology"] = smi_topo.parse(topo_text) if topo_text is not None else None
    # Without -q the GPUs are unknown (null), yet the other outputs still show whether any exist.
    snapshot["gpu_found"] = bool(gpus) or bool(links) or bool(
        snapshot["topology"] and snapshot["topology"]["matrix"])


def collect_live(pynvml_module=None, smi_runner=smi.run) -> dict:
    """`pynvml_module` and `smi_runner` are the seams tests replace; None imports pynvml."""
    snapshot = _empty("live")
    snapshot["host"] = host.live()
    snapshot["software"] = software.collect()
    notes = snapshot["notes"]
    session = smi.Session(smi_runner)
    try:
        reading = nvml.read(pynvml_module if pynvml_module is not None else nvml.import_pynvml())
    except nvml.NvmlUnavailable as err:
        _live_without_nvml(snapshot, session, nvml_reason=str(err),
                           broken=isinstance(err, nvml.NvmlBroken))
        return snapshot
    snapshot["driver"] = reading["driver"]
    snapshot["gpus"] = reading["gpus"]
    snapshot["gpu_found"] = bool(reading["gpus"])
    notes.extend(f"NVML: {problem}" for problem in reading["problems"])
    snapshot["incomplete"].extend(f"NVML: {problem}" for problem in reading["incomplete"])
    if not reading["gpus"]:
        notes.append("NVML works but reports no GPUs")
        return snapshot
    topo = _run(session, smi.TOPOLOGY, "topology skipped", notes)
    snapshot["topology"] = smi_topo.parse(topo) if topo is not None else None
    if _missing_link_speeds(reading["gpus"]):
        nvlink_text = _run(session, smi.NVLINK_STATUS, "NVLink speeds unknown", notes)
        if nvlink_text:
            _fill_link_speeds(reading["gpus"], smi_nvlink.parse(nvlink_text))
    return snapshot


def _live_without_nvml(snapshot: dict, session: smi.Session, nvml_reason: str, broken: bool = False) -> None:
    """`broken`: NVML started, then failed; a driver that is there but cannot list its GPUs is
    not a GPU-less machine, so unless nvidia-smi lists them the snapshot is incomplete."""
    notes = snapshot["notes"]
    parsed, xml_problem = _live_query_xml(session)
    if parsed is not None:
        command, problems = "nvidia-smi -q -x", []
    else:
        query = session.get(smi.QUERY)
        if query is None:
            notes.append(f"no NVIDIA driver found (NVML: {nvml_reason}; {session.failures[-1]}); "
                         "GPU fields skipped")
            if broken:
                snapshot["incomplete"].append(f"{nvml_reason}, and nvidia-smi -q failed too "
                                              f"({session.failures[-1]}): the GPUs are unknown")
            return
        command = "nvidia-smi -q"
        problems, parsed = _check_live_query(query)
    notes.append(f"NVML unavailable ({nvml_reason}): GPU fields read from {command}")
    if xml_problem:
        notes.append(f"{xml_problem}: the text of nvidia-smi -q read instead")
    texts = {
        TOPO_FILE: _run(session, smi.TOPOLOGY, "topology skipped", notes),
        NVLINK_FILE: _run(session, smi.NVLINK_STATUS, "NVLink status skipped", notes),
    }
    snapshot["incomplete"].extend(problems + _check_live(texts, parsed["gpus"] if parsed else [], command))
    _fill_from_smi(snapshot, parsed, texts)


def _live_query_xml(session: smi.Session) -> tuple[dict | None, str | None]:
    """`nvidia-smi -q -x` parsed, or (None, why not) when it failed or is not usable XML — the
    caller then reads the text form; (None, None) when nvidia-smi cannot run at all."""
    before = len(session.failures)
    raw = session.get(smi.QUERY_XML)
    if raw is None:
        return None, (None if session.dead else session.failures[-1] if len(session.failures) > before else None)
    try:
        capture.check_query_xml(Path("nvidia-smi -q -x"), raw)
        return smi_xml.parse(raw), None
    except SnapshotError as err:
        return None, str(err)


def _check_live_query(query: str) -> tuple[list[str], dict | None]:
    """The capture checks on `nvidia-smi -q`'s live text: here a wrong output is not bad input but
    a node that could not be read in full, so each problem is kept, not raised."""
    try:
        return capture.check_query(Path("nvidia-smi -q"), query), smi_query.parse(query)
    except SnapshotError as err:
        return [str(err)], smi_query.parse(query)


def _check_live(texts: dict, gpus: list[dict], command: str) -> list[str]:
    """Topology and NVLink checked against the GPUs read (kept as problems, as above)."""
    try:
        if texts[TOPO_FILE] is not None:
            capture.check_topology(Path("nvidia-smi topo -m"), texts[TOPO_FILE], len(gpus), command)
        if texts[NVLINK_FILE] is not None:
            capture.check_nvlink(Path("nvidia-smi nvlink -s"), texts[NVLINK_FILE], gpus, command)
    except SnapshotError as err:
        return [str(err)]
    return []


def _run(session: smi.Session, args: tuple[str, ...], consequence: str, notes: list) -> str | None:
    """Run one nvidia-smi command; a new failure becomes one note saying what it cost."""
    before = len(session.failures)
    output = session.get(args)
    if len(session.failures) > before:
        notes.append(f"{session.failures[-1]}: {consequence}")
    return output


def _missing_link_speeds(gpus: list[dict]) -> bool:
    return any(link["active"] and link["speed_gbps"] is None
               for gpu in gpus for link in gpu["nvlink"] or [])


def _fill_link_speeds(gpus: list[dict], links_by_gpu: dict[int, list[dict]]) -> None:
    """NVML knew which links are up but not their speed (older drivers): take it from nvlink -s."""
    for gpu in gpus:
        speeds = {link["link"]: link["speed_gbps"] for link in links_by_gpu.get(gpu["index"], [])}
        for link in gpu["nvlink"] or []:
            if link["active"] and link["speed_gbps"] is None:
                link["speed_gbps"] = speeds.get(link["link"])
