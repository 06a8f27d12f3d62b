"""`--update-baselines` stores nothing from a check that failed, errored, was interrupted or did not
measure: the faults are planted for real — a dead endpoint and an emulator answering 30 % of
requests with HTTP 500 under the real serving check, a check that breaks an absolute limit, one
whose fixture teardown fails, one stopped by Ctrl-C — and the next run must not be judged against
what they measured."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .emulators import emulator_process
from gpucert.serving.vllm_server import free_port
from .test_plugin import lines, suite  # noqa: F401 - the pytester session fixture

REPO = Path(__file__).resolve().parents[2]
NOT_STORED = "nothing stored (baselines nor candidates); the summary and card say why"


def serving_update(tmp_path, endpoint, *extra):
    """The real inference check (tests/inference) against `endpoint`, with --update-baselines."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "tests/inference/test_serving_baseline.py",
           "--endpoint", endpoint, "--endpoint-model", "m", "--load-opt", "concurrency=4",
           "--load-opt", "requests_per_level=20", "--load-opt", "input_len=16", "--load-opt", "output_len=8",
           "--monitor", "off", "--profile", "toy-node", f"--baselines-dir={tmp_path / 'baselines'}",
           f"--report-dir={report}", "--update-baselines", *extra]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    run.report = report
    run.metrics = json.loads((report / "metrics.json").read_text())
    return run


def stored(tmp_path, family="serving_baseline"):
    path = tmp_path / "baselines" / "toy-node" / f"{family}.json"
    return json.loads(path.read_text())["metrics"] if path.exists() else {}


def candidate(run, family="serving_baseline"):
    path = run.report / "candidate-baselines" / "toy-node" / f"{family}.json"
    return json.loads(path.read_text())["metrics"] if path.exists() else {}


@pytest.mark.fault("baselines", "--update-baselines against a dead endpoint (nothing listens on the port): "
                   "16 failed requests, SLO attainment 0, goodput 0", NOT_STORED)
def test_a_dead_endpoint_stores_nothing(tmp_path):
    run = serving_update(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    assert run.returncode == 1, run.stdout[-3000:]
    level = run.metrics["checks"][0]
    assert level["verdict"] == "fail"
    values = {m["metric"]: m["value"] for m in level["metrics"]}
    assert values["failed_requests"] >= 16 and values.get("slo_attainment_pct", 0) == 0
    assert stored(tmp_path) == {} and candidate(run) == {}
    assert "not stored as baselines" in run.stdout and "metrics not written: the check failed" in run.stdout
    refused = [c for c in run.metrics["baseline_changes"] if c["action"] == "refused"]
    assert len(refused) == len(level["metrics"]) and all("the check failed" in c["reason"] for c in refused)
    assert "the check failed" in (run.report / "report.html").read_text()


@pytest.mark.fault("baselines", "--update-baselines against a real emulator answering 30 % of requests with "
                   "HTTP 500 (a degraded tok/s)", NOT_STORED + "; a healthy emulator's run is stored")
@pytest.mark.slow("child pytest sessions")
def test_a_thirty_percent_error_rate_stores_nothing(tmp_path):
    with emulator_process("--error-rate", "0.3", "--ttft-ms", "5", "--itl-ms", "1", "--seed", "3") as emu:
        sick = serving_update(tmp_path, emu.v1_url)
    assert sick.returncode == 1, sick.stdout[-3000:]
    values = {m["metric"]: m["value"] for m in sick.metrics["checks"][0]["metrics"]}
    assert values["failed_requests"] > 0 and values["output_tok_s"] > 0  # a degraded, real tok/s
    assert stored(tmp_path) == {} and candidate(sick) == {}
    # the control: the same check against a healthy server does store its level
    with emulator_process("--ttft-ms", "5", "--itl-ms", "1") as emu:
        healthy = serving_update(tmp_path, emu.v1_url)
    assert healthy.returncode == 0, healthy.stdout[-3000:]
    assert stored(tmp_path)["serving_baseline[concurrency=4]::failed_requests"]["value"] == 0


CHECKS = '''
import pytest

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("engine did not stop")

@pytest.mark.hardware
def test_over_limit(gpucert):
    gpucert.record("tflops", 100.0, unit="TFLOP/s", direction="higher", samples=[100.0] * 3)
    gpucert.record("errors", 3.0, unit="count", direction="lower", samples=[3.0] * 3)

@pytest.mark.hardware
def test_teardown_fails(gpucert, broken_teardown):
    gpucert.record("tflops", 100.0, unit="TFLOP/s", direction="higher", samples=[100.0] * 3)

@pytest.mark.hardware
def test_one_measurement_failed(gpucert):
    gpucert.record("tflops", 100.0, unit="TFLOP/s", direction="higher", samples=[100.0] * 3)
    gpucert.record_error("latency_us", "timed out after 30 s", unit="us")

@pytest.mark.hardware
def test_known_fault(gpucert):
    gpucert.record("gbps", 1.0, unit="GB/s", direction="higher", samples=[1.0] * 3)

@pytest.mark.hardware
def test_healthy(gpucert):
    gpucert.record("tflops", 100.0, unit="TFLOP/s", direction="higher", samples=[100.0] * 3)
'''

LIMITS = '''
  - {check: over_limit, metric: errors, max: 0}
  - {check: known_fault, metric: gbps, min: 10}
quarantine:
  - {check: known_fault, metric: gbps, reason: "vendor bug 7", expires: 2999-01-01}
'''


@pytest.mark.parametrize("check, reason", [
    pytest.param("over_limit", "the check failed: *errors: FAIL: 3 count is above the maximum 0*", id="absolute-limit",
                 marks=pytest.mark.fault("baselines", "--update-baselines with a check that breaks an absolute limit "
                                         "(3 errors, max 0) beside a good metric", NOT_STORED + " (the good metric neither)")),
    pytest.param("teardown_fails", "the check errored: *RuntimeError: engine did not stop*", id="teardown-error",
                 marks=pytest.mark.fault("baselines", "--update-baselines with a check whose fixture teardown raises "
                                         "after it measured", NOT_STORED)),
    pytest.param("one_measurement_failed", "the check failed: *latency_us: FAIL: measurement failed*",
                 id="measurement-failed", marks=pytest.mark.fault(
                     "baselines", "--update-baselines with a check that records one failed measurement (timeout) "
                     "and one good one", NOT_STORED + " (the good one neither)")),
    pytest.param("known_fault", "a quarantined failure is a known fault, not a baseline (vendor bug 7)",
                 id="quarantined", marks=pytest.mark.fault(
                     "baselines", "--update-baselines with a quarantined failure (the check passes)", NOT_STORED)),
])
def test_a_failed_check_stores_nothing(suite, pytester, check, reason):
    pytester.makepyfile(test_faults=CHECKS)
    pytester.path.joinpath("thresholds.yaml").write_text(pytester.path.joinpath("thresholds.yaml").read_text()
                                                         + LIMITS)
    result = suite(100, "-k", f"{check} or healthy", "--update-baselines")
    family = json.loads((suite.path / "baselines" / "toy-node" / "faults.json").read_text())["metrics"]
    assert sorted(family) == ["healthy::tflops"], family  # the healthy check of the family only
    candidates = json.loads((result.report_dir / "candidate-baselines" / "toy-node" / "faults.json").read_text())
    assert sorted(candidates["metrics"]) == ["healthy::tflops"]
    result.stdout.fnmatch_lines(lines("not stored as baselines (nor as candidates):", f"*{check}*not written: {reason}"))
    refused = [c for c in result.metrics["baseline_changes"] if c["action"] == "refused"]
    assert refused and {c["key"].split("::")[0] for c in refused} == {check}
    assert "a quarantined" in result.html or check != "known_fault"


@pytest.mark.fault("baselines", "--update-baselines run stopped by Ctrl-C inside a check (a real SIGINT "
                   "in a subprocess session), a later check never ran", NOT_STORED + " for either; checks that "
                   "finished before are stored")
def test_an_interrupted_session_stores_only_what_finished(pytester):
    pytester.makepyfile(test_stop='''
import os, signal
import pytest

@pytest.mark.hardware
def test_first(gpucert):
    gpucert.record("tflops", 10.0, unit="TFLOP/s", direction="higher")

@pytest.mark.hardware
def test_stopped(gpucert):
    gpucert.record("tflops", 5.0, unit="TFLOP/s", direction="higher")
    os.kill(os.getpid(), signal.SIGINT)

@pytest.mark.hardware
def test_never(gpucert):
    gpucert.record("tflops", 1.0, unit="TFLOP/s", direction="higher")
''')
    report = pytester.path / "report"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--profile", "toy-node", "--report-dir",
                                           str(report), "--update-baselines")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    family = json.loads((pytester.path / "baselines" / "toy-node" / "stop.json").read_text())["metrics"]
    assert sorted(family) == ["first::tflops"]
    changes = json.loads((report / "metrics.json").read_text())["baseline_changes"]
    refused = {c["key"]: c["reason"] for c in changes if c["action"] == "refused"}
    assert refused == {"stopped::tflops": "the check was interrupted; what it measured is partial"}
