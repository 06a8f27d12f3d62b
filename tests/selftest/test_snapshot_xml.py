"""`nvidia-smi -q -x`: the XML parser on the lent H200's own capture (docs/evidence/issue-14-newcomer/
h200: `nvidia-smi -q -x` and, a second later, `nvidia-smi -q`), the same fields as the text parser,
the spellings of older schema versions, a captured nvidia-smi-q.xml, and the live path — XML first,
the text of `nvidia-smi -q` when the XML fails — with only the nvidia-smi binary faked (a script on
PATH)."""

import re
import shutil
import sys
from pathlib import Path

import pytest

from gpucert import snapshot
from gpucert.cli import main
from gpucert.snapshot import SnapshotError, smi_query, smi_xml
from gpucert.snapshot.collect import collect_live

from .captures import FIXTURE
from .device_runs import H100_SMI_TEXT, H100_SMI_XML, H200_SMI_TEXT, H200_SMI_XML, text
from .test_snapshot_collect import NoNvml
from .test_snapshot_inputs import pytest_stack

H200_XML = text(H200_SMI_XML)
H200_TEXT = text(H200_SMI_TEXT)
H200_UUID = "GPU-fdc826f6-000f-22fe-162d-18c3eb2cf4f2"
# read a second apart on a GPU busy with vLLM: the instants differ, nothing else may
READINGS = {"power_draw_w", "temperature_c", "utilization_pct"}


def test_h200_capture_fields():
    parsed = smi_xml.parse(H200_XML)
    assert parsed["driver"] == {"version": "580.159.04", "cuda_driver_version": "13.0"}
    gpu, = parsed["gpus"]
    assert (gpu["index"], gpu["name"], gpu["uuid"]) == (0, "NVIDIA H200", H200_UUID)
    assert (gpu["serial"], gpu["pci_bus_id"], gpu["vbios"]) == ("1653924185020", "00000000:00:06.0", "96.00.A5.00.1A")
    assert gpu["memory_total_mib"] == 143771 and gpu["architecture"] == "Hopper"
    assert gpu["persistence_mode"] is True and gpu["compute_mode"] == "Default"
    assert gpu["mig_mode"] == {"current": False, "pending": False}
    assert gpu["ecc"]["mode_current"] is True and gpu["ecc"]["aggregate"] == {
        "sram_correctable": 0, "sram_uncorrectable": 0, "dram_correctable": 0, "dram_uncorrectable": 0}
    assert gpu["retired_pages"] == {"single_bit": None, "double_bit": None, "pending": None}  # all N/A on HBM3e
    assert gpu["remapped_rows"] == {"correctable": 0, "uncorrectable": 0, "pending": False, "failure": False}
    assert gpu["power_limit_w"] == {"current": 700.0, "default": 700.0, "max": 700.0}
    assert gpu["clocks_max_mhz"] == {"graphics": 1980, "sm": 1980, "memory": 3201}
    assert gpu["clocks_applications_mhz"] == {"graphics": 1980, "memory": 3201}
    assert gpu["pcie"] == {"gen_current": 5, "gen_max": 5, "width_current": 16, "width_max": 16}
    assert gpu["throttle_reasons"] == []  # clocks_event_reasons, none active
    assert gpu["nvlink"] is None  # not in -q; from `nvlink -s` as with the text
    # instant_power_draw (v13), not average_power_draw (557.29 W) beside it
    assert gpu["volatile"] == {"performance_state": "P0", "temperature_c": 54, "memory_temperature_c": 42,
                               "power_draw_w": 584.37, "clocks_mhz": {"graphics": 1980, "sm": 1980, "memory": 3201},
                               "utilization_pct": {"gpu": 98, "memory": 4}}


def without_readings(parsed: dict, readings=READINGS) -> dict:
    return {**parsed, "gpus": [{**gpu, "volatile": {key: value for key, value in gpu["volatile"].items()
                                                    if key not in readings}} for gpu in parsed["gpus"]]}


def test_xml_and_text_of_one_node_give_the_same_fields():
    """The H200's two captures through the two parsers: every snapshot field equal but the three
    instants read a second apart, which stay close."""
    from_xml, from_text = smi_xml.parse(H200_XML), smi_query.parse(H200_TEXT)
    assert without_readings(from_xml) == without_readings(from_text)
    xml_now, text_now = from_xml["gpus"][0]["volatile"], from_text["gpus"][0]["volatile"]
    assert (xml_now["power_draw_w"], text_now["power_draw_w"]) == (584.37, 608.85)
    assert abs(xml_now["temperature_c"] - text_now["temperature_c"]) <= 1
    assert xml_now["utilization_pct"]["gpu"] == text_now["utilization_pct"]["gpu"] == 98


def test_an_idle_h100s_xml_and_text_give_the_same_fields():
    """Another GPU of another memory: the lent H100's two captures (idle, a moment apart) through
    the two parsers agree on every field but the instants, and the XML names its own card."""
    from_xml, from_text = smi_xml.parse(text(H100_SMI_XML)), smi_query.parse(text(H100_SMI_TEXT))
    instants = READINGS | {"memory_temperature_c"}  # 39 and 40 °C a moment apart
    assert without_readings(from_xml, instants) == without_readings(from_text, instants)
    gpu, = from_xml["gpus"]
    assert (gpu["name"], gpu["uuid"]) == ("NVIDIA H100 80GB HBM3", "GPU-965a55ff-2f6f-ad85-d9da-04ba3a9e37a8")
    assert gpu["memory_total_mib"] == 81559 and gpu["clocks_max_mhz"] == {"graphics": 1980, "sm": 1980, "memory": 2619}
    assert gpu["power_limit_w"]["current"] == 700.0 and gpu["throttle_reasons"] == []
    assert gpu["volatile"]["utilization_pct"] == {"gpu": 0, "memory": 0}


def as_schema(raw: str, version: int) -> str:
    """The H200's capture spelled as an older driver's schema writes the same fields: v12 (R535) has
    one `power_draw` and one SRAM uncorrectable count; v11 (R515) also `power_readings`,
    `power_limit` and `clocks_throttle_reasons`."""
    raw = re.sub(r"\s*<average_power_draw>[^<]*</average_power_draw>", "", raw)
    raw = raw.replace("instant_power_draw>", "power_draw>")
    raw = re.sub(r"<sram_uncorrectable_parity>(\d+)</sram_uncorrectable_parity>\s*"
                 r"<sram_uncorrectable_secded>(\d+)</sram_uncorrectable_secded>",
                 lambda m: f"<sram_uncorrectable>{int(m[1]) + int(m[2])}</sram_uncorrectable>", raw)
    if version <= 11:
        raw = raw.replace("gpu_power_readings>", "power_readings>").replace("current_power_limit>", "power_limit>")
        raw = raw.replace("<clocks_event_reason", "<clocks_throttle_reason")
        raw = raw.replace("</clocks_event_reason", "</clocks_throttle_reason")
    assert "sram_uncorrectable_parity" not in raw and "instant_power_draw" not in raw
    return raw


@pytest.mark.parametrize("version", [12, 11])
def test_older_schema_spellings_give_the_same_snapshot(version):
    older = as_schema(H200_XML, version)
    assert ("<clocks_throttle_reasons>" in older) == (version == 11)
    assert smi_xml.parse(older) == smi_xml.parse(H200_XML)


@pytest.mark.parametrize("version", [13, 11])
def test_active_clock_reasons_are_named_as_the_text_names_them(version):
    raw = as_schema(H200_XML, version) if version != 13 else H200_XML
    prefix = "clocks_throttle_reason" if version == 11 else "clocks_event_reason"
    for reason in ("gpu_idle", "sw_power_cap", "display_clocks_setting"):
        raw = raw.replace(f"<{prefix}_{reason}>Not Active<", f"<{prefix}_{reason}>Active<")
    assert smi_xml.parse(raw)["gpus"][0]["throttle_reasons"] == ["display_clock_setting", "idle", "sw_power_cap"]


def test_sram_uncorrectable_split_counts_are_summed_as_in_the_text():
    raw = H200_XML.replace("<sram_uncorrectable_parity>0</sram_uncorrectable_parity>",
                           "<sram_uncorrectable_parity>2</sram_uncorrectable_parity>", 1)
    raw = raw.replace("<sram_uncorrectable_secded>0</sram_uncorrectable_secded>",
                      "<sram_uncorrectable_secded>1</sram_uncorrectable_secded>", 1)
    assert smi_xml.parse(raw)["gpus"][0]["ecc"]["volatile"]["sram_uncorrectable"] == 3
    assert smi_xml.parse(raw)["gpus"][0]["ecc"]["aggregate"]["sram_uncorrectable"] == 0


def bundle(tmp_path: Path, name: str, **files: str) -> Path:
    """A capture folder: nvidia_smi_q_xml=… → nvidia-smi-q.xml, nvidia_smi_q_txt=… → nvidia-smi-q.txt."""
    directory = tmp_path / name
    directory.mkdir()
    for target, content in files.items():
        stem, suffix = target.rsplit("_", 1)
        (directory / f"{stem.replace('_', '-')}.{suffix}").write_text(content)
    return directory


def test_captured_xml_alone_and_text_alone_are_the_same_snapshot(tmp_path):
    from_xml = snapshot.collect(from_dir=bundle(tmp_path, "xml", nvidia_smi_q_xml=H200_XML))
    from_text = snapshot.collect(from_dir=bundle(tmp_path, "text", nvidia_smi_q_txt=H200_TEXT))
    for part in ("driver", "topology", "gpu_found", "incomplete"):
        assert from_xml[part] == from_text[part], part
    assert without_readings(from_xml)["gpus"] == without_readings(from_text)["gpus"]
    assert snapshot.profile_name(from_xml) == snapshot.profile_name(from_text) == "1xH200"
    assert not any("nvidia-smi-q.txt not captured" in note for note in from_xml["notes"])


def test_captured_xml_is_read_and_the_text_beside_it_must_agree(tmp_path):
    same = snapshot.collect(from_dir=bundle(tmp_path, "same", nvidia_smi_q_xml=H200_XML, nvidia_smi_q_txt=H200_TEXT))
    assert same["gpus"][0]["volatile"]["power_draw_w"] == 584.37  # from the XML, not the text's 608.85
    other = bundle(tmp_path, "other", nvidia_smi_q_xml=H200_XML, nvidia_smi_q_txt=(FIXTURE / "nvidia-smi-q.txt").read_text())
    with pytest.raises(SnapshotError, match=r"nvidia-smi-q.txt: GPUs GPU-e6e6948f-.* here, "
                                            rf"{H200_UUID} in nvidia-smi-q.xml: captured on different nodes"):
        snapshot.collect(from_dir=other)


def cut(raw: str, before: str) -> str:
    return raw[:raw.index(before)]


@pytest.mark.parametrize("content, message", [
    pytest.param(H200_XML.replace("<attached_gpus>1<", "<attached_gpus>2<"),
                 "truncated: <attached_gpus>2</attached_gpus> but 1 <gpu> element(s) (00000000:00:06.0)",
                 marks=pytest.mark.fault("snapshot", "nvidia-smi-q.xml that says 2 GPUs and holds one <gpu>",
                                         "one line naming the file: truncated, 2 attached, 1 <gpu>; exit 2"),
                 id="gpus-missing"),
    pytest.param(cut(H200_XML, "<fb_memory_usage>"), "not readable as XML (no element found: line",
                 marks=pytest.mark.fault("snapshot", "nvidia-smi-q.xml cut in the middle of its GPU",
                                         "one line naming the file: not readable as XML, the line; exit 2"),
                 id="xml-cut"),
    pytest.param(H200_TEXT, "not readable as XML (not well-formed (invalid token): line 1",
                 marks=pytest.mark.fault("snapshot", "nvidia-smi-q.xml holding the text of nvidia-smi -q",
                                         "one line naming the file: not readable as XML; exit 2"),
                 id="text-under-xml-name"),
    pytest.param("<?xml version=\"1.0\" ?>\n<html><body>502 Bad Gateway</body></html>\n",
                 "not `nvidia-smi -q -x` output (root element <html>, not <nvidia_smi_log>)",
                 marks=pytest.mark.fault("snapshot", "nvidia-smi-q.xml holding an XHTML error page",
                                         "one line naming the file: not nvidia-smi -q -x output; exit 2"),
                 id="other-xml"),
    pytest.param(H200_XML.replace(f"<uuid>{H200_UUID}</uuid>", "<uuid></uuid>"),
                 "GPU 00000000:00:06.0 has no <uuid>: garbled",
                 marks=pytest.mark.fault("snapshot", "nvidia-smi-q.xml whose GPU has an empty <uuid>",
                                         "one line naming the file and the GPU; exit 2"),
                 id="uuid-empty"),
])
def test_bad_captured_xml_is_one_line_naming_the_file(tmp_path, capsys, content, message):
    directory = bundle(tmp_path, "capture", nvidia_smi_q_xml=content)
    assert main(["snapshot", "--from", str(directory)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{directory / 'nvidia-smi-q.xml'}: {message}" in err, err
    assert "Traceback" not in err


# The nvidia-smi binary, faked: a script on PATH answering the way the real one does per argv.
FAKE_SMI = """#!{shell}
case "$*" in
  "-q -x") {xml} ;;
  "-q") cat '{text}' ;;
  "topo -m") cat '{topo}' ;;
  "nvlink -s") cat '{nvlink}' ;;
  *) echo "Invalid combination of input arguments. Please run 'nvidia-smi -h' for help."; exit 2 ;;
esac
"""


def fake_smi(tmp_path: Path, monkeypatch, xml: str) -> None:
    """nvidia-smi on PATH for this test: `xml` is the shell that answers -q -x ({xml_file} is the
    H200's capture); -q, topo -m and nvlink -s print the captured 2× H100 node's outputs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    xml_file = tmp_path / "h200.xml"
    xml_file.write_text(H200_XML)
    script = bin_dir / "nvidia-smi"
    script.write_text(FAKE_SMI.format(shell=shutil.which("sh"), xml=xml.format(xml_file=xml_file),
                                      text=FIXTURE / "nvidia-smi-q.txt", topo=FIXTURE / "nvidia-smi-topo-m.txt",
                                      nvlink=FIXTURE / "nvidia-smi-nvlink-s.txt"))
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{sys.exec_prefix}/bin:/usr/bin:/bin")


def test_live_reads_nvidia_smi_xml_where_it_works(tmp_path, monkeypatch):
    fake_smi(tmp_path, monkeypatch, "cat '{xml_file}'")
    taken = collect_live(pynvml_module=NoNvml())
    assert taken["notes"][0] == "NVML unavailable (NVML Shared Library Not Found): GPU fields read from nvidia-smi -q -x"
    assert taken["driver"] == {"version": "580.159.04", "cuda_driver_version": "13.0"}
    assert [gpu["uuid"] for gpu in taken["gpus"]] == [H200_UUID]
    # this fake's topo -m and nvlink -s are the H100 node's: said, not taken silently
    assert taken["incomplete"] == ["nvidia-smi topo -m: shows 2 GPU(s), nvidia-smi -q -x 1: "
                                   "captured on different nodes or at different times"]


@pytest.mark.parametrize("xml, note", [
    pytest.param("echo 'Unable to determine the device handle for GPU0000:00:06.0: Unknown Error'; exit 15",
                 "nvidia-smi -q -x exited 15: Unable to determine the device handle for GPU0000:00:06.0: Unknown Error",
                 marks=pytest.mark.fault("snapshot", "live, no NVML: nvidia-smi -q -x exits 15",
                                         "the text of nvidia-smi -q read instead, the failure in a note"),
                 id="xml-exits-nonzero"),
    pytest.param("head -c 4000 '{xml_file}'", "nvidia-smi -q -x: not readable as XML (",
                 marks=pytest.mark.fault("snapshot", "live, no NVML: nvidia-smi -q -x prints XML cut short",
                                         "the text of nvidia-smi -q read instead, the parse error in a note"),
                 id="xml-cut-short"),
    pytest.param("true", "nvidia-smi -q -x: empty (the GPUs, and so the profile, come from it)",
                 marks=pytest.mark.fault("snapshot", "live, no NVML: nvidia-smi -q -x prints nothing",
                                         "the text of nvidia-smi -q read instead, 'empty' in a note"),
                 id="xml-empty"),
])
def test_live_falls_back_to_the_text_when_the_xml_fails(tmp_path, monkeypatch, xml, note):
    fake_smi(tmp_path, monkeypatch, xml)
    taken = collect_live(pynvml_module=NoNvml())
    captured = snapshot.collect(from_dir=FIXTURE)
    for part in ("driver", "gpus", "topology"):
        assert taken[part] == captured[part], part
    assert taken["notes"][0] == "NVML unavailable (NVML Shared Library Not Found): GPU fields read from nvidia-smi -q"
    assert taken["notes"][1].startswith(note) and taken["notes"][1].endswith(": the text of nvidia-smi -q read instead")
    assert taken["incomplete"] == []


@pytest.mark.fault("snapshot", "`pytest -m hardware` over a bundle whose nvidia-smi-q.xml is cut short",
                   "one line `ERROR: gpucert: <file>: not readable as XML …`, exit 4, no baseline stored")
def test_a_cut_xml_stops_the_suite_with_one_line(tmp_path):
    directory = bundle(tmp_path, "capture", nvidia_smi_q_xml=cut(H200_XML, "<ecc_errors>"))
    run = pytest_stack(directory, tmp_path / "baselines", tmp_path / "report")
    assert run.returncode == 4, run.stdout[-2000:] + run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"ERROR: gpucert: {directory / 'nvidia-smi-q.xml'}: not readable as XML (no element found: line"), run.stderr
    assert not (tmp_path / "baselines").exists()
