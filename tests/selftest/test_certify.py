"""`make certify`, the README's main command, on a machine with no GPU and no vLLM (this one, CI):
it runs what it can, finishes, and the card says what was skipped and why."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.slow("child pytest sessions")
def test_make_certify_without_a_gpu_runs_what_it_can_and_says_it_is_not_certified(tmp_path):
    report = tmp_path / "latest"
    run = subprocess.run(["make", "-s", "certify", f"PYTHON={sys.executable}",
                          f"ARGS=--report-dir {report} -p no:cacheprovider"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    # not certified: the checks it needs could not run here — said last, and pytest's exit 6 (not
    # its 0), which make reports as "Error 6" before exiting 2 itself
    assert run.returncode == 2 and "[Makefile:" in run.stderr and "certify] Error 6" in run.stderr, \
        run.stdout[-3000:] + run.stderr[-2000:]
    last = run.stdout.strip().splitlines()[-1]
    assert last.startswith("gpucert: NOT CERTIFIED ") and "checks could not run here (no CUDA device" in last, last
    data = json.loads((report / "metrics.json").read_text())
    assert data["certification"]["line"] in last and data["certification"]["not_run"] == len(data["checks"]) - 1
    assert data["status"] == "complete" and data["time_budget"]["budget_min"] == 15
    ran = [c for c in data["checks"] if c["outcome"] != "skipped"]
    assert [c["check"] for c in ran] == ["stack"]  # the snapshot needs no GPU
    reasons = {s["reason"] for s in data["skipped"]}
    assert any("no CUDA device" in r for r in reasons)
    assert any("vLLM is not importable" in r for r in reasons)
    assert len(data["skipped"]) == len(data["checks"]) - 1 and data["counts"]["skipped"] == len(data["skipped"])
    # the certification's load reached the inference checks: five levels
    levels = sorted({int(c["params"]["concurrency"]) for c in data["checks"] if c["check"] == "serving_baseline"})
    assert levels == [1, 16, 64, 256, 1024]
    html = (report / "report.html").read_text()
    assert 'id="skipped"' in html and "vLLM is not importable" in html
    assert "gpucert ▸ gemm: " in run.stdout and "gpucert ▸ serving_baseline: 5 check(s)" in run.stdout  # where the run is
    log = (report / "gpucert.log").read_text()
    assert "run complete: verdict" in log and "stack:" in log
    assert "gpucert_run_verdict" in (report / "metrics.prom").read_text()


@pytest.mark.fault("bad input", "pytest -m hardware --baselines-dir /abs/existing/dir (the value as a separate word: "
                   "pytest takes it for a test path and moves its rootdir there, dropping pyproject.toml's settings)",
                   "ERROR: gpucert: one line naming the fix (--baselines-dir=/abs/path), exit 4; the '=' form runs, "
                   "and make certify (which passes -c pyproject.toml) runs either form")
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.slow("child pytest sessions")
def test_a_path_option_that_moves_pytests_rootdir_is_one_line(tmp_path):
    def pytest_(*args):
        return subprocess.run([sys.executable, "-m", "pytest", "-m", "hardware", "--collect-only", "-q", *args],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    moved = pytest_("--baselines-dir", str(tmp_path))
    lines = [line for line in (moved.stdout + moved.stderr).splitlines() if "gpucert:" in line]
    assert moved.returncode == 4 and "Traceback" not in moved.stdout + moved.stderr
    assert len(lines) == 1 and lines[0].startswith("ERROR: gpucert: pytest did not read") and "--baselines-dir=" in lines[0]
    kept = pytest_(f"--baselines-dir={tmp_path}")
    assert kept.returncode == 0 and "tests collected" in kept.stdout, kept.stdout[-2000:] + kept.stderr[-1000:]
    made = subprocess.run(["make", "-s", "certify", f"PYTHON={sys.executable}",
                           f"ARGS=--baselines-dir {tmp_path} --collect-only -q"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0 and "tests collected" in made.stdout, made.stdout[-2000:] + made.stderr[-1000:]
