"""`gpucert loadgen` / `gpucert emulator`: JSON shape, exit codes, one-line errors, no key leak."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time

import pytest
from aiohttp import web

from gpucert.cli import main
from gpucert.serving.emulator import Emulator, EmulatorConfig
from gpucert.serving.vllm_server import free_port

from .emulators import emulator_process, wait_gone
from .misbehaving_server import serving



@pytest.fixture(scope="module")
def emulator_url():
    with emulator_process("--ttft-ms", "5", "--itl-ms", "1", "--tokens-per-chunk", "2") as emulator:
        yield emulator.v1_url


def test_json_shape_and_key_never_leaks(emulator_url, monkeypatch, capsys, caplog):
    secret = "sk-do-not-print-4242"
    monkeypatch.setenv("GPUCERT_TEST_KEY", secret)
    rc = main(["loadgen", "--base-url", emulator_url, "--model", "m", "--endpoint",
               "completions", "--concurrency", "4", "--num-requests", "12", "--dataset",
               "random", "--input-len", "16", "--output-len", "8", "--token-ids", "--warmup",
               "2", "--api-key-env", "GPUCERT_TEST_KEY", "--slo", "ttft_ms=1000", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert secret not in out + err + caplog.text
    result = json.loads(out)
    s = result["summary"]
    assert (s["completed"], s["failed"]) == (12, 0)
    assert s["total_output_tokens"] == 12 * 8 and s["total_prompt_tokens"] == 12 * 16
    for key in ("duration_s", "requests_per_s", "output_tokens_per_s", "total_tokens_per_s"):
        assert s[key] > 0
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        assert set(s[name]) >= {"mean", "p50", "p90", "p99"}
    assert s["goodput_requests_per_s"] == pytest.approx(s["requests_per_s"])
    assert {"loop_lag_ms", "send_delay_ms", "client_may_be_bottleneck"} <= set(result["client"])
    assert result["errors"] == {}


def test_file_datasets_drive_the_load(emulator_url, tmp_path, capsys):
    """ShareGPT: first human turn as the prompt, the answer's length (words) as max_tokens; a file
    shorter than the run repeats. JSONL: token-id prompts count exactly, lines set their own length."""
    share = tmp_path / "share.json"
    share.write_text(json.dumps([
        {"conversations": [{"from": "human", "value": "why is the sky blue"}, {"from": "gpt", "value": "a b c"}]},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "one two three four five"}]},
        {"conversations": [{"from": "gpt", "value": "no question first"}]},
    ]))
    assert main(["loadgen", "--base-url", emulator_url, "--model", "m", "--concurrency", "2", "--num-requests", "4",
                 "--dataset", "sharegpt", "--dataset-path", str(share), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["summary"]
    assert s["completed"] == 4 and s["total_output_tokens"] == 2 * (3 + 5)
    assert s["total_prompt_tokens"] == 2 * (5 + 1)  # the emulator counts a text prompt's words
    lines = tmp_path / "p.jsonl"
    lines.write_text('{"prompt": [5, 6, 7], "output_tokens": 2}\n\n{"prompt": "plain text here"}\n')
    assert main(["loadgen", "--base-url", emulator_url, "--model", "m", "--concurrency", "1", "--num-requests", "2",
                 "--dataset", "jsonl", "--dataset-path", str(lines), "--output-len", "6", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)["summary"]
    assert s["total_output_tokens"] == 2 + 6 and s["total_prompt_tokens"] == 3 + 3


def test_connection_refused_is_measured_failure(capsys):
    rc = main(["loadgen", "--base-url", f"http://127.0.0.1:{free_port()}/v1", "--model", "m",
               "--concurrency", "2", "--num-requests", "3", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 1
    assert result["summary"]["failed"] == 3
    (text, count), = result["errors"].items()
    assert "cannot connect to 127.0.0.1:" in text and "refused" in text and count == 3


@pytest.mark.parametrize("args, message", [
    (["--num-requests", "3"], "give --concurrency N or --request-rate R"),
    (["--concurrency", "0"], "--concurrency: must be >= 1"),
    (["--concurrency", "1", "--num-requests", "1", "--endpoint", "chat", "--token-ids"],
     "--token-ids needs --endpoint completions"),
    (["--concurrency", "1", "--num-requests", "1", "--api-key-env", "GPUCERT_UNSET_VAR_X"],
     "environment variable GPUCERT_UNSET_VAR_X is not set"),
    (["--concurrency", "1", "--num-requests", "1", "--dataset", "lmsys"],
     "unknown dataset 'lmsys' (valid: random, synthetic, sharegpt, jsonl, prefix, multiturn, trace)"),
    (["--concurrency", "1", "--num-requests", "1", "--dataset", "sharegpt"],
     "dataset sharegpt needs a file (load setting dataset_path, or --dataset-path)"),
    (["--concurrency", "1", "--num-requests", "1", "--dataset", "jsonl", "--dataset-path", "/nonexistent.jsonl"],
     "/nonexistent.jsonl: cannot read (No such file or directory)"),
    (["--concurrency", "1", "--num-requests", "1", "--range-ratio", "1.5"], "range_ratio must be in [0, 1)"),
    (["--concurrency", "1", "--num-requests", "1", "--slo", "lat=5"], "unknown SLO"),
    (["--concurrency", "1", "--num-requests", "1", "--ramp-up", "-1"], "ramp-up must be >= 0 s"),
    (["--request-rate", "5", "--num-requests", "1", "--ramp-up", "2"],
     "a ramp-up applies to a fixed concurrency, not to a request rate"),
])
def test_bad_input_is_one_line_exit_2(args, message, capsys):
    rc = main(["loadgen", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("gpucert: error: ") and message in err


def test_emulator_bad_input(capsys):
    assert main(["emulator", "--error-rate", "2"]) == 2
    assert "error_rate must be within [0, 1]" in capsys.readouterr().err
    assert main(["emulator", "--record-timings", "--processes", "2"]) == 2
    assert "--record-timings needs --processes 1" in capsys.readouterr().err


def test_emulator_processes_share_the_port_and_stop_together():
    """--processes 2: two servers on one port (SO_REUSEPORT), both answering; SIGTERM to the
    first takes the other down with it."""
    import urllib.request
    with emulator_process("--processes", "2") as emulator:
        pids: set[str] = set()
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            try:  # a new connection each time: the kernel hashes each to one of the two sockets
                with urllib.request.urlopen(f"http://127.0.0.1:{emulator.port}/health", timeout=2) as response:
                    pids.add(response.headers["X-Emulator-Pid"])
            except OSError:
                time.sleep(0.05)
        assert len(pids) == 2, f"answered by {pids}"
    child = (pids - {str(emulator.proc.pid)}).pop()
    assert wait_gone(int(child)), "the second emulator process outlived the first"


# ---- --model from the server: GET /v1/models ----------------------------------------------------

@contextlib.contextmanager
def models_server(listing):
    """A real aiohttp server on 127.0.0.1, on its own loop and thread: GET /v1/models answers
    `listing` (the OpenAI list object), completions stream from the emulator; `seen` keeps the
    model each completion asked for."""
    emulator, seen = Emulator(EmulatorConfig(ttft_ms=1, itl_ms=0)), []

    async def models(request):
        return web.json_response(listing)

    async def completions(request):
        seen.append((await request.json())["model"])  # aiohttp keeps the body for the emulator
        return await emulator._completions(request)

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runner = web.AppRunner(app, access_log=None)

    async def start():
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def _listing(*ids):
    return {"object": "list", "data": [{"id": i, "object": "model", "owned_by": "vllm"} for i in ids]}


def test_model_defaults_to_the_first_model_the_server_lists(capsys):
    with models_server(_listing("served-first", "a-lora-adapter")) as (url, seen):
        rc = main(["loadgen", "--base-url", url, "--concurrency", "2", "--num-requests", "4",
                   "--output-len", "4", "--json"])
        result = json.loads(capsys.readouterr().out)
        assert rc == 0 and result["summary"]["completed"] == 4
        assert seen == ["served-first"] * 4  # every request named the listed model
        assert (result["config"]["model"], result["config"]["model_from_server"]) == ("served-first", True)
        assert main(["loadgen", "--base-url", url, "--concurrency", "1", "--num-requests", "1",
                     "--output-len", "2"]) == 0
        assert capsys.readouterr().out.startswith("model served-first (the server's first, from GET /v1/models)\n")
        # --model given: the server is not asked, and the name is sent as given
        assert main(["loadgen", "--base-url", url, "--model", "mine", "--concurrency", "1", "--num-requests", "1",
                     "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["config"]["model_from_server"] is False and seen[-1] == "mine"


def test_model_from_the_emulators_own_list(emulator_url, capsys):
    assert main(["loadgen", "--base-url", emulator_url, "--concurrency", "1", "--num-requests", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["model"] == "gpucert-emulator"


@pytest.mark.parametrize("server, message", [
    pytest.param("refused", r"--model not given, and GET http://127\.0\.0\.1:\d+/v1/models failed: Connection refused$",
                 marks=pytest.mark.fault("loadgen", "no --model, and nothing listens at --base-url",
                                         "one line 'GET …/v1/models failed: Connection refused', exit 2"),
                 id="refused"),
    pytest.param("empty", r"GET http://127\.0\.0\.1:\d+/v1/models lists no model; give --model NAME$",
                 marks=pytest.mark.fault("loadgen", "no --model, and GET /v1/models lists no model",
                                         "one line 'lists no model; give --model NAME', exit 2"), id="empty"),
    pytest.param("not-a-list", r"did not answer an OpenAI model list; give --model NAME$",
                 marks=pytest.mark.fault("loadgen", "no --model, and GET /v1/models answers JSON that is no model list",
                                         "one line, exit 2"), id="not-a-list"),
    pytest.param("404", r"GET http://127\.0\.0\.1:\d+/v1/models answered HTTP 404; give --model NAME$",
                 marks=pytest.mark.fault("loadgen", "no --model, and the server answers GET /v1/models with 404",
                                         "one line 'answered HTTP 404', exit 2"), id="404"),
])
def test_model_discovery_failures_are_one_line(server, message, capsys):
    args = ["--concurrency", "1", "--num-requests", "1"]
    if server == "refused":
        rc = main(["loadgen", "--base-url", f"http://127.0.0.1:{free_port()}/v1", *args])
    elif server == "404":
        with serving(lambda body: []) as srv:  # answers every GET 404
            rc = main(["loadgen", "--base-url", srv.v1_url, *args])
            assert srv.requests == []  # no completion was sent
    else:
        with models_server(_listing() if server == "empty" else {"data": "no"}) as (url, seen):
            rc = main(["loadgen", "--base-url", url, *args])
            assert seen == []
    captured = capsys.readouterr()
    assert (rc, captured.out) == (2, "")
    assert captured.err.count("\n") == 1 and captured.err.startswith("gpucert: error: "), captured.err
    assert re.search(message, captured.err.rstrip("\n")), captured.err


# ---- goodput and SLO attainment in the text output -----------------------------------------------

def _slo_line(out):
    found = re.search(r"^goodput (\S+) requests/s  SLO attainment (\S+) %  \(SLO: (.*)\)$", out, re.M)
    return found and (float(found[1]), float(found[2]), found[3])


def test_text_output_shows_goodput_and_slo_attainment(emulator_url, capsys):
    base = ["loadgen", "--base-url", emulator_url, "--model", "m", "--concurrency", "2", "--num-requests", "6",
            "--output-len", "4"]
    assert main(base + ["--slo", "ttft_ms=5000", "--slo", "e2e_ms=10000"]) == 0
    out = capsys.readouterr().out
    rate = float(re.search(r"^requests/s (\S+)", out, re.M)[1])
    goodput, attained, slos = _slo_line(out)
    assert (attained, slos) == (100.0, "ttft_ms <= 5000, e2e_ms <= 10000") and goodput == pytest.approx(rate, abs=0.01)
    # an SLO no request can meet (TTFT under 1 µs; the emulator's is 5 ms): 0 goodput, 0 %
    assert main(base + ["--slo", "ttft_ms=0.001"]) == 0
    assert _slo_line(capsys.readouterr().out) == (0.0, 0.0, "ttft_ms <= 0.001")
    assert main(base) == 0  # no --slo: no goodput line
    assert "goodput" not in capsys.readouterr().out


@pytest.mark.fault("secrets", "no --model, a --base-url with user:password, and nothing listens there",
                   "the one-line error shows the URL it asked without its user:password")
def test_model_discovery_error_never_shows_the_password(capsys):
    secret = "pw-do-not-print-7373"
    rc = main(["loadgen", "--base-url", f"http://user:{secret}@127.0.0.1:{free_port()}/v1", "--concurrency", "1",
               "--num-requests", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "GET http://127.0.0.1:" in err and "failed: Connection refused" in err, err
    assert secret not in err and "user" not in err
