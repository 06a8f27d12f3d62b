"""The plugin driven in real pytest sessions (pytester): record → baseline → judge → card."""

import json
import xml.etree.ElementTree as ET

import pytest

TOY = '''
import pathlib
import pytest

@pytest.mark.hardware
@pytest.mark.parametrize("size", [1024, 4096])
def test_toy(gpucert, size):
    value = float(pathlib.Path(__file__).with_name("value.txt").read_text())
    gpucert.record("tflops", value * size / 1024, unit="TFLOP/s", samples=[value * size / 1024] * 5)
'''

THRESHOLDS = '''
schema_version: 1
defaults: {rel_tol: 0.05, warn_rel: 0.02, min_samples: 3}
rules:
  - check: toy
    metric: tflops
    direction: higher
    rel_tol: 0.10
    warn_rel: 0.03
'''


@pytest.fixture
def suite(pytester):
    pytester.makepyfile(test_toy=TOY)
    pytester.makefile(".yaml", thresholds=THRESHOLDS)
    pytester.path.joinpath("value.txt").write_text("100")

    def run(value, *args):
        pytester.path.joinpath("value.txt").write_text(str(value))
        report_dir = pytester.path / f"report-{len(list(pytester.path.glob('report-*')))}"
        result = pytester.runpytest("-p", "no:cacheprovider", "--profile", "toy-node", "--report-dir", str(report_dir), *args)
        result.report_dir = report_dir
        result.metrics = json.loads((report_dir / "metrics.json").read_text()) if (report_dir / "metrics.json").exists() else None
        result.html = (report_dir / "report.html").read_text() if (report_dir / "report.html").exists() else ""
        return result

    run.path = pytester.path
    return run


def lines(*patterns):
    """fnmatch patterns in which '[' is literal (metric keys carry [params])."""
    return [p.replace("[", "[[]") for p in patterns]


def verdicts(metrics):
    return {m["key"]: m["verdict"] for c in metrics["checks"] for m in c["metrics"]}


def baseline_file(suite):
    return suite.path / "baselines" / "toy-node" / "toy.json"


def test_baseline_then_regression_fails_with_readable_line(suite):
    first = suite(100, "--update-baselines")
    assert first.ret == 0
    assert verdicts(first.metrics) == {"toy[size=1024]::tflops": "new", "toy[size=4096]::tflops": "new"}
    first.stdout.fnmatch_lines(lines("*baselines in *toy-node: 2 change(s)*", "*toy: + toy[size=1024]::tflops = 100*"))
    stored = json.loads(baseline_file(suite).read_text())
    assert stored["profile"] == "toy-node" and stored["schema_version"] == 1
    assert stored["metrics"]["toy[size=4096]::tflops"]["value"] == 400.0
    assert stored["metrics"]["toy[size=4096]::tflops"]["samples"] == 5

    regressed = suite(80)
    assert regressed.ret == 1
    regressed.assert_outcomes(failed=2)
    regressed.stdout.fnmatch_lines(lines(
        "*toy[size=1024]::tflops: FAIL: 80 TFLOP/s vs baseline 100 (-20.0%): lower than the baseline beyond tolerance 10%*"
    ))
    assert "Traceback" not in regressed.stdout.str()
    assert verdicts(regressed.metrics) == {"toy[size=1024]::tflops": "fail", "toy[size=4096]::tflops": "fail"}
    assert regressed.metrics["counts"]["fail"] == 2 and regressed.metrics["verdict"] == "fail"
    assert "beyond tolerance 10%" in regressed.html and "v-fail" in regressed.html
    # a normal run never touches the baseline
    assert json.loads(baseline_file(suite).read_text()) == stored


def test_warn_band_passes_with_a_warning(suite):
    suite(100, "--update-baselines")
    warned = suite(95)
    assert warned.ret == 0
    warned.assert_outcomes(passed=2, warnings=2)
    warned.stdout.fnmatch_lines(lines("*GpucertWarning: toy[size=1024]::tflops: WARN: 95 TFLOP/s vs baseline 100 (-5.0%)*"))
    assert set(verdicts(warned.metrics).values()) == {"warn"}


def test_big_improvement_suggests_rebaseline(suite):
    suite(100, "--update-baselines")
    better = suite(130)
    assert better.ret == 0
    assert "rebaseline suggested" in better.html


def test_missing_baseline_is_new_or_fails_when_asked(suite):
    fresh = suite(100)
    assert fresh.ret == 0 and set(verdicts(fresh.metrics).values()) == {"new"}
    assert not baseline_file(suite).exists()  # never created silently
    assert (fresh.report_dir / "candidate-baselines" / "toy-node" / "toy.json").exists()
    strict = suite(100, "--missing-baseline=fail")
    assert strict.ret == 1
    strict.stdout.fnmatch_lines(lines("*no baseline for this metric (--missing-baseline=fail)*"))


def test_update_merges_and_never_deletes_unselected(suite):
    suite(100, "--update-baselines")
    suite(200, "--update-baselines", "-k", "4096")
    stored = json.loads(baseline_file(suite).read_text())["metrics"]
    assert stored["toy[size=1024]::tflops"]["value"] == 100.0
    assert stored["toy[size=4096]::tflops"]["value"] == 800.0


def test_candidate_baseline_can_be_promoted_without_rerun(suite):
    suite(100, "--update-baselines")
    nightly = suite(101)
    candidate = json.loads((nightly.report_dir / "candidate-baselines" / "toy-node" / "toy.json").read_text())
    # what --update-baselines would write: the median of the baseline's run and this one
    assert candidate["metrics"]["toy[size=1024]::tflops"]["value"] == 100.5
    assert [r["value"] for r in candidate["metrics"]["toy[size=1024]::tflops"]["runs"]] == [100.0, 101.0]
    assert candidate["profile"] == "toy-node"


@pytest.mark.parametrize("content, message", [
    ("rules:\n  - check: toy\n    rel_tol: abc\n", "ERROR: gpucert: *thresholds.yaml: rules[0].rel_tol: expected a number, got 'abc'"),
    ("rules:\n  - chek: toy\n", "ERROR: gpucert: *thresholds.yaml: rules[0]: unknown key 'chek'*"),
])
def test_broken_thresholds_stop_the_run_with_one_line(suite, content, message):
    suite.path.joinpath("thresholds.yaml").write_text(content)
    broken = suite(100)
    assert broken.ret == pytest.ExitCode.USAGE_ERROR
    broken.stderr.fnmatch_lines(lines(message))
    assert "Traceback" not in broken.stderr.str() + broken.stdout.str()


def test_profile_mismatch_is_an_error(suite):
    suite(100, "--update-baselines")
    doc = json.loads(baseline_file(suite).read_text())
    doc["profile"] = "8xA100-SXM4-80GB-NV12"
    baseline_file(suite).write_text(json.dumps(doc))
    mismatch = suite(100)
    assert mismatch.ret == pytest.ExitCode.USAGE_ERROR
    mismatch.stderr.fnmatch_lines(lines("ERROR: gpucert: *toy.json: measured on profile '8xA100-SXM4-80GB-NV12', this run is profile 'toy-node'*"))


def test_update_refuses_too_few_samples(suite, pytester):
    pytester.makepyfile(test_few='''
import pytest
@pytest.mark.hardware
def test_few(gpucert):
    gpucert.record("tflops", 1.0, unit="TFLOP/s", samples=[1.0], direction="higher")
''')
    result = suite(100, "--update-baselines", "-k", "few")
    result.stdout.fnmatch_lines(lines("*! few::tflops not written: 1 sample(s), thresholds.yaml asks for at least 3*"))
    assert not (suite.path / "baselines" / "toy-node" / "few.json").exists()


def test_junitxml_carries_metrics(suite):
    result = suite(100, "--junitxml", "junit.xml")
    assert result.ret == 0
    tree = ET.parse(suite.path / "junit.xml")
    props = {p.get("name"): p.get("value") for p in tree.iter("property")}
    assert props["gpucert:toy[size=1024]::tflops"] == "100.0"
    assert props["gpucert:toy[size=1024]::tflops:verdict"] == "new"


def test_failure_mid_check_keeps_what_was_measured(suite, pytester):
    pytester.makepyfile(test_crash='''
import pytest
@pytest.mark.hardware
def test_crash(gpucert):
    gpucert.record("tflops", 5.0, unit="TFLOP/s", direction="higher")
    gpucert.record_error("latency_us", "engine timed out after 30 s", unit="us")
    raise RuntimeError("engine died")

@pytest.mark.hardware
def test_no_gpu(gpucert):
    pytest.skip("no CUDA device: <GPU> checks need one")
''')
    result = suite(100, "-k", "crash or no_gpu", "--update-baselines")
    assert result.ret == 1
    check = next(c for c in result.metrics["checks"] if c["check"] == "crash")
    assert check["outcome"] == "failed" and "RuntimeError: engine died" in check["message"]
    assert [m["verdict"] for m in check["metrics"]] == ["new", "fail"]
    assert check["metrics"][1]["error"] == "engine timed out after 30 s"
    skipped = result.metrics["skipped"]
    assert skipped == [{"nodeid": "test_crash.py::test_no_gpu", "check_id": "no_gpu", "reason": "no CUDA device: <GPU> checks need one"}]
    assert "no CUDA device: &lt;GPU&gt; checks need one" in result.html
    # a check that raised never writes its partial numbers into the baseline
    assert not (suite.path / "baselines" / "toy-node" / "crash.json").exists()


def test_interrupted_session_marks_the_stopped_and_unrun_checks_incomplete(suite, pytester):
    """Ctrl-C (or a wall-clock budget's SIGINT) inside a check: what it measured stays, the check
    and those after it are "incomplete" — never "pass" with no metrics (seen on the GPU node)."""
    pytester.makepyfile(test_stop='''
import pytest
@pytest.mark.inference
def test_first(gpucert):
    gpucert.record("tok_s", 10.0, unit="tok/s", direction="higher")

@pytest.mark.inference
def test_stopped(gpucert):
    gpucert.record("tok_s", 5.0, unit="tok/s", direction="higher")
    raise KeyboardInterrupt

@pytest.mark.inference
def test_never(gpucert):
    gpucert.record("tok_s", 1.0, unit="tok/s", direction="higher")
''')
    report_dir = pytester.path / "report-stop"
    # a subprocess: in-process, the interrupt would stop this self-test session too
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--profile", "toy-node", "--report-dir",
                                           str(report_dir), "-k", "first or stopped or never")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    run = json.loads((report_dir / "metrics.json").read_text())
    assert run["status"] == "interrupted" and run["verdict"] == "incomplete"
    checks = {c["check"]: c for c in run["checks"]}
    assert (checks["first"]["outcome"], checks["first"]["verdict"]) == ("passed", "new")
    stopped = checks["stopped"]
    assert (stopped["outcome"], stopped["verdict"]) == ("interrupted", "incomplete")
    assert [m["value"] for m in stopped["metrics"]] == [5.0] and "interrupted mid-check" in stopped["message"]
    never = checks["never"]
    assert (never["outcome"], never["verdict"], never["metrics"]) == ("pending", "incomplete", [])
    assert "not run: the session ended interrupted" in never["message"]
    assert run["counts"]["incomplete"] == 2
    assert 'v-incomplete">incomplete' in (report_dir / "report.html").read_text()


def test_quarantine_reports_but_does_not_block(suite):
    suite(100, "--update-baselines")
    suite.path.joinpath("thresholds.yaml").write_text(THRESHOLDS + '''
quarantine:
  - check: toy
    metric: tflops
    params: {size: 1024}
    reason: "firmware bug <FW-1>"
    expires: 2999-01-01
''')
    result = suite(50)
    result.assert_outcomes(passed=1, failed=1, warnings=1)
    assert "quarantined until 2999-01-01: firmware bug &lt;FW-1&gt;" in result.html


def test_report_escapes_every_string(suite, pytester):
    pytester.makepyfile(test_evil='''
import pytest
@pytest.mark.hardware
@pytest.mark.parametrize("name", ["<script>alert(1)</script>"])
def test_evil(gpucert, name):
    gpucert.record("x", 1.0, unit="<b>u</b>", direction="higher")
    gpucert.finding("drift", path="<img src=x>", old="a", new="b", severity="info")
''')
    result = suite(100, "-k", "evil")
    assert "<script>" not in result.html and "<img" not in result.html and "<b>u" not in result.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in result.html and "&lt;img src=x&gt;" in result.html


def test_plain_tests_write_no_report(pytester):
    pytester.makepyfile(test_plain="def test_x():\n    assert True\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 0
    assert not (pytester.path / "reports").exists()


def test_card_shows_the_share_of_the_datasheet_peak(suite, pytester):
    pytester.makepyfile(test_peak='''
import pytest
@pytest.mark.hardware
def test_peak(gpucert):
    gpucert.record("tflops", 800.0, unit="TFLOP/s", direction="higher", peak=1000.0)
''')
    result = suite(100, "-k", "peak")
    assert "80.0% of 1,000" in result.html
    metric = result.metrics["checks"][0]["metrics"][0]
    assert metric["peak"] == 1000.0


def test_a_benchmark_result_that_did_not_measure_keeps_its_error(suite, pytester):
    pytester.makepyfile(test_result='''
import types
import pytest
@pytest.mark.hardware
def test_result(gpucert):
    ok = types.SimpleNamespace(status="ok", error=None, note="budget reached")
    gpucert.record_result("gbps", ok, 10.0, unit="GB/s", direction="higher", samples=[10.0] * 3, note="NV18")
    broken = types.SimpleNamespace(status="timeout", error="rank 1 hung", note=None)
    gpucert.record_result("busbw_gbps", broken, None, unit="GB/s", direction="higher")
''')
    result = suite(100, "-k", "test_result")
    assert result.ret == 1
    first, second = result.metrics["checks"][0]["metrics"]
    assert first["note"] == "NV18; budget reached" and first["verdict"] == "new"
    assert second["status"] == "error" and second["error"] == "rank 1 hung" and second["verdict"] == "fail"


MONITORED = '''
import time
import pytest

@pytest.mark.inference
def test_served(gpucert):
    start = time.monotonic()
    time.sleep(0.6)
    gpucert.record("tok_s", 1000.0, unit="tok/s", direction="higher")
    gpucert.work(output_tokens=600, window=(start, time.monotonic()))
    gpucert.timeline("output tok/s", [start, start + 0.3], [900.0, 1100.0])

@pytest.mark.inference
def test_repeated(gpucert):
    windows = []
    for _ in range(3):  # one level measured three times, a pause between
        start = time.monotonic()
        time.sleep(0.4)
        windows.append((start, time.monotonic()))
        time.sleep(0.3)
    gpucert.work(output_tokens=[300, 300, 300], windows=windows)

@pytest.mark.hardware
def test_gemm_like(gpucert):
    time.sleep(0.2)
    gpucert.record("tflops", 5.0, unit="TFLOP/s", direction="higher")
'''


@pytest.mark.slow("child pytest sessions")
def test_monitor_attaches_to_inference_checks(suite, pytester, monkeypatch):
    """Each inference check gets the monitor's figures as metrics (judged, baselined), its samples
    as a file, and charts on the card; hardware checks only with --monitor all."""
    from . import fake_pynvml
    monkeypatch.setenv("GPUCERT_NVML_MODULE", fake_pynvml.importable(monkeypatch))  # NVML's only seam: the GPU fields
    pytester.makepyfile(test_monitored=MONITORED)
    result = suite(100, "-k", "served or gemm_like or repeated", "--monitor-interval-ms", "50")
    assert result.ret == 0, result.stdout.str()[-2000:]
    checks = {c["check"]: c for c in result.metrics["checks"]}
    served = {m["metric"]: m for m in checks["served"]["metrics"]}
    assert served["gpu_util_mean_pct"]["value"] == 90 and served["gpu_power_mean_w"]["value"] == 500
    # joules over the window the check measured (its 0.6 s sleep, as long as the host let it last:
    # 0.607 s beside two busy loops), per output token it reported
    start, end = checks["served"]["monitor"]["window_s"]
    assert 0.599 <= end - start < 0.8 and served["energy_j"]["value"] == pytest.approx(500 * (end - start), rel=0.01)
    assert served["energy_j_per_output_token"]["value"] == pytest.approx(served["energy_j"]["value"] / 600)
    assert served["gpu_mem_peak_gib"]["value"] == 20 and served["gpu_hard_slowdown_samples"]["value"] == 0
    assert served["energy_j"]["verdict"] == "new"  # judged like any other metric
    # three repeats: one repeat's energy (the median, an interval from the three), not the span's
    repeated = {m["metric"]: m for m in checks["repeated"]["metrics"]}
    assert repeated["energy_j"]["value"] == pytest.approx(500 * 0.4, rel=0.05)
    assert repeated["energy_j"]["sample_count"] == 3 and repeated["energy_j"]["stat"] == "median"
    assert repeated["energy_j_per_output_token"]["value"] == pytest.approx(3 * 500 * 0.4 / 900, rel=0.05)
    assert repeated["energy_j_per_output_token"]["sample_count"] == 3
    assert checks["served"]["findings"]["monitor"] == [{"notice": "GPU clock slowdown reasons seen: sw_power_cap"}]
    mon = checks["served"]["monitor"]
    assert mon["samples"] >= 6 and mon["timeline"]["series"]["GPU util % (mean)"][0] == 90
    assert mon["overlays"]["output tok/s"]["values"] == [900.0, 1100.0]
    assert (result.report_dir / "monitor" / "served.npz").exists()
    assert (result.report_dir / "monitor" / "session.npz").exists()
    assert checks["gemm_like"]["monitor"] is None
    assert not any(m["metric"].startswith("gpu_") for m in checks["gemm_like"]["metrics"])
    assert "Resources during served" in result.html and "output tok/s (right axis)" in result.html
    session = result.metrics["monitor"]
    assert session["interval_ms"] == 50 and session["ticks"] > 0 and session["samples"] >= 10
    assert session["jitter_ms"]["p99"] is not None and session["sampler_cpu_mean_pct"] is not None
    assert session["counter_reads"] >= 1 and session["vllm_metrics_filtered"] is None  # no vLLM attached here
    assert session["file_bytes"] == (result.report_dir / "monitor" / "session.npz").stat().st_size
    assert abs(session["clock_offset_ms"]) < 5  # one host: one monotonic clock

    everything = suite(100, "-k", "served or gemm_like", "--monitor", "all", "--monitor-interval-ms", "50")
    gemm = next(c for c in everything.metrics["checks"] if c["check"] == "gemm_like")
    assert any(m["metric"] == "gpu_util_mean_pct" for m in gemm["metrics"])
    off = suite(100, "-k", "served", "--monitor", "off")
    served_off = next(c for c in off.metrics["checks"] if c["check"] == "served")
    assert served_off["monitor"] is None and [m["metric"] for m in served_off["metrics"]] == ["tok_s"]


def test_bad_monitor_interval_is_one_line(suite):
    result = suite(100, "--monitor-interval-ms", "5")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: gpucert: monitor interval must be >= 20 ms, got 5 ms"])
