"""`gpucert loadgen` / `gpucert emulator`: JSON shape, exit codes, one-line errors, no key leak."""

from __future__ import annotations

import json
import time

import pytest

from gpucert.cli import main
from gpucert.serving.vllm_server import free_port

from emulators import emulator_process, wait_gone



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
     "unknown dataset 'lmsys' (valid: random, synthetic, sharegpt, jsonl)"),
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
