"""Secrets never leave (issue 13): a real server on 127.0.0.1 that echoes the credentials it is
sent (leaky_server.py) in a 401 body, inside the stream, in an error event mid-stream, in
/v1/models and in an HTML page; `pytest -m inference` runs against it with `--api-key-env` (or a
URL password, or a key in the URL's query) and `--junitxml`, and no output — stdout/stderr (with
live logging), gpucert.log, metrics.json, report.html, junit.xml, metrics.prom, candidate
baselines, the history record, any file in the report folder — holds the credential in any
form (raw, URL-encoded, JSON- or HTML-escaped, base64 in a Basic header)."""

from __future__ import annotations

import base64
import contextlib
import html
import json
import logging
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest

from gpucert import redaction
from gpucert.cli import main
from gpucert.progress import Progress
from gpucert.serving.vllm_config import default_config
from gpucert.serving.vllm_server import VllmServer, free_port, health_ok

REPO = Path(__file__).resolve().parents[2]
LEAKY = Path(__file__).with_name("leaky_server.py")
# characters that escape differently in JSON (\"), URLs (%2F, %2B, %22) and HTML (&quot;)
KEY = 'sk-live/4242+"gpucert"-secret'
PASSWORD = "p@ss/w:rd+4242"
QUERY_KEY = "qk-0123456789abcdef"
KEY_ENV = "GPUCERT_SELFTEST_API_KEY"


def forms(secret: str) -> set[str]:
    """Every way the secret could be written out."""
    return {secret, urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret), urllib.parse.quote_plus(secret),
            json.dumps(secret)[1:-1], html.escape(secret), html.escape(secret, quote=False)}


def assert_nowhere(secrets: set[str], texts: dict[str, str]) -> None:
    leaks = [(name, secret) for name, text in texts.items() for secret in secrets if secret in text]
    assert not leaks, f"secret written to: {sorted({name for name, _ in leaks})}"


def files_under(*folders: Path) -> dict[str, str]:
    """Every file under the folders, as text (binary ones too: a secret in an .npz is a leak)."""
    out = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                out[str(path.relative_to(folder.parent))] = path.read_bytes().decode("utf-8", "replace")
    return out


@contextlib.contextmanager
def leaky_server(mode: str, expect: str):
    """leaky_server.py in a process of its own; the credential it expects goes by environment."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(LEAKY), "--port", str(port), "--mode", mode],
                            env={**os.environ, "LEAKY_EXPECT": expect}, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not health_ok(f"http://127.0.0.1:{port}", timeout=1.0):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"leaky_server.py --mode {mode} did not start")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def certify(tmp_path: Path, endpoint: str, *args: str, env: dict | None = None):
    """`pytest -m inference` (sanity and one level) against `endpoint`, with every output on:
    JUnit with captured logs, live logging to stdout, history."""
    junit = tmp_path / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "inference", "-p", "no:cacheprovider", "-rA",
           "-k", "sanity or serving_baseline", f"--baselines-dir={tmp_path / 'b'}", f"--report-dir={tmp_path / 'r'}",
           f"--history-dir={tmp_path / 'h'}", f"--junitxml={junit}", "-o", "junit_logging=all",
           "-o", "log_cli=true", "--log-cli-level=INFO", "--log-level=INFO", "--endpoint", endpoint, *args,
           "--load-opt", "concurrency=2", "--load-opt", "output_len=4", "--load-opt", "input_len=4",
           "--load-opt", "min_requests=4", "--load-opt", "requests_per_level=1", "--load-opt", "warmup=0"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    texts = {"stdout": run.stdout, "stderr": run.stderr, "junit.xml": junit.read_text(),
             **files_under(tmp_path / "r", tmp_path / "b", tmp_path / "h")}
    return run, metrics, texts


def notes_of(metrics: dict) -> str:
    return " ".join(str(m.get("note")) for c in metrics["checks"] for m in c["metrics"]
                    if m["metric"] == "failed_requests")


KEY_CASES = [
    pytest.param("401", True, marks=pytest.mark.fault(
        "secrets", "the server answers 401 with the Bearer key echoed in its JSON error body",
        "the check fails with the error kept, the key redacted (***) in stdout, gpucert.log, metrics.json, report.html, "
        "junit.xml, metrics.prom, history (no candidate baseline: the check failed)"), id="401-body"),
    pytest.param("stream", True, marks=pytest.mark.fault(
        "secrets", "the server streams the Bearer key as chunk text, then an error object (no message) quoting it",
        "the failed requests are counted with the error object redacted; the key in no output"), id="in-stream"),
    pytest.param("midstream", True, marks=pytest.mark.fault(
        "secrets", "the server sends an error event quoting the Bearer key after two tokens",
        "the failed requests are counted with the error redacted; the key in no output"), id="error-mid-stream"),
    pytest.param("models", False, marks=pytest.mark.fault(
        "secrets", "GET /v1/models names the model after the key (id and owned_by)",
        "the model is served by that name and kept with the configuration as ***; the key in no output"),
        id="models-id"),
    pytest.param("html500", True, marks=pytest.mark.fault(
        "secrets", "the server answers 500 with an HTML page quoting the key HTML-escaped and URL-encoded",
        "the failures are kept with the escaped key redacted; no form of it in any output"), id="html-500"),
]


@pytest.mark.parametrize("mode, fails", KEY_CASES)
@pytest.mark.slow("child pytest sessions")
def test_a_server_echoing_the_api_key_never_gets_it_written(tmp_path, mode, fails):
    with leaky_server(mode, f"Bearer {KEY}") as port:
        run, metrics, texts = certify(tmp_path, f"http://127.0.0.1:{port}/v1", "--api-key-env", KEY_ENV,
                                      env={KEY_ENV: KEY})
    assert run.returncode == (1 if fails else 0), run.stdout[-3000:] + run.stderr[-2000:]
    assert {"stdout", "junit.xml", "r/gpucert.log", "r/metrics.json", "r/report.html", "r/metrics.prom"} <= set(texts)
    assert any(n.startswith("h/") for n in texts)
    # a failed check stores no candidate baseline (honest baselines); a passing one does, redacted
    assert any(name.startswith("r/candidate-baselines/") for name in texts) == (not fails)
    if fails:  # the echo reached the writers: the error is kept, with the key masked
        assert "***" in notes_of(metrics), notes_of(metrics)
        assert "***" in texts["junit.xml"] or "***" in texts["r/report.html"]
    else:  # the key-named model reached the configuration kept with the baseline
        candidate = next(text for name, text in texts.items() if name.endswith("vllm_sanity.json"))
        assert '"model": "Bearer ***"' in candidate
    assert_nowhere(forms(KEY) | forms(f"Bearer {KEY}"), texts)


@pytest.mark.fault("secrets", "the endpoint URL carries user:password and the server echoes the Basic header in a 401",
                   "requests carry a Basic header; the check fails on the 401; password and its base64 form in no output")
def test_a_url_password_echoed_back_is_never_written(tmp_path):
    """`--endpoint http://user:password@host/v1`: the credentials go as a Basic header (the host
    is the host), the server echoes the header in its 401 body; neither the password nor its
    base64 form is written."""
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    with leaky_server("401", f"Basic {basic}") as port:
        url = f"http://bob:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:{port}/v1"
        run, metrics, texts = certify(tmp_path, url)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert "***" in notes_of(metrics)
    # the check failed, so no candidate baseline keeps the configuration (honest baselines)
    assert not any(name.endswith("vllm_sanity.json") for name in texts)
    assert_nowhere(forms(PASSWORD) | {basic}, texts)


@pytest.mark.fault("secrets", "the endpoint URL carries ?api_key=… and the server quotes its query in an error event",
                   "requests carry the query; the key in no output; URL shown with api_key=***")
def test_a_key_in_the_endpoint_query_is_never_written(tmp_path):
    with leaky_server("midstream", QUERY_KEY) as port:
        run, metrics, texts = certify(tmp_path, f"http://127.0.0.1:{port}/v1?api_key={QUERY_KEY}")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert "revoked mid-stream" in notes_of(metrics) and "***" in notes_of(metrics)
    assert_nowhere(forms(QUERY_KEY), texts)


@pytest.fixture
def secret_scope():
    """A scope of gpucert.redaction of the test's own (the CLI and the plugin open theirs)."""
    depth = redaction.push_scope()
    yield
    redaction.pop_scope(depth)


@pytest.mark.fault("secrets", "a gpucert logger records the key in its message and in the traceback of an exception",
                   "gpucert.log has the record with *** in the message and the traceback")
def test_the_log_file_redacts_messages_and_tracebacks(tmp_path, secret_scope):
    redaction.register(KEY)
    progress = Progress(None)
    progress.open_log(tmp_path)
    logger = logging.getLogger("gpucert.serving.selftest")
    try:
        try:
            raise RuntimeError(f"server said: invalid key {json.dumps(KEY)}")
        except RuntimeError:
            logger.exception("request with Authorization: Bearer %s failed", KEY)
    finally:
        progress.close_log()
    text = (tmp_path / "gpucert.log").read_text()
    assert "request with Authorization: Bearer *** failed" in text and "invalid key \"***\"" in text
    assert "Traceback" in text
    assert_nowhere(forms(KEY), {"gpucert.log": text})


@pytest.mark.parametrize("as_json", [
    pytest.param(False, marks=pytest.mark.fault(
        "secrets", "`gpucert loadgen --api-key-env` (text output) against a server echoing the key in its 401 body",
        "exit 1 with the errors printed, the key as ***"), id="text"),
    pytest.param(True, marks=pytest.mark.fault(
        "secrets", "`gpucert loadgen --api-key-env --json` against a server echoing the key in its 401 body",
        "exit 1, the JSON's errors with the key as ***"), id="json"),
])
def test_the_loadgen_command_prints_no_key(monkeypatch, capsys, as_json):
    monkeypatch.setenv(KEY_ENV, KEY)
    with leaky_server("401", f"Bearer {KEY}") as port:
        rc = main(["loadgen", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--concurrency", "2",
                   "--num-requests", "4", "--input-len", "4", "--output-len", "4", "--token-ids",
                   "--api-key-env", KEY_ENV] + (["--json"] if as_json else []))
    out, err = capsys.readouterr()
    assert rc == 1
    if as_json:
        (error,) = json.loads(out)["errors"]
    else:
        (error,) = [line for line in out.splitlines() if line.startswith("error x4: ")]
    assert "HTTP 401" in error and "Incorrect API key provided: Bearer ***" in error
    assert_nowhere(forms(KEY), {"stdout": out, "stderr": err})
    assert not redaction.active()  # the command's secrets went with it


@pytest.mark.fault("secrets", "`gpucert loadgen --base-url http://user:password@host/v1` against a server echoing "
                              "the Basic header in its 401 body", "exit 1; the URL printed as user:***@host, "
                              "the password and its base64 form nowhere in stdout")
def test_the_loadgen_command_prints_no_url_password(capsys):
    basic = base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
    with leaky_server("401", f"Basic {basic}") as port:
        url = f"http://bob:{urllib.parse.quote(PASSWORD, safe='')}@127.0.0.1:{port}/v1"
        rc = main(["loadgen", "--base-url", url, "--model", "m", "--concurrency", "1", "--num-requests", "2",
                   "--input-len", "4", "--output-len", "4", "--token-ids", "--json"])
    out, err = capsys.readouterr()
    assert rc == 1
    result = json.loads(out)
    assert result["config"]["base_url"] == f"http://bob:***@127.0.0.1:{port}/v1"
    assert "Incorrect API key provided: Basic ***" in next(iter(result["errors"]))
    assert_nowhere(forms(PASSWORD) | {basic}, {"stdout": out, "stderr": err})


STAND_IN_ENGINE = """#!{python}
# stands in for the engine's Python: prints its command line as vLLM logs its arguments, then serves
import runpy, sys
print("engine args:", sys.argv, flush=True)
port = sys.argv[sys.argv.index("--port") + 1]
sys.argv = ["gpucert", "emulator", "--port", port, "--ttft-ms", "1", "--itl-ms", "1"]
runpy.run_module("gpucert.cli", run_name="__main__")
"""


@pytest.mark.fault("secrets", "the engine is started with `--api-key KEY` in its extra args (vLLM logs its arguments)",
                   "the key is not on the engine's command line (/proc/PID/cmdline), nor in its log, argv file or "
                   "gpucert.log: it reaches the engine as VLLM_API_KEY")
def test_the_engine_key_goes_by_environment_not_command_line(tmp_path, secret_scope):
    python = tmp_path / "engine-python"
    python.write_text(STAND_IN_ENGINE.format(python=sys.executable))
    python.chmod(0o755)
    progress = Progress(None)
    progress.open_log(tmp_path / "r")
    server = VllmServer(default_config({"engine_python": str(python), "model": "stand-in",
                                        "extra_args": ["--api-key", KEY, "--max-logprobs", "5"]}), tmp_path / "r" / "engine")
    try:
        server.start()
        cmdline = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode().split("\0")
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().decode().split("\0")
    finally:
        server.stop()
        progress.close_log()
    assert str(python) in cmdline and "--max-logprobs" in cmdline  # the stand-in ran; the other extra args stay
    assert f"VLLM_API_KEY={KEY}" in environ
    assert_nowhere(forms(KEY), {"cmdline": " ".join(cmdline), **files_under(tmp_path / "r")})
