"""The emulator as oracle: its token timing is exact, so the load generator must measure it."""

from __future__ import annotations

import dataclasses
import json
import math
import time
import types
import urllib.request

import numpy as np
import pytest

from gpucert.serving import http_stream, loadgen
from gpucert.serving import summary as summary_module
from gpucert.serving.emulator import EmulatorConfig, EmulatorServer
from gpucert.serving.datasets import Prompt
from gpucert.serving.loadgen import LoadConfig, LoadGenerator, frozen_heap, run_in_new_loop, run_load
from gpucert.serving.summary import error_breakdown, summarize

from .emulators import emulator_process
from .timing_oracle import FLOOR_PERCENTILE, lateness_s, timing_faults

TTFT_MS, ITL_MS, OUTPUT = 50.0, 20.0, 16
TOLERANCE_MS = 1.0
# At 256 streams each worker starts RAMP_S × i / 256 after the first (one request's length): the
# streams then run staggered, all 256 in flight, as a steady load does. Sent in the same instant
# instead, 256 requests are parsed one after another by the single-threaded emulator — real server
# queueing the client rightly counts in TTFT (test_a_burst_is_measured_as_queueing).
RAMP_S = 0.35
ROUNDS = 3  # measured requests per stream after its warm-up one


def emulator_args(config: EmulatorConfig) -> list[str]:
    """`gpucert emulator` flags for the timing, error and stall fields of `config`."""
    args = ["--ttft-ms", str(config.ttft_ms), "--itl-ms", str(config.itl_ms), "--tokens-per-chunk",
            str(config.tokens_per_chunk), "--error-rate", str(config.error_rate), "--seed", str(config.seed),
            "--stall-ms", str(config.stall_ms)]
    return args + (["--stall-after", str(config.stall_after)] if config.stall_after is not None else [])


def run(emulator: EmulatorConfig, prompts=None, **load):
    """The emulator in this process's event loop (the client's: uvloop where installed), beside
    the client."""
    async def go():
        async with EmulatorServer(emulator) as server:
            config = LoadConfig(base_url=server.base_url, model="m", **load)
            return await LoadGenerator(config, prompts or [Prompt("hi there", None, OUTPUT)]).run()
    with frozen_heap():
        return run_in_new_loop(go())


def run_recorded(emulator: EmulatorConfig, **load):
    """`run` with the emulator recording what it really did: (measured records, {X-Request-Id:
    start and send times}). In this process's loop, so at one stream no cross-process wake-up
    comes between the server's send and the client's read."""
    emulator = dataclasses.replace(emulator, record_timings=True)

    async def go():
        async with EmulatorServer(emulator) as server:
            config = LoadConfig(base_url=server.base_url, model="m", **load)
            runs = await LoadGenerator(config, [Prompt("hi there", None, OUTPUT)]).run()
            return runs.measured, server.emulator.timings
    with frozen_heap():
        return run_in_new_loop(go())


def run_beside(emulator: EmulatorConfig, **load):
    """The emulator in a process of its own, as a real server runs (timing, error and stall flags
    only), keeping what it really did per request: (records, {X-Request-Id: start and send times}).
    At 256 streams, sharing one event loop with the client delayed each side's work by 1-2 ms on a
    2-core box."""
    with emulator_process(*emulator_args(emulator), "--record-timings") as server:
        records = run_load(LoadConfig(base_url=server.v1_url, model="m", **load), [Prompt("hi there", None, OUTPUT)])
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/emulator/timings", timeout=30) as answer:
            return records.measured, json.load(answer)


def assert_client_timing_right(records, timings, k: int):
    """The oracle (timing_oracle.py): the client's stamps against the server's own, whatever the
    box's load made of the configured schedule."""
    faults = timing_faults(records, timings, k, summarize(records), TOLERANCE_MS)
    assert not faults, faults


def assert_server_kept_its_schedule_or_later(records, timings, k: int):
    """The emulator never sends a chunk before its deadline (start + TTFT + i × ITL); on a busy
    box it sends some later, which the oracle takes out by judging against its own stamps."""
    offsets = [offset for offset, _, _ in EmulatorConfig(ttft_ms=TTFT_MS, itl_ms=ITL_MS, tokens_per_chunk=k)
               .chunk_offsets_s(OUTPUT)]
    for r in records:
        server = timings[r.x_request_id]
        early = [server["start"] + offset - sent for offset, sent in zip(offsets, server["writes"], strict=True)]
        assert max(early) <= 0, (r.x_request_id, max(early))


@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("concurrency", [1, 256])
def test_measures_configured_timing(concurrency, k):
    """The client measures what the server did: every read stamped after the server sent it and,
    at its best, within 1 ms of it (a quiet 2-core box: median 0.04 ms), also late in each stream;
    TPOT and ITL means as the server's send times plus the client's own read lateness give them.
    Judged against the server's stamps, so a busy box (the server behind its schedule, the client
    reading late) cannot fail it while a client error can
    (test_the_oracle_catches_a_client_timing_error)."""
    emulator = EmulatorConfig(ttft_ms=TTFT_MS, itl_ms=ITL_MS, tokens_per_chunk=k)
    if concurrency == 1:
        n = 8
        records, timings = run_recorded(emulator, concurrency=1, num_requests=n, warmup_requests=1,
                                        return_token_ids=True)
        # the request path alone (client build and write, server parse): 0.2-0.3 ms even under a
        # CPU hog at its best; a client stamping its send too early shows here
        assert np.percentile(lateness_s(records, timings, k)["queued"], 10) * 1e3 < 2.0
    else:
        n = ROUNDS * concurrency
        records, timings = run_beside(emulator, concurrency=concurrency, num_requests=n,
                                      warmup_requests=concurrency, ramp_up_s=RAMP_S, return_token_ids=True)
        assert summarize(records).peak_in_flight == concurrency
    assert_client_timing_right(records, timings, k)
    assert_server_kept_its_schedule_or_later(records, timings, k)
    s = summarize(records)
    assert s.completed == n and s.failed == 0
    # TTFT: never less than the configured TTFT (the server is never early), and each request's
    # TTFT is the client's send → the server's first send → the client's read, all checked above
    assert s.ttft_ms["min"] >= TTFT_MS
    assert all(r.output_tokens == OUTPUT and r.output_tokens_source == "usage" for r in records)
    assert all(len(r.token_times) == OUTPUT for r in records)


def test_a_burst_is_measured_as_queueing():
    """256 requests sent in the same instant: the emulator parses them one after another, so the
    later ones start tens of ms after they were sent. The client counts that in TTFT (it is server
    time a user waits through) while TPOT and ITL stay what the server's sends and the client's
    read lateness give (the requests end together here, so a stall of the client on a busy box
    delays the last reads of all of them alike: their means are judged by that identity, not by a
    standard error that assumes independent requests — see timing_oracle.py)."""
    records, timings = run_beside(EmulatorConfig(ttft_ms=TTFT_MS, itl_ms=ITL_MS), concurrency=256,
                                  num_requests=256, warmup_requests=256, return_token_ids=True)
    s, queued = summarize(records), lateness_s(records, timings, 1)["queued"]
    assert s.completed == 256 and s.peak_in_flight == 256
    assert np.median(queued) * 1e3 > 5.0, queued  # the burst queued at the server (2-core box: ~20 ms) ...
    assert s.ttft_ms["p50"] > TTFT_MS + 5.0
    assert_client_timing_right(records, timings, 1)  # ... and the client measured it as it was


def _sleep_before_stamping(monkeypatch, sleep_s: float):
    """A client that blocks for `sleep_s` in its read callback before taking the arrival stamp."""
    received = http_stream._Response.data_received

    def late(self, data):
        time.sleep(sleep_s)
        received(self, data)
    monkeypatch.setattr(http_stream._Response, "data_received", late)


def _defer_stamping(monkeypatch, delay_s: float):
    """A client that hands each read on to a callback `delay_s` later (its loop stays free) and
    stamps it there, as one that queues reads for a consumer task polling now and then."""
    received = http_stream._Response.data_received
    monkeypatch.setattr(http_stream._Response, "data_received",
                        lambda self, data: self.loop.call_later(delay_s, received, self, data))


def _stamp_later_as_the_stream_grows(monkeypatch, step_s: float):
    """A client whose stamping work grows with the stream (as one re-reading all it got so far
    before stamping): each response's n-th read is stamped n × `step_s` after it came."""
    received, begin_response = http_stream._Response.data_received, http_stream._Response._begin

    def begin(self, on_body):  # one response (a kept-alive connection carries one after another)
        self.planted_reads = 0
        begin_response(self, on_body)

    def later(self, data):
        self.planted_reads += 1
        self.loop.call_later((self.planted_reads - 1) * step_s, received, self, data)
    monkeypatch.setattr(http_stream._Response, "_begin", begin)
    monkeypatch.setattr(http_stream._Response, "data_received", later)


def _tpot_over_every_token(monkeypatch, _):
    """A summary dividing each request's decode time by all its tokens, not by the gaps between
    them (tokens − 1): TPOT 1/16 short at 16 tokens."""
    right = summary_module.tpot_s

    def tpot(record):
        value = right(record)
        return None if value is None else value * (record.output_tokens - 1) / record.output_tokens
    monkeypatch.setattr(summary_module, "tpot_s", tpot)


def _clock(module, monkeypatch, monotonic):
    """`module`'s view of the `time` module with another monotonic clock."""
    clock = types.SimpleNamespace(**{name: getattr(time, name) for name in dir(time) if not name.startswith("_")})
    clock.monotonic = monotonic
    monkeypatch.setattr(module, "time", clock)


def _whole_ms_arrivals(monkeypatch, _):
    """Arrival stamps from a clock cut to whole milliseconds (as uvloop's loop.time(), cached per
    loop pass): up to 1 ms early."""
    _clock(http_stream, monkeypatch, lambda: math.floor(time.monotonic() * 1e3) / 1e3)


def _send_stamped_late(monkeypatch, offset_s: float):
    """The client's send stamp taken `offset_s` after the request really left (the load
    generator's clock runs ahead of the reads'): every TTFT `offset_s` too short."""
    real = time.monotonic
    _clock(loadgen, monkeypatch, lambda: real() + offset_s)


@pytest.mark.parametrize("plant, amount, concurrency, caught", [
    pytest.param(_sleep_before_stamping, 0.003, 16, "best reads", id="sleeps-3ms-before-stamping",
                 marks=pytest.mark.fault("timing", "the client sleeps 3 ms in its read callback before stamping the arrival",
                                         "the oracle fails it: even its best reads are 3 ms after the server's send")),
    pytest.param(_defer_stamping, 0.002, 256, "best reads", id="stamps-2ms-later-at-256-streams",
                 marks=pytest.mark.fault("timing", "at 256 streams the client stamps each read on a callback 2 ms later",
                                         "the oracle fails it: even its best reads are 2 ms after the server's send")),
    pytest.param(_whole_ms_arrivals, None, 16, "before the server sent", id="arrivals-on-a-whole-ms-clock",
                 marks=pytest.mark.fault("timing", "the client stamps arrivals with a clock cut to whole ms (up to 1 ms early)",
                                         "the oracle fails it: reads stamped before the server sent them")),
    pytest.param(_send_stamped_late, 0.003, 16, "before the client stamped them sent", id="send-stamped-3ms-late",
                 marks=pytest.mark.fault("timing", "the client stamps each send 3 ms after the request left (TTFT 3 ms short)",
                                         "the oracle fails it: the server started requests before they were stamped sent")),
    pytest.param(_stamp_later_as_the_stream_grows, 0.0003, 16, "in the second half of each stream",
                 id="stamps-later-as-the-stream-grows",
                 marks=pytest.mark.fault("timing", "the client stamps each stream's n-th read n × 0.3 ms late (its first reads prompt; TPOT +0.3 ms)",
                                         "the oracle fails it: even its best reads late in the streams are late")),
    pytest.param(_tpot_over_every_token, None, 16, "TPOT mean", id="tpot-over-every-token",
                 marks=pytest.mark.fault("timing", "the summary divides decode time by every token, not by the gaps (TPOT 1/16 short)",
                                         "the oracle fails it: TPOT is not the server's plus the client's read lateness")),
])
def test_the_oracle_catches_a_client_timing_error(monkeypatch, plant, amount, concurrency, caught):
    """A client that measures wrong by a few ms fails the oracle that a correct client passes on a
    busy box: its error is in every read (or breaks causality), the scheduler's only in some."""
    plant(monkeypatch, amount)
    emulator = EmulatorConfig(ttft_ms=TTFT_MS, itl_ms=ITL_MS)
    records, timings = run_beside(emulator, concurrency=concurrency, num_requests=2 * concurrency,
                                  warmup_requests=concurrency, ramp_up_s=RAMP_S, return_token_ids=True)
    faults = timing_faults(records, timings, 1, summarize(records), TOLERANCE_MS)
    assert any(caught in fault for fault in faults), faults


def test_errors_are_counted_not_dropped():
    rate = 0.25
    records = run(EmulatorConfig(ttft_ms=1, itl_ms=0, error_rate=rate, seed=3),
                  concurrency=1, num_requests=40).measured
    s = summarize(records)
    import random
    draws = random.Random(3)
    expected_failed = sum(draws.random() < rate for _ in range(40))
    assert s.failed == expected_failed > 0
    assert s.completed + s.failed == 40
    (text, count), = error_breakdown(records).items()
    assert text.startswith("HTTP 500") and count == expected_failed


def test_stall_shows_in_itl_max():
    """A 100 ms stall before token 8 among 2 ms gaps: the client's largest gap in every request
    is the one the server put there, and ITL max is it. Its size is the server's up to the client's
    lateness at the reads on either side, which the oracle bounds: a busy box makes the server send
    the chunks before the stall late (seen: the stall gap 78 ms of 100 under a CPU hog) and the
    client read them late (seen: 44 ms of 60), so the size itself is not compared with the
    configured stall."""
    stall_ms = 100.0  # well above what a busy box adds to one gap (the worst seen: ~40 ms)
    emulator = EmulatorConfig(ttft_ms=5, itl_ms=2, stall_after=8, stall_ms=stall_ms)
    records, timings = run_recorded(emulator, concurrency=2, num_requests=4)
    s = summarize(records)
    client_gaps = [np.diff(r.token_times) for r in records]
    assert all(int(np.argmax(gaps)) == 7 for gaps in client_gaps), client_gaps
    assert s.itl_ms["max"] == pytest.approx(max(gaps[7] for gaps in client_gaps) * 1e3)
    stall_due = emulator.chunk_offsets_s(OUTPUT)[8][0]
    assert all(timings[r.x_request_id]["writes"][8] - timings[r.x_request_id]["start"] >= stall_due for r in records)
    late_ms = lateness_s(records, timings, 1)["read"] * 1e3
    assert late_ms.min() > 0 and np.percentile(late_ms, FLOOR_PERCENTILE) <= TOLERANCE_MS, late_ms


def test_poisson_rate_and_warmup_excluded():
    runs = run(EmulatorConfig(ttft_ms=1, itl_ms=0), request_rate=200.0, num_requests=200,
               warmup_requests=5, seed=7, prompts=[Prompt("x", None, 2)])
    measured = runs.measured
    assert len(runs.records) == 205 and len(measured) == 200
    assert not any(r.warmup for r in measured)
    sends = sorted(r.sent_at for r in measured)
    mean_rate = (len(sends) - 1) / (sends[-1] - sends[0])
    assert mean_rate == pytest.approx(200.0, rel=0.15)
    # the client kept its schedule as well as its loop let it: a send waits on a timer as the
    # loop's lag probe does (plus one loop pass for its task to start), so its delays are the
    # probe's, not more (quiet box: medians ~0.1 ms; CPU hog on both cores: sends 16 ms, probe 25
    # ms, single sends up to 80 ms). And no drift: a client sleeping relative gaps instead of to
    # the absolute schedule falls further behind with every send (its overhead × 200/s)
    ordered = sorted(measured, key=lambda r: r.scheduled_at)
    delays_ms = np.asarray([r.send_delay for r in ordered]) * 1e3
    assert np.median(delays_ms) <= np.median(runs.loop_lag_s) * 1e3 + 2.0, (delays_ms, runs.loop_lag_s)
    drift_ms_per_s, _ = np.polyfit([r.scheduled_at for r in ordered], delays_ms, 1)
    assert drift_ms_per_s < 20.0, delays_ms


def test_chat_role_chunk_and_plain_close():
    records = run(EmulatorConfig(ttft_ms=20, itl_ms=1, send_done=False), endpoint="chat",
                  concurrency=1, num_requests=2).measured
    s = summarize(records)
    assert s.completed == 2
    # the role-only chunk comes at once: counting it would make TTFT ~0
    assert s.ttft_ms["min"] >= 20.0
    assert all(r.output_tokens == OUTPUT for r in records)


def test_no_usage_no_ids_means_unknown_token_count():
    records = run(EmulatorConfig(ttft_ms=1, itl_ms=0, send_usage=False),
                  concurrency=1, num_requests=2).measured
    assert all(r.ok and r.output_tokens is None and r.output_tokens_source == "none"
               for r in records)
    assert summarize(records).requests_without_token_count == 2


def test_token_ids_count_when_usage_missing():
    records = run(EmulatorConfig(ttft_ms=1, itl_ms=0, tokens_per_chunk=3, send_usage=False),
                  concurrency=1, num_requests=1, return_token_ids=True).measured
    assert records[0].output_tokens == OUTPUT
    assert records[0].output_tokens_source == "token_ids"


def test_ramp_up_spreads_the_stream_starts():
    """--ramp-up S: the measured streams start i × S / N apart (not in one instant), and each then
    runs as before. TTFT 300 ms keeps every stream busy through the 0.24 s ramp. Judged by the
    line through the starts: a busy box makes single starts late (seen: ±7 ms on 25 ms under a CPU
    hog), which tilts a least-squares slope over 16 starts by under 5 %, while a wrong ramp
    (another length, cumulative delays, none) moves it by far more."""
    n, ramp = 16, 0.24
    records = run(EmulatorConfig(ttft_ms=300, itl_ms=1), concurrency=n, num_requests=n,
                  ramp_up_s=ramp).measured
    assert summarize(records).completed == n
    starts = np.sort([r.sent_at for r in records])
    slope, _ = np.polyfit(np.arange(n), starts, 1)
    assert slope == pytest.approx(ramp / n, rel=0.15), np.diff(starts) * 1e3
    # without the ramp every stream leaves at once: within a quarter of the ramp even when the box
    # preempts the client mid-burst (quiet: < 5 ms), against the whole ramp with it
    burst = sorted(r.sent_at for r in run(EmulatorConfig(ttft_ms=300, itl_ms=1), concurrency=n,
                                          num_requests=n).measured)
    assert burst[-1] - burst[0] < ramp / 4


def test_a_stream_reuses_its_connection_request_after_request(monkeypatch):
    """Keep-alive: one connection per stream, not one per request (as `vllm bench serve`); a new
    TCP connection per request would add its set-up to every TTFT."""
    import gpucert.serving.emulator as emulator
    peers = []
    respond = emulator.Emulator._respond

    async def noting_peer(self, request, chat):
        peers.append(request.transport.get_extra_info("peername"))
        return await respond(self, request, chat)
    monkeypatch.setattr(emulator.Emulator, "_respond", noting_peer)
    records = run(EmulatorConfig(ttft_ms=1, itl_ms=1), concurrency=2, num_requests=8).measured
    assert summarize(records).completed == 8
    assert len(peers) == 8 and len(set(peers)) == 2, peers
