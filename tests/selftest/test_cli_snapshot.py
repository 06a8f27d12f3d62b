"""`gpucert snapshot` and `gpucert snapshot diff`: output, exit codes 0/1/2, one-line errors."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpucert import snapshot
from gpucert.cli import main

from .captures import FIXTURE



@pytest.fixture
def saved(tmp_path):
    """The fixture snapshot saved as old.json, a drifted copy as new.json."""
    old = snapshot.collect(from_dir=FIXTURE)
    new = copy.deepcopy(old)
    new["gpus"][1]["nvlink"][3] = {"link": 3, "active": False, "speed_gbps": None}
    new["driver"]["version"] = "580.172.08"
    paths = {}
    for name, content in (("old", old), ("new", new)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(content))
    return paths


def test_snapshot_table_from_captured_dir(capsys):
    assert main(["snapshot", "--from", str(FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "2xH100-80GB-HBM3-NV18" in out
    assert "580.159.04 (CUDA 13.0)" in out
    assert "GPU0-GPU1 NV18" in out


def test_snapshot_json_is_the_full_snapshot():
    # the installed console script, as an operator types it
    done = subprocess.run([str(Path(sys.executable).with_name("gpucert")), "snapshot", "--from", str(FIXTURE), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    taken = json.loads(done.stdout)
    assert taken["schema_version"] == 1
    assert [g["name"] for g in taken["gpus"]] == ["NVIDIA H100 80GB HBM3"] * 2
    assert taken["driver"] == {"version": "580.159.04", "cuda_driver_version": "13.0"}
    for gpu in taken["gpus"]:
        assert len(gpu["nvlink"]) == 18
        assert all(link["active"] and link["speed_gbps"] == 26.562 for link in gpu["nvlink"])
    assert taken["topology"]["matrix"]["GPU0"]["GPU1"] == "NV18" == taken["topology"]["matrix"]["GPU1"]["GPU0"]


def test_live_snapshot_runs_anywhere(capsys):
    assert main(["snapshot"]) == 0
    assert "profile" in capsys.readouterr().out


def test_diff_without_drift_exits_0(saved, capsys):
    assert main(["snapshot", "diff", str(saved["old"]), str(saved["old"])]) == 0
    assert "no drift" in capsys.readouterr().out


def test_diff_with_drift_exits_1_and_lists_changes(saved, capsys):
    assert main(["snapshot", "diff", str(saved["old"]), str(saved["new"])]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["critical", "gpus[1].nvlink[3].active"]
    assert "true → false" in lines[0]
    assert lines[1].split()[:2] == ["warning", "driver.version"]


def test_diff_json(saved, capsys):
    assert main(["snapshot", "diff", str(saved["old"]), str(saved["new"]), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"critical": 1, "warning": 1, "info": 0}
    assert [c["path"] for c in report["changes"]] == ["gpus[1].nvlink[3].active", "driver.version"]


def test_fail_on_sets_what_counts_as_drift(saved, tmp_path, capsys):
    drifted = ["snapshot", "diff", str(saved["old"]), str(saved["new"])]
    assert main(drifted + ["--fail-on", "critical"]) == 1
    renamed = json.loads(saved["old"].read_text())
    renamed["host"] = {"hostname": "renamed"}  # an info-only change
    (tmp_path / "renamed.json").write_text(json.dumps(renamed))
    info_only = ["snapshot", "diff", str(saved["old"]), str(tmp_path / "renamed.json")]
    assert main(info_only) == 1  # default: any change is drift
    assert main(info_only + ["--fail-on", "warning"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["snapshot", "--from", "/no/such/dir"], "not a directory"),
    (["snapshot", "diff", "/no/such.json", "/no/other.json"], "cannot read /no/such.json"),
    (["snapshot", "diff", "only-one.json"], "exactly two files"),
    (["snapshot", "unknown"], "invalid choice"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("gpucert: error: ") and message in captured.err


def test_empty_capture_dir_and_non_snapshot_json(tmp_path, capsys):
    assert main(["snapshot", "--from", str(tmp_path)]) == 2
    assert "no captured nvidia-smi output" in capsys.readouterr().err
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    assert main(["snapshot", "diff", str(tmp_path / "list.json"), str(tmp_path / "list.json")]) == 2
    assert "is not a gpucert snapshot" in capsys.readouterr().err
    assert main(["snapshot", "diff", str(tmp_path / "broken.json"), str(tmp_path / "list.json")]) == 2
    assert "is not valid JSON" in capsys.readouterr().err


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "gpucert.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_as_a_process(saved):
    done = run_cli("snapshot", "diff", str(saved["old"]), str(saved["new"]))
    assert done.returncode == 1 and "gpus[1].nvlink[3].active" in done.stdout
    done = run_cli("snapshot", "--from", "/no/such/dir")
    assert done.returncode == 2
    assert done.stderr == "gpucert: error: /no/such/dir: not a directory\n"
    assert "Traceback" not in done.stderr
