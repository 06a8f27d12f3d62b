"""VllmServer lifecycle with a real subprocess standing in for vLLM (a tiny HTTP server with /health),
started through the same code path with the engine argv replaced."""

import json
import os
import sys
import textwrap
import time

import pytest

from gpucert.process_group import group_alive
from gpucert.serving.vllm_config import default_config
from gpucert.serving.vllm_server import Endpoint, EngineStartError, VllmServer

FAKE = textwrap.dedent('''
    import argparse, json, signal, subprocess, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    ap = argparse.ArgumentParser()
    ap.add_argument("--host"); ap.add_argument("--port", type=int)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--exit-during-startup", type=int)
    ap.add_argument("--ignore-sigterm", action="store_true")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--healthy-for", type=float, default=1e9)
    ap.add_argument("--slow-for", type=float, default=0.0)  # /health answers late this long …
    ap.add_argument("--health-delay", type=float, default=0.0)  # … by this much (a busy server)
    ap.add_argument("--hang-after", type=float)  # from then on /health never answers (a hung one)
    a = ap.parse_args()
    print("INFO fake engine starting", flush=True)
    if a.ignore_sigterm:
        signal.signal(signal.SIGTERM, lambda *_: print("INFO ignoring SIGTERM", flush=True))
    if a.child:  # like vLLM's EngineCore: a second process in the group
        subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    time.sleep(a.delay)
    ready = time.monotonic()
    sick_at = ready + a.healthy_for
    if a.exit_during_startup is not None:
        print("ERROR CUDA out of memory (fake)", flush=True)
        sys.exit(a.exit_during_startup)
    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            since = time.monotonic() - ready
            if self.path == "/health" and a.hang_after is not None and since >= a.hang_after:
                time.sleep(3600)
            if self.path == "/health" and since < a.slow_for:
                time.sleep(a.health_delay)
            body = json.dumps({"data": [{"id": "fake-model"}]}).encode() if self.path == "/v1/models" else b""
            ok = self.path in ("/health", "/v1/models") and time.monotonic() < sick_at
            self.send_response(200 if ok else 503 if self.path == "/health" else 404)
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = ThreadingHTTPServer((a.host, a.port), H)
    print(f"INFO ready on {a.host}:{a.port}", flush=True)
    server.serve_forever()
''')


@pytest.fixture
def fake(tmp_path):
    script = tmp_path / "fake_vllm.py"
    script.write_text(FAKE)

    def make(*extra, **lifecycle):
        cfg = default_config()  # host 127.0.0.1, port 0 → a free port
        opts = dict(startup_timeout_s=20, health_poll_s=0.05, watch_interval_s=0.1, health_failures=2,
                    stop_timeout_s=2, health_timeout_s=0.2, health_silence_s=30) | lifecycle
        server = VllmServer(cfg, tmp_path / "report", **opts)
        server.command = [sys.executable, str(script), "--host", cfg.host, "--port", str(server.port), *extra]
        return server
    return make


def test_health_wait_and_clean_stop(fake):
    server = fake("--delay", "0.5")
    with server:
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.alive() and server.crash is None
        assert server.ready_at - server.started_at >= 0.5
        assert "ready on 127.0.0.1" in server.log_tail()
        pgid = server.proc.pid
    assert not group_alive(pgid) and server.proc.returncode is not None
    assert json.loads((server.workdir / "vllm-serve.argv.json").read_text())[-2:] == ["--delay", "0.5"]


def test_sigterm_to_the_caller_stops_the_engine(fake, tmp_path):
    """`timeout`, a CI job's time limit or systemd sends SIGTERM to the process that started the
    engine: it unwinds as after Ctrl-C through `with`, which stops the engine's own process group
    — EngineCore-like child included — instead of leaving it on the GPUs."""
    import signal
    import subprocess
    fake()  # writes the stand-in engine's script
    script = tmp_path / "caller.py"
    script.write_text(textwrap.dedent(f'''
        import sys, time
        from gpucert.serving.vllm_config import default_config
        from gpucert.serving.vllm_server import VllmServer
        server = VllmServer(default_config(), {str(tmp_path / "caller")!r}, stop_timeout_s=2, health_poll_s=0.05)
        server.command = [sys.executable, {str(tmp_path / "fake_vllm.py")!r}, "--host", "127.0.0.1",
                          "--port", str(server.port), "--child"]
        with server:
            print(server.proc.pid, flush=True)
            time.sleep(60)
        print("not reached", flush=True)
    '''))
    caller = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    pgid = int(caller.stdout.readline())
    assert group_alive(pgid)
    caller.send_signal(signal.SIGTERM)
    assert caller.wait(timeout=20) == -signal.SIGINT  # Python's exit after an unhandled Ctrl-C
    assert "not reached" not in caller.stdout.read()
    assert not group_alive(pgid)


def test_the_sigterm_handler_is_put_back(fake):
    import signal
    before = signal.getsignal(signal.SIGTERM)
    with fake():
        assert signal.getsignal(signal.SIGTERM) is not before  # main thread, default handler: ours
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.fault('engine', 'the engine exits during start-up', 'an error with the log tail and the log path')
def test_exit_during_startup_raises_with_log_tail_and_path(fake):
    server = fake("--exit-during-startup", "3")
    with pytest.raises(EngineStartError) as err:
        server.start()
    assert "exited during startup with code 3" in str(err.value)
    assert "CUDA out of memory (fake)" in err.value.log_tail
    assert err.value.log_path == server.log_path and str(server.log_path) in str(err.value)


@pytest.mark.fault('engine', 'the engine never becomes healthy', 'start-up timeout raised, the process group killed')
def test_startup_timeout_raises_and_kills(fake):
    server = fake("--delay", "30", startup_timeout_s=0.5)
    with pytest.raises(EngineStartError, match="not healthy after 0.5 s"):
        server.start()
    assert not group_alive(server.proc.pid)


@pytest.mark.fault('engine', 'the engine is killed mid-run', 'the watcher reports the death and when')
def test_watcher_notices_a_kill_mid_run_with_the_time(fake):
    server = fake()
    with server:
        t_kill = time.time()
        os.kill(server.proc.pid, 9)
        deadline = time.monotonic() + 5
        while server.crash is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.crash is not None and not server.alive()
        assert "exited with code -9" in server.crash.reason and server.crash.returncode == -9
        assert t_kill <= server.crash.at <= t_kill + 2
        assert server.crash.log_path == server.log_path


@pytest.mark.fault('engine', '/health fails while the engine process lives', 'declared unhealthy, not waited on forever')
def test_watcher_notices_health_failing_while_the_process_lives(fake):
    with fake("--healthy-for", "0.5") as server:
        deadline = time.monotonic() + 5
        while server.crash is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.crash is not None and "/health failed 2 times in a row" in server.crash.reason
        assert server.crash.returncode is None and server.proc.poll() is None and not server.alive()


def test_a_busy_server_answering_health_late_is_not_a_crash(fake):
    """Under thousands of streams vLLM answers /health seconds late: silence shorter than
    health_silence_s must not end the run (it did, at 2,048 streams, before this rule)."""
    with fake("--slow-for", "1.2", "--health-delay", "0.5", health_silence_s=2.5) as server:
        time.sleep(1.2)  # silent probes: well past health_failures (2) × the probe timeout (0.2 s)
        assert server.crash is None and server.alive()
        time.sleep(2.5)  # answers in time again, and the silence never reached the window
        assert server.crash is None and server.alive()


@pytest.mark.fault('engine', 'the engine hangs (no answer at all)', 'declared dead after the silence window')
def test_a_hung_server_is_declared_dead_after_the_silence_window(fake):
    with fake("--hang-after", "0.3", health_silence_s=1.0) as server:
        deadline = time.monotonic() + 8
        while server.crash is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.crash is not None and "/health gave no answer for" in server.crash.reason
        assert server.crash.returncode is None and server.proc.poll() is None
        assert server.crash.at - server.ready_at >= 1.0 + 0.3 - 0.2


@pytest.mark.fault('engine', 'the engine ignores SIGTERM', 'SIGKILL after the grace, the whole group gone')
def test_stop_escalates_to_sigkill_and_the_group_is_gone(fake):
    server = fake("--ignore-sigterm", "--child")
    server.start()
    pgid = server.proc.pid
    result = server.stop()
    assert result.signal == "SIGKILL" and result.returncode == -9 and result.group_gone
    assert result.seconds >= 2  # the SIGTERM grace period was waited out
    assert "ignoring SIGTERM" in server.log_tail()
    assert not group_alive(pgid)
    assert server.crash is None  # a requested stop is not a crash


def test_sigterm_suffices_for_a_well_behaved_server(fake):
    server = fake()
    server.start()
    result = server.stop()
    assert result.signal == "SIGTERM" and result.group_gone and result.seconds < 2


def test_preset_model_is_materialized_and_named(tmp_path):
    server = VllmServer(default_config(), tmp_path)
    argv = server.argv()
    assert argv[4] == str(tmp_path / "models" / "qwen2.5-1.5b")
    assert (tmp_path / "models" / "qwen2.5-1.5b" / "config.json").exists()
    assert argv[argv.index("--served-model-name") + 1] == "qwen2.5-1.5b" == server.model_name
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == str(server.port)


def test_endpoint_hides_the_api_key(fake, monkeypatch):
    secret = "sk-very-secret-123"
    monkeypatch.setenv("GPUCERT_TEST_KEY", secret)
    with fake() as server:
        ep = Endpoint(server.base_url + "/v1/", api_key_env="GPUCERT_TEST_KEY").discover_model()
        assert ep.model == "fake-model" and ep.base_url == server.base_url
    assert ep.headers() == {"Authorization": f"Bearer {secret}"}
    assert secret not in repr(ep) and secret not in json.dumps(ep.to_dict()) and secret not in str(ep)
    assert ep.to_dict()["api_key_env"] == "GPUCERT_TEST_KEY"
    monkeypatch.delenv("GPUCERT_TEST_KEY")
    with pytest.raises(ValueError, match="GPUCERT_TEST_KEY is not set"):
        ep.headers()


def test_memory_released_reads_nvml_after_the_stop(monkeypatch):
    """NVML (a fake module at that boundary: 10 and 20 GiB used) against the use before start."""
    from gpucert.serving.vllm_server import gpu_memory_used_mib, memory_released

    from . import fake_pynvml
    nvml = fake_pynvml.importable(monkeypatch)
    assert gpu_memory_used_mib(nvml) == [10240.0, 20480.0]
    assert memory_released([10200.0, 20400.0], nvml).startswith("GPU memory released (GPU0 10,240 MiB")
    held = memory_released([1000.0, 1000.0], nvml, timeout_s=0.3)
    assert held.startswith("GPU memory NOT released 0.3 s after the stop (GPU0 10,240 MiB, GPU1 20,480 MiB")
    assert memory_released(None) == "GPU memory not checked (no NVML)"
    assert gpu_memory_used_mib("gpucert_no_such_nvml") is None


def test_the_engine_command_is_logged_without_secrets():
    from gpucert.serving.vllm_server import redacted
    line = redacted(["vllm", "serve", "m", "--api-key", "sk-123", "--hf-token=hf_abc", "--max-num-batched-tokens",
                     "8192", "--ssl-keyfile", "k.pem"])
    assert "sk-123" not in line and "hf_abc" not in line
    assert line == "vllm serve m --api-key *** --hf-token=*** --max-num-batched-tokens 8192 --ssl-keyfile k.pem"
