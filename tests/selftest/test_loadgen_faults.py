"""Issue 13, items 5, 6 and 9: the load generator against servers that misbehave for real
(misbehaving_server.py: a real HTTP server on 127.0.0.1), through the real `gpucert loadgen`
command in a subprocess and through `pytest -m inference` in one. Every case must end as a
measured result — a failed request with its reason, a flagged token count, a level ended at its
deadline — and the command must still print its JSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .misbehaving_server import END, HEADERS, STALL, chunk, serving, sse, stream, text_chunk, usage
from .emulators import emulator_process

REPO = Path(__file__).resolve().parents[2]
OUTPUT = 6  # tokens each scripted stream is asked for (--output-len)


def loadgen(url: str, *args: str, timeout_s: float = 120) -> tuple[subprocess.CompletedProcess, dict]:
    """`gpucert loadgen --json` against `url` as a subprocess; (the process, its JSON)."""
    done = subprocess.run([sys.executable, "-m", "gpucert.cli", "loadgen", "--base-url", url, "--model", "m",
                           "--output-len", str(OUTPUT), "--input-len", "4", "--json", *args],
                          capture_output=True, text=True, timeout=timeout_s)
    assert "Traceback" not in done.stderr, done.stderr
    try:
        result = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON from gpucert loadgen (exit {done.returncode}): {done.stdout[-500:]} "
                             f"{done.stderr[-2000:]}") from None
    return done, result


def one_request(script, token_ids: bool = True) -> tuple[subprocess.CompletedProcess, dict]:
    """One request of `script`: token-id prompts asking for streamed ids, or text prompts."""
    with serving(lambda body: script) as server:
        return loadgen(server.v1_url, "--concurrency", "1", "--num-requests", "1",
                       *(("--token-ids",) if token_ids else ()))


def fault(area: str, planted: str, ending: str, id: str, *values):
    return pytest.param(*values, marks=pytest.mark.fault(area, planted, ending), id=id)


def _with(payload_bytes: bytes) -> list:
    """Headers, two good token chunks, then the planted event, then the rest of a good stream."""
    return [HEADERS, chunk(sse(text_chunk(0))), chunk(sse(text_chunk(1))), chunk(payload_bytes),
            *[chunk(sse(text_chunk(i))) for i in range(2, OUTPUT)], chunk(sse(usage(OUTPUT))), END]


DEEP = b"[" * 100_000 + b"]" * 100_000

# --- item 5: well-formed JSON of an unexpected shape ---------------------------------------------


@pytest.mark.parametrize("payload, reason", [
    fault("loadgen", "the stream sends a JSON scalar (`data: 42`)", "a failed request: bad SSE payload, expected a "
          "JSON object; the CLI prints its JSON, exit 1", "scalar", sse(b"42"), "expected a JSON object, got int 42"),
    fault("loadgen", "`choices` is an object, not a list", "a failed request naming `choices`; JSON printed, exit 1",
          "choices-object", sse({"choices": {}}), "choices is dict, not a list"),
    fault("loadgen", "`choices: [1]` (a choice that is no object)", "a failed request naming the choice; JSON "
          "printed, exit 1", "choice-scalar", sse({"choices": [1]}), "a choice is int 1, not an object"),
    fault("loadgen", "`token_ids` is a string (`\"abc\"`)", "a failed request: token_ids is not a list of integers",
          "token-ids-string", sse({"choices": [{"text": "x", "token_ids": "abc"}]}),
          "token_ids is not a list of integers: 'abc'"),
    fault("loadgen", "`token_ids` holds a bool and a float", "a failed request: token_ids is not a list of "
          "integers", "token-ids-bools", sse({"choices": [{"text": "x", "token_ids": [True, 1.5]}]}),
          "token_ids is not a list of integers"),
    fault("loadgen", "the streamed text is a number (`text: 5`)", "a failed request: the text is not a string",
          "text-number", sse({"choices": [{"text": 5}]}), "the streamed text is int, not a string"),
    fault("loadgen", "`usage` is a list", "a failed request: usage is not an object", "usage-list",
          sse({"choices": [], "usage": [1]}), "usage is list, not an object"),
    fault("loadgen", "an error object mid-stream (after 2 tokens)", "a failed request with the server's message",
          "error-mid-stream", sse({"error": {"message": "engine <overloaded>", "code": 503}}),
          "stream error: engine <overloaded>"),
    fault("loadgen", "a payload that is not JSON (`data: {oops`)", "a failed request: bad SSE payload, not JSON",
          "not-json", sse(b"{oops"), "not JSON"),
    fault("loadgen", "JSON nested 100,000 deep (the parser's recursion limit)", "a failed request: bad SSE "
          "payload, not JSON — no RecursionError", "nested-100k", sse(DEEP), "not JSON"),
    fault("loadgen", "bytes that are not UTF-8 in a payload", "a failed request: bad SSE payload, not JSON",
          "not-utf8", b"data: {\"choices\": \"\xff\xfe\"}\n\n", "not JSON"),
    fault("loadgen", "an SSE event that never ends: 9 MiB of `data: aaa…` without a blank line", "a failed request: "
          "an SSE event past 8 MiB; the client's memory stays bounded", "endless-event",
          b"data: " + b"a" * (9 * 2**20), "an SSE event past 8 MiB without its end"),
])
def test_a_payload_of_the_wrong_shape_is_a_measured_failure(payload, reason):
    done, result = one_request(_with(payload))
    assert done.returncode == 1, done.stderr
    summary = result["summary"]
    assert (summary["completed"], summary["failed"]) == (0, 1)
    (error, count), = result["errors"].items()
    assert reason in error and count == 1, error
    assert summary["total_output_tokens"] == 0  # nothing of a failed request counts as served


@pytest.mark.fault("loadgen", "chat: `delta` is a string, not an object", "every request a measured failure with "
                   "that reason; JSON printed, exit 1")
def test_a_chat_delta_that_is_no_object_is_a_measured_failure():
    script = [HEADERS, chunk(sse({"choices": [{"delta": "hello"}]})), END]
    with serving(lambda body: script) as server:
        done, result = loadgen(server.v1_url, "--endpoint", "chat", "--concurrency", "1", "--num-requests", "2")
    assert done.returncode == 1 and result["summary"]["failed"] == 2
    assert result["errors"] == {"bad SSE payload: delta is str, not an object": 2}


# --- item 5: usage that claims other than what was streamed ----------------------------------------

@pytest.mark.parametrize("claimed, ids, counted, source, flag", [
    fault("loadgen", "usage claims 10× the token ids streamed (60 for 6)", "completed, flagged per request "
          "(token_count_mismatches 1 in --json); served tokens = the 6 streamed", "usage-10x-ids",
          60, True, OUTPUT, "token_ids", "usage claims 60 tokens, 6 token ids streamed"),
    fault("loadgen", "usage claims fewer tokens than the ids streamed (2 for 6)", "completed, flagged; served "
          "tokens = the 6 streamed", "usage-fewer-ids", 2, True, OUTPUT, "token_ids",
          "usage claims 2 tokens, 6 token ids streamed"),
    fault("loadgen", "text only: usage claims fewer tokens than content chunks streamed (3 for 6)",
          "completed, flagged; served tokens = the 6 chunks (a lower bound)", "usage-fewer-chunks",
          3, False, OUTPUT, "chunks", "usage claims 3 tokens, fewer than the 6 content chunks streamed"),
    fault("loadgen", "text only: usage claims more than max_tokens asked (50 for 6)", "completed, flagged; served "
          "tokens = the 6 chunks, never the 50 claimed", "usage-over-asked-text", 50, False, OUTPUT, "chunks",
          "usage claims 50 tokens, more than the 6 asked (6 content chunks streamed)"),
])
def test_usage_that_disagrees_with_the_stream_is_flagged_and_never_counted(claimed, ids, counted, source, flag):
    done, result = one_request(stream(OUTPUT, ids=ids, claimed=claimed), token_ids=ids)
    summary = result["summary"]
    assert done.returncode == 0, done.stderr
    assert (summary["completed"], summary["failed"]) == (1, 0)
    assert summary["token_count_mismatches"] == 1
    assert summary["token_count_mismatch_reasons"] == {flag: 1}
    assert summary["total_output_tokens"] == counted  # the claim never reaches served throughput
    assert summary["output_tokens_per_s"] == pytest.approx(counted / summary["duration_s"])


def test_honest_usage_is_not_flagged():
    """The control: the same server telling the truth, with ids and without."""
    for ids in (True, False):
        done, result = one_request(stream(OUTPUT, ids=ids), token_ids=ids)
        assert done.returncode == 0 and result["summary"]["token_count_mismatches"] == 0, result["summary"]
        assert result["summary"]["total_output_tokens"] == OUTPUT


@pytest.mark.parametrize("claimed, reason", [
    fault("loadgen", "usage.completion_tokens = -5", "a failed request: not a plausible count", "usage-negative",
          -5, "usage.completion_tokens -5 is not a plausible count (0 … 60)"),
    fault("loadgen", "usage.completion_tokens = \"12\" (a string)", "a failed request: not a number", "usage-string",
          "12", "usage.completion_tokens is not a number: '12'"),
    fault("loadgen", "usage.completion_tokens = 1e9", "a failed request: not a plausible count", "usage-1e9",
          1e9, "usage.completion_tokens 1000000000.0 is not a plausible count"),
    fault("loadgen", "usage.completion_tokens = true", "a failed request: not a number (a bool is no count)",
          "usage-bool", True, "usage.completion_tokens is not a number: True"),
    fault("loadgen", "usage.completion_tokens = 5.5", "a failed request: not an integer", "usage-fraction",
          5.5, "usage.completion_tokens is not an integer: 5.5"),
    fault("loadgen", "usage.completion_tokens = NaN (Python's JSON extension)", "a failed request: not a "
          "plausible count", "usage-nan", float("nan"), "usage.completion_tokens nan is not a plausible count"),
    fault("loadgen", "usage.completion_tokens = 61 (past 10× the 6 asked)", "a failed request: not a plausible "
          "count", "usage-over-10x", 61, "usage.completion_tokens 61 is not a plausible count (0 … 60)"),
])
def test_absurd_usage_is_refused(claimed, reason):
    done, result = one_request(stream(OUTPUT, claimed=claimed))
    assert done.returncode == 1
    assert (result["summary"]["completed"], result["summary"]["failed"]) == (0, 1)
    (error, _), = result["errors"].items()
    assert error.startswith("bad SSE payload: ") and reason in error, error
    assert result["summary"]["total_output_tokens"] == 0


@pytest.mark.fault("loadgen", "usage.prompt_tokens = -1 (absurd prompt count)", "a failed request: not a plausible "
                   "count; total tok/s never counts it")
def test_absurd_prompt_usage_is_refused():
    script = stream(OUTPUT)
    script[-2] = chunk(sse({"choices": [], "usage": {"prompt_tokens": -1, "completion_tokens": OUTPUT}}))
    done, result = one_request(script)
    assert done.returncode == 1 and list(result["errors"]) == [
        "bad SSE payload: usage.prompt_tokens -1 is not a plausible count (0 … 10000000)"]


# --- item 9: ITL when the first two chunks arrive in one read -----------------------------------

@pytest.mark.fault("loadgen", "the server writes its first two chunks (2 tokens each) in ONE TCP write, then 4 "
                   "more 2-token chunks 30 ms apart", "no gap lost: 10 ITL gaps (12 tokens − the first chunk's 2), "
                   "the second chunk's gap 0 and four of 30 ms")
def test_itl_keeps_the_gap_of_a_second_chunk_that_arrived_with_the_first():
    def two_ids(i):
        payload = text_chunk(i)
        payload["choices"][0]["token_ids"] = [2 * i, 2 * i + 1]
        return chunk(sse(payload))
    script = [HEADERS, 0.05, two_ids(0) + two_ids(1)]  # one write: one read on the client
    for i in range(2, 6):
        script += [0.03, two_ids(i)]
    script += [chunk(sse(usage(12))), END]
    from gpucert.serving.loadgen import LoadConfig, run_load  # here: the module imports with any loadgen
    from gpucert.serving.datasets import Prompt
    from gpucert.serving.summary import itl_gaps_s, summarize
    with serving(lambda body: script) as server:
        run = run_load(LoadConfig(base_url=server.v1_url, model="m", concurrency=1, num_requests=1,
                                  return_token_ids=True), [Prompt([1, 2, 3], 3, 12)])
    record, = run.measured
    assert record.ok and record.output_tokens == 12 and record.first_chunk_tokens == 2
    assert record.token_times[0] == record.token_times[3]  # chunks 1 and 2 did arrive in one read
    gaps = itl_gaps_s(record)
    assert len(gaps) == 12 - 2 == summarize([record]).itl_ms["count"]
    assert gaps[:2] == [0.0, 0.0]  # chunk 2: its gap (0: it came with chunk 1) and its second token's
    # chunks 3-6: ~30 ms each, none lost. The server sleeps 30 ms between writes; a read the busy
    # client takes late shortens the next gap by as much (CI read 24.8 ms), so the four together
    # are held to their sum, each only to being a real gap
    assert all(0.01 <= g < 0.5 for g in gaps[2::2]) and sum(gaps[2::2]) >= 0.1, gaps
    assert gaps[3::2] == [0.0] * 4


# --- item 6: bounded time ---------------------------------------------------------------------

@pytest.mark.parametrize("script, args, in_flight, unsent", [
    fault("time", "the server accepts and never sends headers", "--deadline 2: the run ends at ~2 s, the request "
          "in flight fails with the deadline as its reason, the 2 unsent are counted failed; JSON printed, exit 1",
          "no-headers", [STALL], ("--concurrency", "1", "--num-requests", "3"), 1, 2),
    fault("time", "the server sends headers and then stalls", "--deadline 2: ends at ~2 s, 1 in flight + 2 unsent "
          "failed; JSON printed, exit 1", "headers-then-stall", [HEADERS, STALL],
          ("--concurrency", "1", "--num-requests", "3"), 1, 2),
    fault("time", "the server streams 2 tokens and stalls mid-stream", "--deadline 2: 2 in flight + 2 unsent "
          "failed at ~2 s; JSON printed", "stall-mid-stream",
          [HEADERS, chunk(sse(text_chunk(0))), chunk(sse(text_chunk(1))), STALL],
          ("--concurrency", "2", "--num-requests", "4"), 2, 2),
    fault("time", "the server streams tokens forever (one every 10 ms, past any max_tokens)", "--deadline 2: the "
          "endless stream fails in flight at ~2 s, the 2 unsent are counted failed; JSON printed", "endless-stream",
          None, ("--concurrency", "1", "--num-requests", "3"), 1, 2),
    fault("time", "a never-answering server under a request rate (20/s, 10 requests) with a 5-stream cap",
          "--deadline 2: the 5 in flight fail at the deadline and the 5 held by the cap are counted unsent; "
          "JSON printed", "rate-capped", [STALL],
          ("--request-rate", "20", "--concurrency", "5", "--num-requests", "10"), 5, 5),
    fault("time", "a never-answering server, the load spread over 2 client processes", "--deadline 2: both "
          "workers end at their deadline, 2 in flight + 2 unsent failed; JSON printed", "two-workers",
          [HEADERS, STALL], ("--concurrency", "2", "--num-requests", "4", "--workers", "2"), 2, 2),
])
def test_a_server_that_never_answers_ends_at_the_deadline(script, args, in_flight, unsent):
    with serving(lambda body: script or endless()) as server:
        started = time.monotonic()
        done, result = loadgen(server.v1_url, *args, "--token-ids", "--deadline", "2", "--timeout", "600")
        took = time.monotonic() - started
    assert took < 30, took  # the deadline, the command's start-up, a loaded box; never the 600 s timeout
    summary = result["summary"]
    assert done.returncode == 1 and summary["deadline_passed"] is True
    assert (summary["completed"], summary["failed"]) == (0, in_flight + unsent)
    assert result["config"]["deadline_s"] == 2
    assert result["errors"] == {k: v for k, v in {
        "deadline: the run's 2 s deadline ended it in flight": in_flight,
        "deadline: not sent, the run's 2 s deadline had passed": unsent}.items() if v}


def endless():
    """A stream that never ends: a token every 10 ms."""
    yield HEADERS
    i = 0
    while True:
        yield chunk(sse(text_chunk(i)))
        yield 0.01
        i += 1


def test_the_deadline_comes_from_the_load():
    """Without a deadline given, a run gets one from its load (README "Inference checks"):
    60 s + waves × (60 s + 0.5 s × the longest output)."""
    from gpucert.serving.loadgen import LoadConfig, default_deadline_s
    fixed = LoadConfig(base_url="http://x/v1", model="m", concurrency=16, num_requests=64, warmup_requests=2)
    assert default_deadline_s(fixed, 256) == 60 + (1 + 4) * (60 + 128)
    rate = LoadConfig(base_url="http://x/v1", model="m", request_rate=10.0, num_requests=100)
    assert default_deadline_s(rate, 10) == 60 + 10 + 1 * (60 + 5)
    timed = LoadConfig(base_url="http://x/v1", model="m", concurrency=4, duration_s=30.0)
    assert default_deadline_s(timed, 2) == 60 + 30 + 1 * (60 + 1)


@pytest.mark.fault("loadgen", "a trace replay longer than the default deadline's start-up allowance (the H200's "
                              "150 s replay lost 315 of 1,630 requests as 'not sent')",
                   "the deadline counts the replay's schedule: its last send time, the schedule gone round again "
                   "for more requests than the trace holds")
def test_a_replays_deadline_counts_its_schedule():
    from gpucert.serving.datasets import Prompt
    from gpucert.serving.loadgen import LoadConfig, run_deadline_s
    trace = [Prompt([1, 2], 2, 4, send_at=t) for t in (0.0, 100.0, 300.0)]
    replay = LoadConfig(base_url="http://x/v1", model="m", replay=True, num_requests=3)
    assert run_deadline_s(replay, trace) == 60 + 300 + 1 * (60 + 2)
    twice = LoadConfig(base_url="http://x/v1", model="m", replay=True, num_requests=6)
    assert run_deadline_s(twice, trace) == 60 + 600 + 1 * (60 + 2)  # the schedule's second round ends at 600 s
    capped = LoadConfig(base_url="http://x/v1", model="m", replay=True, duration_s=120.0)
    assert run_deadline_s(capped, trace) == 60 + 120 + 1 * (60 + 2)


def test_the_cli_reports_the_deadline_it_derived():
    with emulator_process("--ttft-ms", "1", "--itl-ms", "0") as emulator:
        done, result = loadgen(emulator.v1_url, "--concurrency", "1", "--num-requests", "1", "--token-ids")
    assert done.returncode == 0 and result["config"]["deadline_s"] == 60 + 1 * (60 + 0.5 * OUTPUT)
    assert result["summary"]["deadline_passed"] is False and result["summary"]["token_count_mismatches"] == 0


def pytest_inference(tmp_path, *args, env=None, popen=False):
    cmd = [sys.executable, "-m", "pytest", "-m", "inference", "-p", "no:cacheprovider", "-q",
           f"--baselines-dir={tmp_path / 'b'}", f"--report-dir={tmp_path / 'r'}", *args]
    environment = {**os.environ, **(env or {})}
    if popen:
        return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=environment)
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env=environment)


def checks_of(tmp_path) -> dict:
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    return {c["check_id"]: {m["metric"]: m for m in c["metrics"]} | {"_check": c} for c in metrics["checks"]}


LEVEL_OPTS = ("--load-opt", "concurrency=2", "--load-opt", "output_len=4", "--load-opt", "input_len=4",
              "--load-opt", "min_requests=4", "--load-opt", "requests_per_level=1", "--load-opt", "warmup=0")


@pytest.mark.parametrize("script", [
    fault("time", "pytest -m inference against a server that accepts and never sends headers, level_timeout_s=3, "
          "repeats=3", "each check ends at its 3 s deadline (sanity and level) as failed_requests > 0 with the "
          "reason; the level runs 1 repeat, not 3; the run finishes with metrics.json and the card", "no-headers",
          [STALL]),
    fault("time", "pytest -m inference against a server that sends headers and stalls, level_timeout_s=3, "
          "repeats=3", "each check ends at its 3 s deadline as failed_requests > 0 with the reason; the level runs 1 "
          "repeat, not 3; the run finishes with metrics.json and the card",
          "headers-then-stall", [HEADERS, STALL]),
])
@pytest.mark.slow("child pytest sessions")
def test_a_stalled_server_cannot_hold_a_level(tmp_path, script):
    with serving(lambda body: script) as server:
        started = time.monotonic()
        run = pytest_inference(tmp_path, "--endpoint", server.v1_url, "--endpoint-model", "m", "--monitor", "off",
                               *LEVEL_OPTS, "--load-opt", "repeats=3", "--load-opt", "level_timeout_s=3")
        took = time.monotonic() - started
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-2000:]
    assert took < 120, took
    checks = checks_of(tmp_path)
    level = checks["serving_baseline[concurrency=2]"]
    assert level["_check"]["verdict"] == "fail"
    assert level["failed_requests"]["value"] == 4  # 2 in flight at the deadline, 2 never sent: 1 repeat only
    assert "deadline: the run's 3 s deadline ended it in flight" in level["failed_requests"]["note"]
    assert level["_check"]["findings"]["deadline"] == [{"notice": "the level's 3 s deadline ended repeat 1 of 3; "
                                                                  "its requests in flight failed, the repeats after "
                                                                  "it were not run"}]
    sanity = checks["vllm_sanity"]
    assert sanity["_check"]["verdict"] == "fail" and sanity["failed_requests"]["value"] > 0
    assert (tmp_path / "r" / "report.html").exists()


# --- item 6: Ctrl-C while the monitor ends --------------------------------------------------------

SLOW_FLUSH = '''
"""Self-test plugin: the monitor's first flush (the first check's window) waits 60 s after saying
so in a file, and each load-generator run says when it ends: the test times its SIGINTs by them."""
import os, time
from pathlib import Path
from gpucert.monitor import sampler
from gpucert.serving import loadgen_workers

MARKS = Path(os.environ["GPUCERT_TEST_MARKS"])
_flush, _spread = sampler.Monitor.flush, loadgen_workers.run_load_spread

def flush(self):
    if not getattr(sampler, "_slowed", False):
        sampler._slowed = True
        with MARKS.open("a") as fh:
            fh.write("monitor ending\\n")
        time.sleep(60)
    return _flush(self)

def run_load_spread(*args, **kwargs):
    run = _spread(*args, **kwargs)
    with MARKS.open("a") as fh:
        fh.write("run done\\n")
    return run

sampler.Monitor.flush = flush
loadgen_workers.run_load_spread = run_load_spread
'''


def wait_for(path: Path, line: str, count: int, proc, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count(line) >= count:
            return
        if proc.poll() is not None:
            raise AssertionError(f"pytest ended before {line!r}: {proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"no {line!r} in {timeout_s} s")


@pytest.mark.parametrize("sigint_in_repeat", [
    fault("time", "SIGINT during a level's 2nd repeat, then a 2nd SIGINT while the monitor reads the check's window",
          "the check is incomplete (interrupted) with repeat 1's metrics in metrics.json; never 'not run'",
          "twice", True),
    fault("time", "one SIGINT while the monitor reads the window of a check whose body finished",
          "the check is incomplete (interrupted), every metric it recorded kept in metrics.json", "once", False),
])
@pytest.mark.slow("child pytest sessions")
def test_ctrl_c_while_the_monitor_ends_keeps_the_check(tmp_path, sigint_in_repeat):
    from . import fake_pynvml
    plugin_dir = tmp_path / "plugin"
    plugin_dir.mkdir()
    (plugin_dir / "slow_monitor_end.py").write_text(SLOW_FLUSH)
    marks = tmp_path / "marks"
    env = {"GPUCERT_TEST_MARKS": str(marks), "GPUCERT_NVML_MODULE": "fake_pynvml",
           "PYTHONPATH": os.pathsep.join([str(plugin_dir), os.path.dirname(fake_pynvml.__file__),
                                          os.environ.get("PYTHONPATH", "")])}
    # a repeat: 2 requests of 20 tokens 60 ms apart (~1.2 s), so the first SIGINT lands inside one
    with emulator_process("--ttft-ms", "5", "--itl-ms", "60") as emulator:
        proc = pytest_inference(tmp_path, "-p", "slow_monitor_end", "-k", "serving_baseline", "--endpoint",
                                emulator.v1_url, "--endpoint-model", "m", "--monitor-interval-ms", "50",
                                "--load-opt", "concurrency=2", "--load-opt", "output_len=20", "--load-opt",
                                "input_len=4", "--load-opt", "min_requests=2", "--load-opt", "requests_per_level=1",
                                "--load-opt", "warmup=0", "--load-opt", f"repeats={3 if sigint_in_repeat else 1}",
                                env=env, popen=True)
        try:
            if sigint_in_repeat:
                wait_for(marks, "run done", 1, proc)
                time.sleep(0.4)  # inside repeat 2
                proc.send_signal(signal.SIGINT)
            wait_for(marks, "monitor ending", 1, proc)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out[-3000:]
    assert "Traceback" not in out or "KeyboardInterrupt" in out
    run = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert run["status"] == "interrupted" and run["verdict"] == "incomplete"
    level = checks_of(tmp_path)["serving_baseline[concurrency=2]"]
    check = level["_check"]
    assert (check["outcome"], check["verdict"]) == ("interrupted", "incomplete"), check
    assert "interrupted mid-check" in check["message"]
    assert level["failed_requests"]["value"] == 0 and level["token_count_mismatches"]["value"] == 0
    assert level["output_tok_s"]["value"] > 0 and level["ttft_ms_p50"]["sample_count"] == 2  # repeat 1's 2 requests
    assert check["findings"]["monitor"] == [
        {"notice": "monitor window not recorded: the session was stopped while it was read"}]
    assert "baselines not written" not in " ".join(run["notes"])
