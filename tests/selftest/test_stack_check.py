"""The stack check end to end, as an operator runs it: `pytest -m hardware -k stack` in the repo,
on the real captured outputs, then on a copy with one NVLink link down, one GPU swapped and the
driver bumped."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .captures import DRIFT_EDITS, FIXTURE, edited_capture
from .machine import without_gpu

REPO = Path(__file__).resolve().parents[2]
PROFILE = "2xH100-80GB-HBM3-NV18"


def pytest_stack(snapshot_dir, baselines, report_dir, *extra):
    cmd = [sys.executable, "-m", "pytest", "-m", "hardware", "-k", "stack", "-p", "no:cacheprovider",
           f"--snapshot-from={snapshot_dir}", f"--baselines-dir={baselines}",
           f"--report-dir={report_dir}", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow("child pytest sessions")
def test_baseline_then_drift_fails_with_exactly_the_three_changes(tmp_path):
    baselines = tmp_path / "baselines"
    first = pytest_stack(FIXTURE, baselines, tmp_path / "r1", "--update-baselines")
    assert first.returncode == 0, first.stdout + first.stderr
    stored = json.loads((baselines / PROFILE / "stack.json").read_text())
    assert stored["profile"] == PROFILE
    assert stored["artifacts"]["stack::snapshot"]["gpus"][1]["name"] == "NVIDIA H100 80GB HBM3"
    # drift counts are relative to the stored snapshot itself: never stored as values
    assert sorted(stored["metrics"]) == ["stack::gpu_count", "stack::health_critical", "stack::health_warning"]
    assert stored["metrics"]["stack::health_critical"]["value"] == 0
    first_metrics = json.loads((tmp_path / "r1" / "metrics.json").read_text())
    assert {m["metric"]: m["verdict"] for m in first_metrics["checks"][0]["metrics"]} == {
        "drift_critical": "skipped", "drift_warning": "skipped", "drift_info": "skipped",
        "health_critical": "new", "health_warning": "new", "gpu_count": "new"}
    assert first_metrics["counts"]["new"] == 1
    kept = stored["artifacts"]["stack::snapshot"]
    assert "volatile" not in kept["gpus"][0] and "taken_at" not in kept  # no temperatures in git diffs
    assert stored["snapshot_digest"].startswith("sha256:")

    same = pytest_stack(FIXTURE, baselines, tmp_path / "r2")
    assert same.returncode == 0, same.stdout + same.stderr
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["verdict"] == "pass"

    drifted = edited_capture(tmp_path, DRIFT_EDITS)
    second = pytest_stack(drifted, baselines, tmp_path / "r3")
    assert second.returncode == 1, second.stdout + second.stderr
    assert "stack::drift_critical: FAIL: 2 changes is above the maximum 0 — gpus[1].nvlink[3].active" in second.stdout
    assert "Traceback" not in second.stdout + second.stderr

    metrics = json.loads((tmp_path / "r3" / "metrics.json").read_text())
    check = next(c for c in metrics["checks"] if c["check"] == "stack")
    expected = [
        {"path": "gpus[1].nvlink[3].active", "old": True, "new": False, "severity": "critical"},
        {"path": "gpus[1].uuid", "old": "GPU-0595606e-cf87-68bc-dcd1-a66677557151",
         "new": "GPU-11111111-2222-3333-4444-555555555555", "severity": "critical"},
        {"path": "driver.version", "old": "580.159.04", "new": "580.172.08", "severity": "warning"},
    ]
    assert check["findings"]["drift"] == expected
    verdict = {m["metric"]: m["verdict"] for m in check["metrics"]}
    assert verdict == {"drift_critical": "fail", "drift_warning": "warn", "drift_info": "pass",
                       "health_critical": "fail", "health_warning": "pass", "gpu_count": "pass"}
    # the link that went down is also an absolute finding: its 17 siblings are up
    assert check["findings"]["health"] == [{
        "path": "gpus[1].nvlink[3].active", "value": False, "expected": "true", "severity": "critical",
        "reason": "NVLink link down while its siblings are up"}]

    html = (tmp_path / "r3" / "report.html").read_text()
    for change in expected:
        assert f"<td>{change['path']}</td>" in html and f'class="sev-{change["severity"]}"' in html
    assert html.count('class="sev-') == 3 + 1  # three drift rows, one health row
    # the drifted run did not touch the baseline
    assert json.loads((baselines / PROFILE / "stack.json").read_text()) == stored

    # --update-baselines on the degraded node: the drift is accepted (warns), but the link that is
    # down is still an absolute health failure, and a failed check is never stored as the baseline
    refused = pytest_stack(drifted, baselines, tmp_path / "r4", "--update-baselines")
    assert refused.returncode == 1
    assert "accepted by --update-baselines" in refused.stdout
    assert "stack::health_critical: FAIL" in refused.stdout
    assert "metrics not written: the check failed" in refused.stdout
    assert json.loads((baselines / PROFILE / "stack.json").read_text()) == stored
    # an approved change (the board swapped, the driver bumped, every link up): accepted and stored
    swapped = edited_capture(tmp_path / "swap", {"nvidia-smi-nvlink-s.txt": DRIFT_EDITS["nvidia-smi-nvlink-s.txt"][1:],
                                                 "nvidia-smi-q.txt": DRIFT_EDITS["nvidia-smi-q.txt"]})
    accepted = pytest_stack(swapped, baselines, tmp_path / "r5", "--update-baselines")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "accepted by --update-baselines" in accepted.stdout
    new_uuid = json.loads((baselines / PROFILE / "stack.json").read_text())["artifacts"]["stack::snapshot"]["gpus"][1]["uuid"]
    assert new_uuid == expected[1]["new"]


@without_gpu
def test_stack_runs_without_a_gpu_and_says_so_once(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "hardware", "-k", "stack", "-p", "no:cacheprovider",
         f"--baselines-dir={tmp_path / 'b'}", f"--report-dir={tmp_path / 'r'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("no NVIDIA driver found") == 1
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["profile"] == "no-gpu" and metrics["stack"]["gpu_found"] is False
    summary = dict(metrics["stack"]["summary"])
    assert "torch" in json.dumps(summary) or any("2.13" in str(v) for v in summary.values())


def test_bad_snapshot_dir_is_one_line(tmp_path):
    run = pytest_stack(tmp_path / "missing", tmp_path / "b", tmp_path / "r")
    assert run.returncode == 4
    assert run.stderr.strip().splitlines() == [f"ERROR: gpucert: {tmp_path / 'missing'}: not a directory"]
