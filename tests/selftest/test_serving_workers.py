"""`run_load_spread`: one load over several client processes, merged (serving/loadgen_workers.py).

The in-process `EmulatorServer` cannot be shared with spawned workers, so the emulator runs as
its own process here (the oracle tests keep the in-process one at one stream)."""

from __future__ import annotations

import json
import math
import urllib.request

import pytest

from gpucert.cli import main
from gpucert.serving.datasets import Prompt
from gpucert.serving.loadgen import LoadConfig, LoadGenerator
from gpucert.serving.loadgen_workers import (STREAMS_PER_PROCESS, WorkerFailure, even_split,
                                             merge_runs, resolve_workers, run_load_spread,
                                             spawn_event, split_config, split_prompts)
from gpucert.serving.records import RequestRecord, RunRecords
from gpucert.serving.summary import client_check, error_breakdown, summarize

from .emulators import emulator_process
from .timing_oracle import timing_faults

TTFT_MS, ITL_MS, OUTPUT = 20.0, 2.0, 16
# The oracle's 1 ms: the emulator, two client workers and pytest are three processes on a 2-core
# box, so scheduler hand-offs land on some samples; judged against the emulator's own send stamps
# (timing_oracle.py) they cannot fail it, a worker's timing error can.
TOLERANCE_MS = 1.0


@pytest.fixture(scope="module")
def emulator_url():
    with emulator_process("--ttft-ms", str(TTFT_MS), "--itl-ms", str(ITL_MS), "--record-timings") as emulator:
        yield emulator.v1_url


def config(url="http://127.0.0.1:1/v1", **kw) -> LoadConfig:
    return LoadConfig(base_url=url, model="m", **kw)


# --- split arithmetic (pure) -------------------------------------------------------------------

def test_split_concurrency_and_requests():
    assert even_split(5, 2) == [3, 2] and even_split(33, 2) == [17, 16]
    parts = split_config(config(concurrency=5, num_requests=33, warmup_requests=3, seed=4), 2)
    assert [p.concurrency for p in parts] == [3, 2]
    assert [p.num_requests for p in parts] == [17, 16]
    assert [p.warmup_requests for p in parts] == [2, 1]
    assert all(p.request_rate is None for p in parts)


def test_split_rate_gives_each_worker_its_own_seed():
    parts = split_config(config(request_rate=100.0, num_requests=400, duration_s=9.0, seed=7), 4)
    assert [p.request_rate for p in parts] == [25.0] * 4
    assert [p.seed for p in parts] == [7, 8, 9, 10]
    assert [p.num_requests for p in parts] == [100] * 4
    assert all(p.duration_s == 9.0 and p.concurrency is None for p in parts)
    inf = split_config(config(request_rate=math.inf, num_requests=4), 2)
    assert all(math.isinf(p.request_rate) for p in inf)


def test_never_more_workers_than_streams():
    assert resolve_workers(8, config(concurrency=3, num_requests=100)) == 3
    assert resolve_workers(8, config(concurrency=30, num_requests=2)) == 2
    with pytest.raises(ValueError):
        split_config(config(concurrency=3, num_requests=100), 4)


def test_auto_workers(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    assert resolve_workers("auto", config(concurrency=10, num_requests=10)) == 1
    assert resolve_workers("auto", config(concurrency=STREAMS_PER_PROCESS + 1,
                                          num_requests=10**6)) == 2
    assert resolve_workers("auto", config(concurrency=10**6, num_requests=10**6)) == 15
    assert resolve_workers("auto", config(request_rate=50.0, num_requests=10**6)) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 1)
    assert resolve_workers("auto", config(concurrency=5000, num_requests=5000)) == 1


def test_split_prompts_strided():
    prompts = [Prompt(str(i), None, 1) for i in range(5)]
    assert [[p.prompt for p in s] for s in split_prompts(prompts, 2)] == [["0", "2", "4"],
                                                                         ["1", "3"]]
    assert split_prompts(prompts[:1], 3) == [prompts[:1]] * 3


# --- merge (pure) ------------------------------------------------------------------------------

def _ok_run(start: float, n: int, cpu: float) -> RunRecords:
    records = [RequestRecord(request_id=i, scheduled_at=start, sent_at=start,
                             first_token_at=start + 0.01, token_times=[start + 0.01],
                             ended_at=start + 0.02, output_tokens=1, status="ok")
               for i in range(n)]
    return RunRecords(records=records, started_monotonic=start, started_wall=1000.0 + start,
                      loop_lag_s=[0.001] * n, cpu_fraction=cpu)


def test_merge_offsets_ids_and_keeps_the_busiest_cpu():
    configs = split_config(config(concurrency=4, num_requests=7), 2)
    merged = merge_runs([_ok_run(5.0, 4, 0.3), _ok_run(4.0, 3, 0.6)], configs, 9.0, 9.0)
    assert sorted(r.request_id for r in merged.records) == list(range(7))
    assert (merged.started_monotonic, merged.started_wall) == (4.0, 1004.0)
    assert merged.cpu_fraction == 0.6 and len(merged.loop_lag_s) == 7
    assert [w["requests"] for w in merged.workers] == [4, 3]


def test_merge_of_a_failed_share_records_it_as_failed():
    configs = split_config(config(concurrency=4, num_requests=7, warmup_requests=2), 2)
    merged = merge_runs([_ok_run(5.0, 4, 0.3),
                         WorkerFailure("worker process killed by signal 9")],
                        configs, 3.0, 1003.0)
    measured = merged.measured
    assert len(measured) == 7 and len(merged.records) == 8  # + worker 1's warm-up
    assert len({r.request_id for r in merged.records}) == 8
    assert summarize(measured).failed == 3
    (text, count), = error_breakdown(measured).items()
    assert count == 3 and "client worker failed" in text and "signal 9" in text
    assert merged.workers[1]["error"] == "worker process killed by signal 9"
    assert merged.workers[1]["failed"] == 3 and merged.cpu_fraction == 0.3


def test_merge_all_failed_uses_the_fallback_start():
    configs = split_config(config(concurrency=2, duration_s=1.0), 2)
    merged = merge_runs([WorkerFailure("a"), WorkerFailure("b")], configs, 3.0, 1003.0)
    assert merged.started_monotonic == 3.0 and merged.cpu_fraction is None
    assert len(merged.measured) == 2  # a duration-only share counts as one failed request
    assert client_check(merged)["started_wall"] == 1003.0


# --- real processes ----------------------------------------------------------------------------

def test_two_workers_measure_the_emulator(emulator_url):
    cfg = config(emulator_url, concurrency=8, num_requests=32, warmup_requests=4,
                 return_token_ids=True)
    run = run_load_spread(cfg, [Prompt(list(range(16)), 16, OUTPUT)], workers=2)
    measured = run.measured
    assert len(measured) == 32 and len(run.records) == 36
    assert len({r.request_id for r in run.records}) == 36
    assert all(r.ok and r.output_tokens == OUTPUT and r.output_tokens_source == "usage"
               and len(r.token_times) == OUTPUT for r in measured)
    s = summarize(measured)
    assert s.completed == 32 and s.failed == 0
    assert s.ttft_ms["min"] >= TTFT_MS
    # the workers' stamps against the emulator's own (timing_oracle.py): three processes on a
    # busy 2-core box delay some reads by tens of ms (seen: TTFT p50 38.7 ms for 20 under a CPU
    # hog), which the server's stamps take out; a worker's clock or stamping error they do not
    with urllib.request.urlopen(emulator_url.removesuffix("/v1") + "/emulator/timings", timeout=30) as answer:
        timings = json.load(answer)
    assert not timing_faults(measured, timings, 1, s, TOLERANCE_MS)
    assert [w["requests"] for w in run.workers] == [16, 16]
    assert [w["concurrency"] for w in run.workers] == [4, 4]
    # one clock: every record lies after the merged start
    assert all(r.sent_at >= run.started_monotonic for r in measured)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stop_ends_a_duration_bound_load_once_its_requests_in_flight_finish(emulator_url, workers):
    """A profile window's load: bound by a long duration, ended by its caller's stop. Nothing is
    sent after the stop; the requests in flight then finish whole; none is counted failed."""
    import threading
    import time

    stop = spawn_event()
    cfg = config(emulator_url, concurrency=4, duration_s=120.0, warmup_requests=2)
    prompts = [Prompt("hi", None, OUTPUT)] * 8
    # 3 s: after the spawned workers' start-up (their share begins once all are ready)
    timer = threading.Timer(3.0, stop.set)
    started = time.monotonic()
    timer.start()
    try:
        run = run_load_spread(cfg, prompts, workers, stop)
    finally:
        timer.cancel()
    elapsed = time.monotonic() - started
    stopped_at = started + 3.0
    measured = [r for r in run.records if not r.warmup]
    # one request lasts TTFT + 15 ITL ≈ 50 ms: the load ends a request after the stop, not at 120 s
    assert elapsed < 30, elapsed
    assert len(measured) > 8 and all(r.ok for r in run.records), error_breakdown(run.records)
    # a send checks the stop just before it goes: none later than a starved loop's hand-off
    assert all(r.sent_at <= stopped_at + 2.0 for r in measured), max(r.sent_at for r in measured) - stopped_at
    assert all(len(r.token_times) == OUTPUT for r in measured)


def test_a_stop_is_refused_where_it_cannot_apply():
    with pytest.raises(ValueError, match="fixed-concurrency"):
        LoadGenerator(config(request_rate=5.0, duration_s=1.0), [Prompt("hi", None, 4)], spawn_event())
    with pytest.raises(ValueError, match="fixed-concurrency"):
        LoadGenerator(config(concurrency=2, duration_s=1.0), [Prompt("hi", None, 4, conversation=0, turn=0)],
                      spawn_event())


def test_a_failing_worker_becomes_failed_records(emulator_url):
    """A real failure inside one spawned worker: the chat endpoint takes text prompts only, and
    worker 1's strided share is the token-id prompt."""
    cfg = config(emulator_url, endpoint="chat", concurrency=2, num_requests=4)
    run = run_load_spread(cfg, [Prompt("hello", None, 4), Prompt([1, 2, 3], 3, 4)], workers=2)
    s = summarize(run.measured)
    assert (s.completed, s.failed) == (2, 2)
    (text, count), = error_breakdown(run.measured).items()
    assert count == 2 and "token-id prompts need the completions endpoint" in text
    assert run.workers[0]["error"] is None and "token-id" in run.workers[1]["error"]


def test_cli_workers_json(emulator_url, capsys):
    rc = main(["loadgen", "--base-url", emulator_url, "--model", "m", "--concurrency", "4",
               "--num-requests", "12", "--input-len", "16", "--output-len", "8", "--token-ids",
               "--workers", "2", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out)
    assert set(result) == {"summary", "client", "errors", "config"}
    assert (result["summary"]["completed"], result["summary"]["failed"]) == (12, 0)
    assert result["summary"]["total_output_tokens"] == 12 * 8
    assert {"loop_lag_ms", "send_delay_ms", "cpu_fraction", "client_may_be_bottleneck",
            "notices", "started_monotonic", "started_wall"} <= set(result["client"])
    assert result["config"]["workers"] == 2
    assert [w["requests"] for w in result["client"]["workers"]] == [6, 6]
    assert result["errors"] == {}


def test_cli_default_is_one_process(emulator_url, capsys):
    rc = main(["loadgen", "--base-url", emulator_url, "--model", "m", "--concurrency", "2",
               "--num-requests", "2", "--output-len", "4", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and result["config"]["workers"] == 1
    assert len(result["client"]["workers"]) == 1


def test_cli_rejects_bad_workers(capsys):
    rc = main(["loadgen", "--base-url", "http://x/v1", "--model", "m", "--concurrency", "1",
               "--num-requests", "1", "--workers", "0"])
    assert rc == 2 and "--workers: must be >= 1" in capsys.readouterr().err
