"""`gpucert judge`: a real device run (session 38's plain rerun of the H100's GEMM checks) judged
again against the committed baselines — as it is, with a regression planted in it, with a
measurement failed in it, against a thresholds file changed for review — and bad input as one line."""

import json
import lzma
from pathlib import Path

import pytest

from gpucert.cli import main
from gpucert.rejudge import read_run

from . import device_runs
from .device_runs import slowed

REPO = Path(__file__).resolve().parents[2]
RERUN = device_runs.GEMM_H100_RERUN
PROJECTION = "gemm_projection[dtype=bf16,shape=qwen2.5-1.5b-qkv-m16,tp=2]::tflops"


def judge(capsys, *argv) -> tuple[int, str, str]:
    code = main(["judge", *map(str, argv), "--baselines-dir", str(REPO / "baselines"),
                 "--thresholds", str(REPO / "thresholds.yaml")])
    out, err = capsys.readouterr()
    return code, out, err


def written(tmp_path, run: dict, name="metrics.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(run))
    return path


def test_the_plain_rerun_passes_as_it_did(capsys):
    code, out, err = judge(capsys, RERUN)
    assert code == 0 and not err
    assert "66 metric(s) of profile 1xH100-80GB-HBM3" in out
    assert "verdicts then: pass 66" in out and "verdicts now:  pass 66" in out
    assert len(out.splitlines()) == 3  # nothing moved, nothing fails: no metric named


@pytest.mark.fault("judge", "a real rerun 10 % slower in every figure", "exit 1; each failing metric named with its reason")
def test_a_planted_regression_fails_and_names_each_metric(capsys, tmp_path):
    code, out, _ = judge(capsys, written(tmp_path, slowed(device_runs.load(RERUN), 0.9)))
    assert code == 1
    assert "verdicts now:  fail 64, warn 2" in out
    line = next(line for line in out.splitlines() if line.startswith(f"  {PROJECTION}: pass -> fail: "))
    assert "lower than the baseline beyond tolerance 7%" in line and "change 95% interval" in line


def test_the_json_gives_every_metric_then_and_now(capsys, tmp_path):
    code, out, _ = judge(capsys, written(tmp_path, slowed(device_runs.load(RERUN), 0.9)), "--json")
    verdicts = {v["key"]: v for v in json.loads(out)}
    assert code == 1 and len(verdicts) == 66
    assert verdicts[PROJECTION]["before"] == "pass" and verdicts[PROJECTION]["after"] == "fail"


@pytest.mark.fault("judge", "a metric whose measurement failed in the run", "it fails judged again, with the run's error")
def test_a_failed_measurement_still_fails(capsys, tmp_path):
    run = device_runs.load(RERUN)
    metric = next(m for c in run["checks"] for m in c["metrics"] if m["key"] == PROJECTION)
    metric.update(status="error", value=None, error="CUDA error: an illegal memory access was encountered")
    code, out, _ = judge(capsys, written(tmp_path, run))
    assert code == 1
    assert (f"  {PROJECTION}: pass -> fail: measurement failed: CUDA error: an illegal memory access was "
            "encountered") in out


def test_a_thresholds_change_under_review_shows_what_it_would_fail(capsys, tmp_path):
    """bf16's square floor raised from 56 % to 70 % of the dense peak in a copy of thresholds.yaml
    (the H100 sustains 67-69 %): judged with it, the rerun's three bf16 squares fail on the floor,
    everything else passes as before."""
    text = (REPO / "thresholds.yaml").read_text()
    rule = "{check: gemm_square, metric: tflops, params: {dtype: bf16}, min_fraction_of_peak: 0.56, warn_fraction_of_peak: 0.61}"
    assert rule in text
    raised = tmp_path / "thresholds.yaml"
    raised.write_text(text.replace(rule, rule.replace("0.56", "0.70").replace("0.61", "0.72")))
    code = main(["judge", str(RERUN), "--baselines-dir", str(REPO / "baselines"), "--thresholds", str(raised)])
    out = capsys.readouterr().out
    assert code == 1 and "verdicts now:  fail 3, pass 63" in out
    failing = [line for line in out.splitlines() if " -> fail: " in line]
    assert len(failing) == 3 and all(line.startswith("  gemm_square[dtype=bf16,") for line in failing)
    assert all("of the datasheet peak 989.5, below 70%" in line for line in failing), failing


def test_a_compressed_run_reads_as_the_plain_file(tmp_path):
    plain = device_runs.load(RERUN)
    (tmp_path / "m.json.xz").write_bytes(lzma.compress(json.dumps(plain).encode()))
    assert read_run(tmp_path / "m.json.xz") == plain


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "absent.json", "absent.json: no such file"),
    (lambda d: written(d, {"checks": []}), "not a metrics.json (no profile and checks)"),
    (lambda d: (d / "bad.json").write_text("{not json") and d / "bad.json", "not a metrics.json (JSONDecodeError"),
    (lambda d: (d / "bad.json.xz").write_bytes(b"not xz") and d / "bad.json.xz", "not a metrics.json (LZMAError"),
    (lambda d: written(d, {"profile": "p", "checks": [{"nodeid": "x"}]}), "a check of the run cannot be read (KeyError"),
], ids=["missing", "no-profile", "not-json", "not-xz", "no-check-name"])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, make, message):
    code, out, err = judge(capsys, make(tmp_path))
    assert code == 2 and not out
    assert err.startswith("gpucert: error: ") and message in err and err.count("\n") == 1


def test_a_missing_baselines_folder_or_thresholds_file_is_one_line(capsys, tmp_path):
    assert main(["judge", str(RERUN), "--baselines-dir", str(tmp_path / "none")]) == 2
    assert "--baselines-dir" in capsys.readouterr().err
    assert main(["judge", str(RERUN), "--baselines-dir", str(REPO / "baselines"),
                 "--thresholds", str(tmp_path / "none.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpucert: error: ") and "none.yaml" in err and err.count("\n") == 1
