"""The emulator's scheduler (max_running, kv_blocks, max_model_len): a server whose capacity is known
exactly. The model is checked on its own (pure arithmetic), then a real emulator on 127.0.0.1 is
driven by the real load generator and judged against the emulator's own recorded decisions: the
queueing shows in TTFT by one service time, preemption starts exactly where the block arithmetic
says, an over-long request gets vLLM's 400. Decisions are compared exactly (nominal times, the
model's), the client's clocks only with bounds a busy box cannot break (causality, and the best
of a wave's reads within a few ms of the server's send)."""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from gpucert import cli
from gpucert.monitor.sources import parse_vllm_metrics
from gpucert.serving import vllm_metrics
from gpucert.serving.datasets import Prompt
from gpucert.serving.emulator import (RUNNING, WAITING, EmulatorConfig, EmulatorServer, Scheduler,
                                      context_length_error)
from gpucert.serving.loadgen import LoadConfig, LoadGenerator, frozen_heap, run_in_new_loop, run_load
from gpucert.serving.summary import summarize, ttft_s

from .emulators import emulator_process
from .timing_oracle import timing_faults

# the client's reads against the server's sends, as the oracle judges them (timing_oracle.py:
# causality, the best 1 % of reads within 1 ms, TPOT and ITL means)
TOLERANCE_MS = 1.0


def service_s(config: EmulatorConfig, output_tokens: int) -> float:
    """One request's service: admission to its last chunk (TTFT + ITL per later chunk)."""
    return config.chunk_offsets_s(output_tokens)[-1][0]


def token_prompt(n: int, output_tokens: int) -> Prompt:
    return Prompt(list(range(100, 100 + n)), n, output_tokens)


def replay(config: EmulatorConfig, timings: dict, prompt_tokens: int, output_tokens: int) -> dict:
    """The pure scheduler run on the arrivals the emulator recorded: {request id: its decisions}."""
    sched = Scheduler(config)
    chunks = config.chunk_offsets_s(output_tokens)
    seqs = {}
    for rid, t in sorted(timings.items(), key=lambda item: item[1]["arrival"]):
        seqs[rid] = sched.arrive(t["arrival"], prompt_tokens, chunks)
    sched.advance(math.inf)
    return {rid: {"admitted": s.admitted, "preempted": s.preempted, "finished": s.finished}
            for rid, s in seqs.items()} | {"preemptions": sched.preemptions}


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return answer.read().decode()


# -- the model alone -----------------------------------------------------------------------------

def test_max_running_queues_first_come_first_served():
    """4 slots, 8 arrivals 1 ms apart: the first 4 start at arrival, each later one at the
    instant a slot frees (the earliest finish), in arrival order; gauges as vLLM's."""
    config = EmulatorConfig(ttft_ms=50, itl_ms=10, max_running=4)
    chunks, s = config.chunk_offsets_s(16), service_s(config, 16)
    sched = Scheduler(config)
    seqs = [sched.arrive(i * 0.001, 8, chunks) for i in range(8)]
    assert [q.state for q in seqs] == [RUNNING] * 4 + [WAITING] * 4
    assert (len(sched.running), len(sched.waiting)) == (4, 4)
    sched.advance(math.inf)
    for first, second in zip(seqs[:4], seqs[4:]):
        assert first.admitted == [first.arrival] and first.finished == first.arrival + s
        assert second.admitted == [first.finished]  # exactly: the slot's previous holder's last chunk
        assert second.finished == first.finished + s
    assert sched.preemptions == 0 and not sched.running and not sched.waiting


def test_inter_token_latency_is_counted_on_the_engines_clock():
    """vLLM's inter-token latency histogram as the scheduler keeps it: one observation per chunk
    after a request's first, on nominal times — queueing before admission adds none (8 requests
    on 4 slots: 15 gaps of 8 ms each), a preemption's wait lands in the victim's next gap."""
    config = EmulatorConfig(ttft_ms=50, itl_ms=8, max_running=4)
    sched = Scheduler(config)
    for i in range(8):
        sched.arrive(i * 0.001, 8, config.chunk_offsets_s(16))
    sched.advance(math.inf)
    assert sched.itl.count == 8 * 15 and sched.itl.total_s == pytest.approx(8 * 15 * 0.008)
    assert sched.itl.buckets[:2] == [8 * 15] * 2  # every gap ≤ 10 ms: vLLM's first bucket (cumulative)

    prompt, out, bs, n = 16, 64, 16, 4
    config = EmulatorConfig(ttft_ms=10, itl_ms=2, kv_blocks=n * math.ceil((prompt + out - 1) / bs) + 1, block_size=bs)
    for count, preempted in ((n, False), (n + 1, True)):
        sched = Scheduler(config)
        seqs = [sched.arrive(i * 1e-4, prompt, config.chunk_offsets_s(out)) for i in range(count)]
        sched.advance(math.inf)
        assert (sched.preemptions > 0) is preempted and sched.itl.count == count * (out - 1)
        waited = sched.itl.total_s - count * (out - 1) * 0.002
        # no preemption: every gap one ITL; with one, the victims' gaps hold their waits
        assert waited == pytest.approx(0, abs=1e-9) if not preempted else waited > 0.002, (count, waited)
        assert all(q.finished is not None for q in seqs)


def test_kv_blocks_fit_n_requests_and_preempt_at_n_plus_one():
    """Blocks per request at its longest: ceil((P + O − 1) / block_size); kv_blocks = N × that + 1
    (the null block) holds N requests without a preemption and not N + 1. The victim is the one
    admitted last; it goes back to the head of the queue, frees its blocks, and resumes at its
    next token when readmitted; the blocks handed out never exceed the usable ones."""
    prompt, out, bs, n = 16, 64, 16, 4
    per_request = math.ceil((prompt + out - 1) / bs)
    config = EmulatorConfig(ttft_ms=10, itl_ms=2, kv_blocks=n * per_request + 1, block_size=bs)
    chunks = config.chunk_offsets_s(out)

    def run(count: int):
        sched = Scheduler(config)
        seqs = [sched.arrive(i * 1e-4, prompt, chunks) for i in range(count)]
        peak, t = 0, 0.0
        while sched.running or sched.waiting:
            t += 0.001
            sched.advance(t)
            peak = max(peak, sched.used_blocks)
            assert 0.0 <= sched.kv_usage <= 1.0
        return sched, seqs, peak

    sched, seqs, peak = run(n)
    assert sched.preemptions == 0 and peak == n * per_request and sched.used_blocks == 0
    sched, seqs, peak = run(n + 1)
    assert sched.preemptions >= 1 and peak <= n * per_request
    victim = seqs[-1]
    assert victim.preempted and len(victim.admitted) == 1 + len(victim.preempted)
    assert all(q.emitted == len(chunks) and q.finished is not None for q in seqs)
    # readmitted at some earlier request's finish (a preemption admits nobody)
    assert victim.admitted[1] in {q.finished for q in seqs[:-1]}


def test_victims_go_to_the_front_in_admission_order():
    """Two requests preempted at one instant queue ahead of everyone waiting, the earlier
    admitted first (vLLM prepends each victim, the latest admitted preempted first), and the
    preemption admits nobody: they start again when a request finishes."""
    config = EmulatorConfig(ttft_ms=1, itl_ms=10, tokens_per_chunk=4, kv_blocks=9, block_size=1, max_running=3)
    chunks = config.chunk_offsets_s(8)  # 2 chunks: at 1 and 11 ms after admission
    sched = Scheduler(config)
    a = sched.arrive(0.0, 1, chunks)
    sched.advance(0.005)  # its first chunk (tokens 0-3): 1 + 3 tokens' blocks
    assert a.held == 4
    b, c = sched.arrive(0.0105, 1, chunks), sched.arrive(0.0105, 1, chunks)  # 1 block each: 2 of 8 free
    d = sched.arrive(0.0106, 1, chunks)  # no slot
    # at 11 ms a's second chunk needs 4 more blocks: c (admitted last) is preempted, then b
    sched.advance(0.0111)
    assert sched.preemptions == 2 and b.preempted == c.preempted == [0.011]
    assert b.emitted == c.emitted == 0 and a.finished == 0.011
    # a's finish (the same instant) admits from the head: b, c, then d
    assert b.admitted == [0.0105, 0.011] and c.admitted == [0.0105, 0.011] and d.admitted == [0.011]
    assert [q.order for q in (b, c, d)] == sorted(q.order for q in (b, c, d))
    sched.advance(math.inf)
    assert all(q.finished is not None and q.emitted == 2 for q in (a, b, c, d))
    assert sched.used_blocks == 0 and not sched.waiting


def test_cache_config_info_follows_the_emulated_cache():
    """num_gpu_blocks and block_size are the emulated cache's; max concurrency and size in tokens
    as vLLM derives them from max_model_len (blocks / ceil(len / block size), × len)."""
    labels = EmulatorConfig(kv_blocks=21, block_size=16, max_model_len=320).cache_config
    assert (labels["num_gpu_blocks"], labels["block_size"]) == ("21", "16")
    assert float(labels["kv_cache_max_concurrency"]) == pytest.approx(21 / 20)
    assert labels["kv_cache_size_tokens"] == str(int(21 / 20 * 320))
    default_len = EmulatorConfig(kv_blocks=9, block_size=16)  # the cache's usable tokens: 8 × 16
    assert default_len.context_limit == 128 and float(default_len.cache_config["kv_cache_max_concurrency"]) == 9 / 8
    # without the capacity labels (an older vLLM's), none are added
    older = {k: v for k, v in EmulatorConfig().cache_config.items() if not k.startswith("kv_cache_")}
    assert "kv_cache_size_tokens" not in EmulatorConfig(kv_blocks=5, cache_config=older).cache_config
    assert EmulatorConfig().cache_config["num_gpu_blocks"] == "4096"  # off: as before
    with pytest.raises(ValueError, match="does not fit the KV cache's 64 usable tokens"):
        EmulatorConfig(kv_blocks=5, block_size=16, max_model_len=65)


# -- the real server and the real load generator ---------------------------------------------

def _in_process(config: EmulatorConfig, load: dict, prompts: list[Prompt], during=None):
    """The emulator in this loop, the load generator beside it; `during(emulator)` is awaited
    while the load runs. (records, timings, what `during` returned, the emulator)."""
    async def go():
        async with EmulatorServer(config) as server:
            gen = LoadGenerator(LoadConfig(base_url=server.base_url, model="m", **load), prompts)
            task = asyncio.ensure_future(gen.run())
            seen = await during(server.emulator) if during else None
            runs = await task
            return runs.measured, server.emulator.timings, seen, server.emulator
    with frozen_heap():
        return run_in_new_loop(go())


def test_the_second_wave_waits_one_service_time():
    """max_running 4, 8 concurrent requests: the first four start at once, the other four queue
    (waiting 4 on /metrics) and each starts at the exact instant a first-wave request sent its last
    chunk; the client measures their TTFT as one service time longer. Server decisions compared
    exactly; the client judged against the server's own send times by the timing oracle, and its
    TTFT never below the server's schedule (causality) nor, at the median, more than half a service
    time above it. Half is the midpoint between the two outcomes told apart: a busy box delays every
    request in flight by the same stall (7-10 ms seen beside the self-tests on 2 cores; CI once read
    38-40 ms for 7 of the 8, one stall of the process that hosts both ends), a client or a schedule
    that got the queueing wrong adds a whole service time (200 ms here)."""
    config = EmulatorConfig(ttft_ms=50, itl_ms=10, max_running=4, record_timings=True)
    out = 16
    s = service_s(config, out)

    async def during(emulator):
        await asyncio.sleep(s / 2)
        return emulator.gauges()

    records, timings, gauges, emulator = _in_process(
        config, {"concurrency": 8, "num_requests": 8, "return_token_ids": True}, [token_prompt(8, out)], during)
    assert summarize(records).completed == 8
    assert gauges["vllm:num_requests_running"] == 4 and gauges["vllm:num_requests_waiting"] == 4
    order = sorted(timings, key=lambda rid: timings[rid]["arrival"])
    first, second = order[:4], order[4:]
    assert all(timings[r]["admitted"] == [timings[r]["arrival"]] for r in first)
    finishes = sorted(timings[r]["finished"] for r in first)
    assert [timings[r]["admitted"][0] for r in second] == finishes  # FIFO, each at a slot's release
    assert all(timings[r]["finished"] == timings[r]["admitted"][0] + s for r in order)
    assert emulator.gauges() == {"vllm:num_requests_running": 0, "vllm:num_requests_waiting": 0,
                                 "vllm:num_preemptions_total": 0}
    faults = timing_faults(records, timings, 1, summarize(records), TOLERANCE_MS)
    assert not faults, faults
    by_id = {r.x_request_id: r for r in records}
    excess_ms = []
    for rid in order:
        t, record = timings[rid], by_id[rid]
        model_ttft = t["admitted"][0] - t["start"] + config.ttft_ms / 1000  # the server's schedule
        assert t["writes"][0] >= t["admitted"][0] + config.ttft_ms / 1000  # never early
        assert ttft_s(record) >= model_ttft  # the client cannot read it before it is due
        excess_ms.append((ttft_s(record) - model_ttft) * 1000)
    assert float(np.median(excess_ms)) < s * 1000 / 2, excess_ms
    # hence the second wave's TTFT: one service time (less the arrivals' spread, ~1 ms) more than
    # the first's, by the server's decisions, and so the client measured it
    spread = timings[order[-1]]["arrival"] - timings[order[0]]["arrival"]
    for rid in second:
        wait = timings[rid]["admitted"][0] - timings[rid]["arrival"]
        assert s - spread <= wait <= s
        assert ttft_s(by_id[rid]) >= wait + config.ttft_ms / 1000


@pytest.mark.parametrize("streams, preempted", [(4, False), (5, True)])
def test_preemption_starts_where_the_blocks_run_out(streams, preempted):
    """`gpucert emulator --kv-blocks N·B+1` with B = ceil((P + O − 1) / block size): N streams of
    P prompt + O output tokens run without a preemption, N + 1 preempt (vllm:num_preemptions_total
    from /metrics, read with the monitor's parser); every request still gets all its tokens, and
    the server's decisions are exactly what the pure scheduler makes of the recorded arrivals."""
    prompt, out, bs, n = 16, 64, 16, 4
    per_request = math.ceil((prompt + out - 1) / bs)
    config = EmulatorConfig(ttft_ms=10, itl_ms=2, kv_blocks=n * per_request + 1, block_size=bs)
    with emulator_process("--ttft-ms", "10", "--itl-ms", "2", "--kv-blocks", str(config.kv_blocks),
                          "--block-size", str(bs), "--record-timings") as server:
        run = run_load(LoadConfig(base_url=server.v1_url, model="m", concurrency=streams,
                                  num_requests=3 * streams, return_token_ids=True), [token_prompt(prompt, out)])
        metrics = parse_vllm_metrics(get_text(f"http://127.0.0.1:{server.port}/metrics"))
        timings = json.loads(get_text(f"http://127.0.0.1:{server.port}/emulator/timings"))
    s = summarize(run.measured)
    assert s.completed == 3 * streams and s.token_count_mismatches == 0
    assert all(r.output_tokens == out for r in run.measured)
    assert (metrics["preemptions"] > 0) == preempted, metrics
    assert metrics["running"] == 0 and metrics["kv_cache_usage_pct"] == 0.0
    model = replay(config, timings, prompt, out)
    assert model.pop("preemptions") == metrics["preemptions"]
    assert model == {rid: {k: timings[rid][k] for k in ("admitted", "preempted", "finished")} for rid in timings}


def test_kv_usage_is_published_as_vllm_does():
    """vllm:kv_cache_usage_perc: the handed-out share of the usable blocks (1 = full), mid-run as
    the arithmetic says; cache_config_info carries the emulated cache."""
    config = EmulatorConfig(ttft_ms=200, itl_ms=10, kv_blocks=11, block_size=16)

    async def during(emulator):
        await asyncio.sleep(0.1)  # both admitted, no token yet: 2 blocks each (a 32-token prompt)
        return (await emulator._metrics(None)).text

    _, _, text, emulator = _in_process(config, {"concurrency": 2, "num_requests": 2}, [token_prompt(32, 4)], during)
    assert parse_vllm_metrics(text) == {"running": 2.0, "waiting": 0.0, "preemptions": 0.0,
                                        "kv_cache_usage_pct": pytest.approx(100 * 4 / 10),
                                        "itl_sum_s": 0.0, "itl_count": 0.0}  # no second token yet
    labels = vllm_metrics.cache_config(text)["0"]
    assert (labels["num_gpu_blocks"], labels["block_size"]) == ("11", "16")
    # max_model_len: the usable 10 × 16 tokens; vLLM's 11 / ceil(160 / 16) concurrency
    assert labels["kv_cache_size_tokens"] == str(int(11 / 10 * 160)) and labels["kv_cache_max_concurrency"] == "1.1"
    assert emulator.gauges()["vllm:kv_cache_usage_perc"] == 0.0


def test_an_over_long_request_gets_vllms_400():
    """prompt + max_tokens over --max-model-len: HTTP 400 with vLLM's error JSON, counted as a
    failed request by the load generator; one exactly at the limit is served."""
    with emulator_process("--ttft-ms", "1", "--itl-ms", "1", "--max-model-len", "64") as server:
        body = json.dumps({"model": "m", "prompt": list(range(60)), "max_tokens": 5, "stream": True}).encode()
        request = urllib.request.Request(server.v1_url + "/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=30)
        assert answer.value.code == 400
        error = json.loads(answer.value.read())
        assert error == context_length_error(64, 60, 5)
        assert error["error"]["message"].startswith("This model's maximum context length is 64 tokens. However, "
                                                    "you requested 5 output tokens and your prompt contains 60 "
                                                    "input tokens, for a total of 65 tokens.")
        run = run_load(LoadConfig(base_url=server.v1_url, model="m", concurrency=1, num_requests=2),
                       [token_prompt(60, 5), token_prompt(60, 4)])
    refused, served = run.measured
    assert refused.http_status == 400 and "maximum context length is 64 tokens" in refused.error
    assert served.ok and served.output_tokens == 4


def test_cli_refuses_what_cannot_be_emulated(capsys):
    """One line and exit status 2: a max_model_len the cache cannot hold, and a scheduler spread
    over processes (each would schedule its own share)."""
    assert cli.main(["emulator", "--kv-blocks", "5", "--max-model-len", "100"]) == 2
    assert "does not fit the KV cache's 64 usable tokens" in capsys.readouterr().err
    assert cli.main(["emulator", "--max-running", "2", "--processes", "2"]) == 2
    assert "need --processes 1" in capsys.readouterr().err


def test_a_client_that_leaves_frees_its_slot():
    """A streaming client that disconnects while queued or in service leaves the scheduler: its
    slot and blocks go to the next request, nothing is left waiting."""
    config = EmulatorConfig(ttft_ms=20, itl_ms=20, max_running=1, kv_blocks=9, block_size=16)

    async def go():
        async with EmulatorServer(config) as server:
            runs = await LoadGenerator(LoadConfig(base_url=server.base_url, model="m", concurrency=3,
                                                  num_requests=3, request_timeout_s=0.15),
                                       [token_prompt(8, 20)]).run()
            await asyncio.sleep(0.05)
            deadline = time.monotonic() + 5
            while server.emulator.gauges()["vllm:num_requests_running"] and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            return runs.measured, server.emulator.gauges(), server.emulator.scheduler
    with frozen_heap():
        records, gauges, sched = run_in_new_loop(go())
    assert any(r.error and r.error.startswith("timeout") for r in records)
    assert gauges["vllm:num_requests_running"] == 0 and gauges["vllm:num_requests_waiting"] == 0
    assert sched.used_blocks == 0
