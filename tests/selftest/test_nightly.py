"""Nightly and certification runs: the history folder and the card's trends with the stack
changes between runs; the wall-clock budget (skip, then interrupt); the run's log file."""

import json
import shutil
import time
from pathlib import Path

import pytest

from gpucert import history

FIXTURES = Path(__file__).parent.parent / "fixtures" / "h100x2-nvlink"

TOY = '''
import pathlib, time
import pytest

@pytest.mark.hardware
def test_toy(gpucert):
    value = float(pathlib.Path(__file__).with_name("value.txt").read_text())
    gpucert.record("tflops", value, unit="TFLOP/s", samples=[value * f for f in (0.99, 1.0, 1.01, 1.0, 1.0)])
    gpucert.record("side", 1.0, unit="x", samples=[1.0] * 5)
'''
THRESHOLDS = '''
schema_version: 1
defaults: {rel_tol: 0.05, warn_rel: 0.02, min_samples: 3}
rules:
  - {check: toy, metric: "*", direction: higher, rel_tol: 0.10, warn_rel: 0.03}
  - {check: toy, metric: tflops, headline: true}
'''


def data(started, value, summary=(("driver", "580.1"),), digest="d1", verdict="pass"):
    return {"started_at": started, "finished_at": started, "status": "complete", "verdict": verdict,
            "profile": "toy-node", "gpucert_version": "0", "git_revision": "abc",
            "stack": {"digest": digest, "summary": [list(r) for r in summary]},
            "checks": [{"metrics": [
                {"key": "toy::tflops", "metric": "tflops", "unit": "TFLOP/s", "value": value, "verdict": "pass",
                 "ci": [value - 1, value + 1], "headline": True, "samples": [value] * 1000},
                {"key": "toy::side", "metric": "side", "unit": "x", "value": "nan", "verdict": "fail"}]}]}


def test_records_are_compact_sorted_and_a_broken_one_is_skipped(tmp_path):
    for i, value in enumerate((100.0, 101.0, 99.0)):
        history.append(tmp_path, data(f"2026-11-2{i}T01:00:00+00:00", value))
    path = history.append(tmp_path, data("2026-11-22T01:00:00+00:00", 98.0))  # same second: kept beside
    assert path.name == "20261122T0100000000-2.json"
    (tmp_path / "toy-node" / "20261123T0000000000.json").write_text("{not json")
    records, notes = history.load(tmp_path, "toy-node")
    assert [r["metrics"]["toy::tflops"]["value"] for r in records] == [100.0, 101.0, 99.0, 98.0]
    assert len(notes) == 1 and "20261123T0000000000.json skipped" in notes[0]
    assert "samples" not in json.dumps(records) and "toy::side" not in records[0]["metrics"]  # nan left out
    assert history.load(tmp_path, "other-node") == ([], [])
    assert [r["metrics"]["toy::tflops"]["value"] for r in history.load(tmp_path, "toy-node", limit=2)[0]] == [98.0]


def test_trends_mark_the_stack_change_between_two_runs():
    old = (("driver", "580.1"), ("vLLM", "0.26.0"))
    new = (("driver", "590.2"), ("vLLM", "0.26.0"))
    past = [history.record(data("t0", 100.0, old, "d1")), history.record(data("t1", 100.5, old, "d1")),
            history.record(data("t2", 80.0, new, "d2"))]
    now = history.record(data("t3", 80.5, new, "d2"))
    (trend,) = history.trends(past, now)
    assert [p["value"] for p in trend["points"]] == [100.0, 100.5, 80.0, 80.5]
    assert trend["drift"] == [{"after": 2, "when": "t2", "changes": ["driver: 580.1 → 590.2"]}]
    # a digest change outside the summary still marks the step
    assert history.stack_changes(past[0], history.record(data("t4", 1.0, old, "d9"))) == \
        ["stack snapshot changed (details outside the summary: see the stack check)"]


@pytest.fixture
def nightly(pytester):
    pytester.makepyfile(test_toy=TOY)
    pytester.makefile(".yaml", thresholds=THRESHOLDS)

    def run(value, *args):
        pytester.path.joinpath("value.txt").write_text(str(value))
        report_dir = pytester.path / f"report-{len(list(pytester.path.glob('report-*')))}"
        result = pytester.runpytest("-p", "no:cacheprovider", "--profile", "toy-node", "--report-dir",
                                    str(report_dir), "--history-dir", str(pytester.path / "history"), *args)
        result.metrics = json.loads((report_dir / "metrics.json").read_text())
        result.html = (report_dir / "report.html").read_text()
        result.report_dir = report_dir
        return result
    return run


def test_nightly_runs_draw_trends_and_mark_where_the_stack_changed(nightly, pytester):
    first = nightly(100, "--update-baselines")
    assert first.ret == 0 and first.metrics["trends"][0]["points"][0]["value"] == 100.0
    assert "No headline metric has a second run yet" in first.html
    assert nightly(101).ret == 0
    captured = pytester.path / "captured"
    shutil.copytree(FIXTURES, captured)
    third = nightly(80, "--snapshot-from", str(captured), "--missing-baseline=fail")
    assert third.ret == pytest.ExitCode.TESTS_FAILED  # the regression fails the nightly
    (trend,) = third.metrics["trends"]  # headline metrics only
    assert trend["key"] == "toy::tflops" and [p["value"] for p in trend["points"]] == [100.0, 101.0, 80.0]
    assert [d["after"] for d in trend["drift"]] == [2]
    changes = " ".join(trend["drift"][0]["changes"])
    assert "580.159.04" in changes and "→" in changes  # the captured H100 node's driver appears
    assert 'id="trends"' in third.html and "between run 2 and run 3" in third.html
    assert third.html.count("<svg") >= 1
    records, notes = history.load(pytester.path / "history", "toy-node")
    assert len(records) == 3 and records[-1]["verdict"] == "fail" and not notes
    log = (third.report_dir / "gpucert.log").read_text()
    assert "toy: fail" in log and "history record" in log and "run complete: verdict fail" in log


def test_checks_after_the_time_budget_are_skipped_with_the_reason(pytester):
    pytester.makepyfile(test_budget='''
import time, pytest
@pytest.mark.hardware
def test_a(gpucert):
    time.sleep(1.0)
    gpucert.record("x", 1.0, unit="x", direction="higher")

@pytest.mark.hardware
def test_b(gpucert):
    gpucert.record("x", 1.0, unit="x", direction="higher")
''')
    report = pytester.path / "r"
    result = pytester.runpytest("-p", "no:cacheprovider", "--profile", "toy-node", "--report-dir", str(report),
                                "--time-budget-min", "0.01")
    result.assert_outcomes(passed=1, skipped=1)
    run = json.loads((report / "metrics.json").read_text())
    assert run["time_budget"]["skipped"] == ["b"] and run["time_budget"]["budget_min"] == 0.01
    (skipped,) = run["skipped"]
    assert skipped["check_id"] == "b" and skipped["reason"].startswith("time budget: 0.01 min spent")
    html = (report / "report.html").read_text()
    assert "1 check(s) skipped for it" in html
    assert "gpucert ▸ budget: 2 check(s)" in result.stdout.str()  # the progress line
    result.stdout.fnmatch_lines(["the run took * s (time budget 0.01 min, counted from the first check: * s of it used; "
                                 "1 check(s) skipped for it)"])
    bad = pytester.runpytest("-p", "no:cacheprovider", "--time-budget-min", "0")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--time-budget-min must be a positive number" in bad.stderr.str()


@pytest.mark.parametrize("launched", [
    "foreground",
    pytest.param("background", marks=pytest.mark.fault(
        "time", "make certify started as a background job of a shell without job control (SIGINT ignored), "
        "a check running past its time budget", "SIGINT restored at the first check: the check is interrupted at "
        "the budget and kept as incomplete")),
])
@pytest.mark.slow("child pytest sessions")
def test_a_check_running_past_budget_and_grace_is_interrupted_and_kept(pytester, launched):
    # "background": the process starts with SIGINT ignored, as `make certify &` from a script does
    ignore = "signal.signal(signal.SIGINT, signal.SIG_IGN)" if launched == "background" else ""
    pytester.makeconftest(f'''
import signal
import gpucert.progress
# minutes in use; two seconds here: time for the check's body to record before the interrupt
# even with every core busy (at half a second, two xdist workers beside two CPU hogs lost the race)
gpucert.progress.grace_s = lambda budget_s: 2.0
{ignore}
''')
    pytester.makepyfile(test_long='''
import time, pytest
@pytest.mark.inference
def test_long(gpucert):
    gpucert.record("tok_s", 5.0, unit="tok/s", direction="higher")
    time.sleep(30)
''')
    report = pytester.path / "r"
    t0 = time.monotonic()
    # a subprocess: the interrupt is SIGINT to the process running the checks
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--profile", "toy-node", "--report-dir",
                                           str(report), "--time-budget-min", "0.005")
    assert result.ret == pytest.ExitCode.INTERRUPTED and time.monotonic() - t0 < 20
    run = json.loads((report / "metrics.json").read_text())
    assert run["status"] == "interrupted" and run["verdict"] == "incomplete"
    (check,) = run["checks"]
    assert check["verdict"] == "incomplete" and [m["value"] for m in check["metrics"] if m["metric"] == "tok_s"] == [5.0]
    assert 0.5 < run["time_budget"]["interrupted_at_s"] < 5
    assert "time budget of 0.005 min plus 2 s grace spent" in (report / "gpucert.log").read_text()
