"""collect(): from a captured directory, and live with the NVML / nvidia-smi seams replaced."""

import json
import shutil

import pytest

from gpucert import snapshot
from gpucert.snapshot import SnapshotError
from gpucert.snapshot.collect import collect_live
from gpucert.snapshot.nvml import NvmlUnavailable
from gpucert.snapshot.smi import SmiUnavailable

from .captures import FIXTURE
from .machine import without_gpu



@pytest.fixture(scope="module")
def captured():
    return snapshot.collect(from_dir=FIXTURE)


def test_captured_node_facts(captured):
    assert captured["schema_version"] == 1
    assert captured["source"] == "captured:h100x2-nvlink"
    assert captured["gpu_found"] is True
    assert captured["driver"] == {"version": "580.159.04", "cuda_driver_version": "13.0"}
    assert [gpu["name"] for gpu in captured["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    for gpu in captured["gpus"]:
        active = [link for link in gpu["nvlink"] if link["active"]]
        assert len(active) == 18
        assert {link["speed_gbps"] for link in active} == {26.562}
    assert captured["topology"]["matrix"]["GPU0"]["GPU1"] == "NV18"
    assert snapshot.profile_name(captured) == "2xH100-80GB-HBM3-NV18"
    json.dumps(captured)  # JSON-able as is


def test_captured_host_and_software_are_not_this_machines(captured):
    assert captured["host"] is None
    assert captured["software"] is None
    assert any("host not captured" in note for note in captured["notes"])


def test_captured_host_files_are_used(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "node")
    (tmp_path / "node" / "hostname.txt").write_text("gpu-node-17\n")
    (tmp_path / "node" / "os-release.txt").write_text('NAME="Ubuntu"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n')
    (tmp_path / "node" / "meminfo.txt").write_text("MemTotal:       2113459200 kB\n")
    host = snapshot.collect(from_dir=tmp_path / "node")["host"]
    assert host == {"hostname": "gpu-node-17", "os": "Ubuntu 24.04.1 LTS", "kernel": None,
                    "cpu_model": None, "cpu_count": None, "memory_total_mib": 2063925}


def test_missing_optional_file_leaves_its_part_null_with_a_note(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "node")
    (tmp_path / "node" / "nvidia-smi-nvlink-s.txt").unlink()
    (tmp_path / "node" / "nvidia-smi.txt").unlink()
    taken = snapshot.collect(from_dir=tmp_path / "node")
    assert all(gpu["nvlink"] is None for gpu in taken["gpus"])
    assert "nvidia-smi-nvlink-s.txt not captured: NVLink status skipped" in taken["notes"]
    assert taken["driver"]["version"] == "580.159.04"  # -q names it without the banner
    assert snapshot.profile_name(taken) == "2xH100-80GB-HBM3-NV18"  # the profile is unchanged
    assert taken["incomplete"] == []


def test_empty_nvlink_output_means_no_links_not_missing(tmp_path):
    # what `nvidia-smi nvlink -s` prints on a GPU without NVLink (seen on a lent H100 PCIe node)
    shutil.copytree(FIXTURE, tmp_path / "node")
    (tmp_path / "node" / "nvidia-smi-nvlink-s.txt").write_text("")
    taken = snapshot.collect(from_dir=tmp_path / "node")
    assert [gpu["nvlink"] for gpu in taken["gpus"]] == [[], []]
    assert not any("nvlink" in note for note in taken["notes"])


def test_only_the_banner_is_an_error_naming_the_missing_query(tmp_path):
    # without -q the GPUs are unknown: the profile would become "no-gpu" and nothing be compared
    (tmp_path / "nvidia-smi.txt").write_text((FIXTURE / "nvidia-smi.txt").read_text())
    with pytest.raises(SnapshotError, match=r"nvidia-smi-q.txt: missing \(the GPUs, and so the profile"):
        snapshot.collect(from_dir=tmp_path)


def test_empty_or_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(SnapshotError, match="no captured nvidia-smi output"):
        snapshot.collect(from_dir=tmp_path)
    with pytest.raises(SnapshotError, match="not a directory"):
        snapshot.collect(from_dir=tmp_path / "absent")
    assert issubclass(SnapshotError, ValueError)


class NoNvml:
    """A pynvml stand-in for a machine without the driver: init fails as the real one does."""

    class NVMLError(Exception):
        value = 12

    def nvmlInit(self):
        raise self.NVMLError("NVML Shared Library Not Found")


def no_smi(args):
    raise SmiUnavailable("nvidia-smi not on PATH")


def test_live_without_driver_has_one_note_and_software():
    taken = collect_live(pynvml_module=NoNvml(), smi_runner=no_smi)
    assert taken["gpu_found"] is False
    assert taken["gpus"] == []
    assert taken["notes"] == ["no NVIDIA driver found (NVML: NVML Shared Library Not Found; "
                              "nvidia-smi not on PATH); GPU fields skipped"]
    assert taken["software"]["python"]
    assert taken["software"]["gpucert"] == __import__("gpucert").__version__
    assert set(taken["software"]) == {"python", "torch", "cuda_runtime", "nccl", "vllm", "ray",
                                      "transformers", "nvidia-ml-py", "gpucert"}
    assert taken["host"]["hostname"]
    assert snapshot.profile_name(taken) == "no-gpu"


def fixture_smi(args):
    """nvidia-smi as if run on the captured node; its `-q -x` was not captured, so it fails as one
    unsupported subcommand does (test_snapshot_xml reads a node's XML)."""
    if tuple(args) == ("-q", "-x"):
        raise SmiUnavailable("nvidia-smi -q -x exited 2: not captured on this node", fatal=False)
    files = {("-q",): "nvidia-smi-q.txt", ("topo", "-m"): "nvidia-smi-topo-m.txt",
             ("nvlink", "-s"): "nvidia-smi-nvlink-s.txt"}
    return (FIXTURE / files[tuple(args)]).read_text()


def test_live_falls_back_to_nvidia_smi_when_nvml_is_missing(captured):
    taken = collect_live(pynvml_module=NoNvml(), smi_runner=fixture_smi)
    assert taken["gpu_found"] is True
    assert taken["notes"] == ["NVML unavailable (NVML Shared Library Not Found): "
                              "GPU fields read from nvidia-smi -q",
                              "nvidia-smi -q -x exited 2: not captured on this node: "
                              "the text of nvidia-smi -q read instead"]
    for part in ("driver", "gpus", "topology"):
        assert taken[part] == captured[part]


@without_gpu
def test_live_on_this_gpu_less_machine():
    taken = snapshot.collect()
    assert taken["source"] == "live"
    assert taken["gpu_found"] is False
    assert len(taken["notes"]) == 1 and taken["notes"][0].startswith("no NVIDIA driver found")
    assert taken["software"]["python"]
    assert snapshot.summary(taken)[0] == ("profile", "no-gpu")


def test_nvml_import_failure_is_reported_not_raised(monkeypatch):
    import gpucert.snapshot.nvml as nvml

    def missing():
        raise NvmlUnavailable("nvidia-ml-py (pynvml) is not installed")

    monkeypatch.setattr(nvml, "import_pynvml", missing)
    taken = collect_live(smi_runner=no_smi)
    assert "nvidia-ml-py (pynvml) is not installed" in taken["notes"][0]


def test_summary_rows(captured):
    rows = dict(snapshot.summary(captured))
    assert rows["driver"] == "580.159.04 (CUDA 13.0)"
    assert rows["GPUs"] == "2× NVIDIA H100 80GB HBM3 (81559 MiB)"
    assert rows["NVLink"] == "18/18 active × 26.562 GB/s per GPU"
    assert rows["topology"] == "GPU0-GPU1 NV18"
    assert rows["PCIe"] == "Gen5 x16 (max Gen5 x16) on every GPU"
    assert rows["ECC"].startswith("enabled on 2/2 GPUs · uncorrectable 0")
    assert rows["digest"] == snapshot.digest(captured)
    assert all(isinstance(label, str) and isinstance(value, str)
               for label, value in snapshot.summary(captured))
