"""The production-like workloads' prompts (issue 20, point 1): the shared-prefix groups and the
Mooncake-format trace, each seeded and checked token by token; the prefix-cache share they imply."""

from __future__ import annotations

import json
import re
import urllib.request

import numpy as np
import pytest

from gpucert.cli import main
from gpucert.serving import datasets, prefix_counters, workloads
from gpucert.serving.loadgen import LoadConfig, LoadGenerator, run_in_new_loop, run_load
from gpucert.serving.records import RequestRecord
from gpucert.serving.settings import load_settings
from gpucert.serving.summary import client_check

from .emulators import emulator_process

VOCAB = 151936


def test_a_groups_prefix_is_token_identical_and_every_suffix_its_own():
    prompts = list(workloads.shared_prefix(64, groups=16, prefix_len=1024, suffix_len=32, output_len=8,
                                           vocab_size=VOCAB, seed=3))
    assert len(prompts) == 64 and all(p.prompt_tokens == 1056 == len(p.prompt) for p in prompts)
    for group in range(16):
        members = prompts[group::16]
        assert len({tuple(p.prompt[:1024]) for p in members}) == 1  # one prefix per group
    assert len({tuple(p.prompt[:1024]) for p in prompts}) == 16  # and 16 different ones
    assert len({tuple(p.prompt[1024:]) for p in prompts}) == 64  # every suffix its own
    assert all(datasets.SPECIAL_MARGIN <= t < VOCAB - datasets.SPECIAL_MARGIN for p in prompts for t in p.prompt)
    again = list(workloads.shared_prefix(64, groups=16, prefix_len=1024, suffix_len=32, output_len=8,
                                         vocab_size=VOCAB, seed=3))
    assert again == prompts  # seeded
    other = list(workloads.shared_prefix(64, groups=16, prefix_len=1024, suffix_len=32, output_len=8,
                                         vocab_size=VOCAB, seed=4))
    assert other[0].prompt[:1024] != prompts[0].prompt[:1024]  # another level, other prefixes


def test_text_prefixes_share_their_words():
    prompts = list(workloads.shared_prefix(6, groups=2, prefix_len=50, suffix_len=5, output_len=4, seed=1,
                                           token_ids=False))
    words = [p.prompt.split() for p in prompts]
    assert words[0][:50] == words[2][:50] == words[4][:50] != words[1][:50]
    assert all(p.prompt_tokens is None for p in prompts)


def test_the_expected_cache_share_counts_full_shared_blocks_only():
    prompts = list(workloads.shared_prefix(64, groups=16, prefix_len=1024, suffix_len=32, output_len=8,
                                           vocab_size=VOCAB, seed=3))
    hits, total = workloads.expected_prefix_hits(prompts, block_size=16)
    # the first prompt of each group computes its prefix; the other 48 find all 64 of its blocks
    assert (hits, total) == (48 * 1024, 64 * 1056)
    hits, _ = workloads.expected_prefix_hits(prompts, block_size=1000)  # only the first 1000 tokens make a block
    assert hits == 48 * 1000
    same = [datasets.Prompt([5000] * 32, 32, 1)] * 2
    assert workloads.expected_prefix_hits(same, 16) == (31, 64)  # never the last token: it is recomputed


def write_trace(path, rows) -> str:
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return str(path)


def test_a_trace_replays_in_time_order_with_its_blocks_shared(tmp_path):
    path = write_trace(tmp_path / "t.jsonl", [
        {"timestamp": 1000, "input_length": 40, "output_length": 5, "hash_ids": [7, 8, 9]},
        {"timestamp": 0, "input_length": 30, "output_length": 3, "hash_ids": [7, 8]},
        {"timestamp": 2500, "input_length": 12, "output_length": 2},
    ])
    prompts = list(workloads.trace(path, vocab_size=VOCAB, seed=1, block_size=16))
    assert [p.send_at for p in prompts] == [0.0, 1.0, 2.5]
    assert [len(p.prompt) for p in prompts] == [30, 40, 12] and [p.output_tokens for p in prompts] == [3, 5, 2]
    first, second, third = (p.prompt for p in prompts)
    assert first[:30] == second[:30]  # blocks 7 and 8 (the second only partly in a 30-token prompt)
    assert second[32:40] != first[:8]  # block 9 is its own
    assert third[:12] != first[:12]
    fast = list(workloads.trace(path, vocab_size=VOCAB, seed=1, block_size=16, speed=2.0))
    assert [p.send_at for p in fast] == [0.0, 0.5, 1.25] and [p.prompt for p in fast] == [p.prompt for p in prompts]
    assert list(workloads.trace(path, vocab_size=VOCAB, seed=1, block_size=16)) == prompts  # seeded
    assert len(list(workloads.trace(path, vocab_size=VOCAB, num_prompts=2))) == 2


@pytest.mark.parametrize("line, error", [
    ('{"timestamp": -1, "input_length": 3, "output_length": 1}', "'timestamp' (ms) must be a number >= 0"),
    ('{"timestamp": 0, "input_length": 0, "output_length": 1}', "'input_length' must be an int >= 1"),
    ('{"timestamp": 0, "input_length": 3, "output_length": 1, "hash_ids": ["a"]}', "'hash_ids' must be a list of ints"),
    ('{"timestamp": 0, "input_length": 3', "not valid JSON"),
    ("[1, 2]", "expected an object"),
])
def test_a_bad_trace_line_is_named(tmp_path, line, error):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 3, "output_length": 1}\n' + line + "\n")
    with pytest.raises(ValueError, match="bad.jsonl:2: " + re.escape(error)):
        list(workloads.trace(path, vocab_size=VOCAB))


def test_an_empty_trace_is_refused(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no requests in the trace"):
        list(workloads.trace(tmp_path / "e.jsonl", vocab_size=VOCAB))
    with pytest.raises(ValueError, match="speed must be > 0"):
        list(workloads.trace(tmp_path / "e.jsonl", vocab_size=VOCAB, speed=0))


def test_the_load_settings_build_both_workloads(tmp_path):
    path = write_trace(tmp_path / "t.jsonl", [{"timestamp": 0, "input_length": 8, "output_length": 2}])
    load = load_settings({"dataset": "prefix", "prefix_groups": "4", "prefix_len": "64", "input_len": "8"})
    assert load.label == "4 groups sharing 64 tokens + 8 own in / 256 out (token ids)"
    prompts = datasets.for_load(load.dataset, 8, input_len=load.input_len, output_len=4, token_ids=True,
                                vocab_size=VOCAB, prefix_groups=load.prefix_groups, prefix_len=load.prefix_len)
    assert [len(p.prompt) for p in prompts] == [72] * 8 and prompts[0].prompt[:64] == prompts[4].prompt[:64]
    replay = load_settings({"dataset": "trace", "dataset_path": path, "trace_speed": "2"})
    assert replay.label == "trace t.jsonl at 2× speed"
    with pytest.raises(ValueError, match="dataset trace needs a file"):
        load_settings({"dataset": "trace"})


# ---- the replay against a real server's own arrival stamps --------------------------------------
def bursty_trace(path, requests: int, seconds: float, seed: int = 7) -> str:
    """A synthetic bursty trace: gamma inter-arrivals of shape 0.25 (bursts, then quiet), as a
    production trace looks; Mooncake's JSONL with timestamps in ms."""
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(0.25, seconds / requests / 0.25, requests)
    stamps = np.cumsum(gaps) - gaps[0]
    return write_trace(path, [{"timestamp": round(float(t) * 1000, 3), "input_length": 16, "output_length": 4,
                               "hash_ids": [int(i % 5)]} for i, t in enumerate(stamps)])


def test_a_replay_sends_at_the_traces_times_by_the_servers_own_clock(tmp_path):
    """A bursty trace (gamma inter-arrivals of shape 0.25) replayed at the emulator: the schedule is
    the trace's to the nanosecond; no request reaches the server (its handler's start, GET
    /emulator/timings) before its time, nor before the client stamped it sent; and the schedule lag
    the summary reports is each request's sent − scheduled. How small that lag is on a quiet box
    is a benchmark (tools/bench_replay.py, docs/evidence/issue-20-workloads), not a timed test."""
    prompts = list(workloads.trace(bursty_trace(tmp_path / "burst.jsonl", 150, 3.0), vocab_size=VOCAB,
                                   block_size=16))
    with emulator_process("--ttft-ms", "2", "--itl-ms", "1", "--record-timings") as emulator:
        config = LoadConfig(base_url=emulator.v1_url, model="m", replay=True, num_requests=len(prompts),
                            return_token_ids=True)
        run = run_load(config, prompts)
        with urllib.request.urlopen(emulator.v1_url.removesuffix("/v1") + "/emulator/timings", timeout=30) as answer:
            timings = json.load(answer)
    records = sorted(run.measured, key=lambda r: r.scheduled_at)
    assert len(records) == 150 and all(r.ok for r in records)
    planned = np.array([p.send_at for p in prompts])
    scheduled = np.array([r.scheduled_at for r in records])
    assert np.allclose(scheduled - scheduled[0], planned, atol=1e-9)  # the schedule is the trace's
    sent = np.array([r.sent_at for r in records])
    arrived = np.array([timings[r.x_request_id]["start"] for r in records])
    assert (sent >= scheduled).all(), "a request was sent before its time"
    assert (arrived >= sent).all(), "the server had a request before the client stamped it sent"
    lag = client_check(run)["send_delay_ms"]
    assert lag["p99"] == pytest.approx(np.percentile((sent - scheduled) * 1e3, 99), rel=1e-6)


@pytest.mark.fault("workloads", "a replay whose requests queue behind each other in the client (a cap of 1 in "
                                "flight under a trace that needs several)",
                   "the schedule lag it reports grows past the 5 ms bound (max > 500 ms)")
def test_a_client_that_falls_behind_the_trace_shows_in_its_schedule_lag(tmp_path):
    prompts = list(workloads.trace(bursty_trace(tmp_path / "burst.jsonl", 40, 0.5), vocab_size=VOCAB,
                                   block_size=16))
    with emulator_process("--ttft-ms", "20", "--itl-ms", "5") as emulator:
        config = LoadConfig(base_url=emulator.v1_url, model="m", replay=True, concurrency=1,
                            num_requests=len(prompts), return_token_ids=True)
        run = run_load(config, prompts)
    lag = client_check(run)["send_delay_ms"]
    # 40 requests of ~35 ms one at a time against a trace of 0.5 s: the last go ~1 s late
    assert lag["max"] > 500 and lag["p99"] > 5.0


def test_a_replay_without_send_times_is_refused():
    with pytest.raises(ValueError, match="not at a request rate"):
        LoadConfig(base_url="http://127.0.0.1:1/v1", model="m", replay=True, request_rate=2.0, num_requests=1)
    config = LoadConfig(base_url="http://127.0.0.1:1/v1", model="m", replay=True, num_requests=1)
    with pytest.raises(ValueError, match="needs prompts with send times"):
        run_load(config, [datasets.Prompt([1000, 1001], 2, 1)])


# ---- the prefix cache: the emulator's, counted as vLLM counts on /metrics --------------------------
def prefix_prompts(seed: int = 3) -> list:
    return list(workloads.shared_prefix(48, groups=4, prefix_len=256, suffix_len=24, output_len=4,
                                        vocab_size=VOCAB, seed=seed))


def counters(url: str) -> prefix_counters.PrefixCounters | None:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/metrics", timeout=30) as answer:
        return prefix_counters.parse(answer.read().decode())


def test_the_hit_rate_over_a_level_is_what_the_shared_prefixes_imply():
    """One request at a time, so every prompt finds the blocks of those before it: the counters'
    window gives exactly the expected share (4 of 48 prompts compute their group's prefix), and the
    prefill the cache saves shows in TTFT against the same load with the cache off."""
    prompts = prefix_prompts()
    expected_hits, expected_total = workloads.expected_prefix_hits(prompts, block_size=16)
    ttft = {}
    for cache in (True, False):
        args = ["--ttft-ms", "2", "--itl-ms", "1", "--prefill-ms-per-token", "0.05"] + (["--prefix-cache"] if cache else [])
        with emulator_process(*args) as emulator:
            before = counters(emulator.v1_url)
            run = run_load(LoadConfig(base_url=emulator.v1_url, model="m", concurrency=1, num_requests=len(prompts),
                                      return_token_ids=True), prompts)
            after = counters(emulator.v1_url)
        assert all(r.ok for r in run.measured)
        ttft[cache] = np.median([r.first_token_at - r.sent_at for r in run.measured[4:]]) * 1e3
        if cache:
            level = prefix_counters.window(before, after)
            assert (level["queried_tokens"], level["hit_tokens"]) == (expected_total, expected_hits)
            assert level["hit_pct"] == pytest.approx(100 * 44 * 256 / (48 * 280))
        else:
            # as vLLM 0.26: both counters published and left at 0 — nothing looked up, no rate
            assert before == after == prefix_counters.PrefixCounters(0, 0)
            assert prefix_counters.level_hits([prefix_counters.window(before, after)], cache_on=False).absent
    # 256 cached tokens × 0.05 ms: the median request saves ~12.8 ms of prefill
    assert ttft[False] - ttft[True] == pytest.approx(256 * 0.05, abs=4.0), ttft


def test_concurrent_members_of_a_group_miss_until_its_prefill_is_done():
    """vLLM caches a block once computed: a group's members sent together all compute its prefix.
    "Together" is within the prefill's 500 ms: under two CPU hogs and `make test`'s other worker the
    client's eight sends spread past a 20 ms prefill, and a late member hit its group's cache."""
    prompts = prefix_prompts()[:8]  # 2 of each of 4 groups, all at once
    with emulator_process("--ttft-ms", "500", "--itl-ms", "1", "--prefix-cache") as emulator:
        run_load(LoadConfig(base_url=emulator.v1_url, model="m", concurrency=8, num_requests=8,
                            return_token_ids=True), prompts)
        level = prefix_counters.window(prefix_counters.PrefixCounters(0, 0), counters(emulator.v1_url))
    assert level["hit_tokens"] == 0 and level["queried_tokens"] == 8 * 280


def test_counters_that_went_backwards_or_are_absent_give_no_rate():
    assert prefix_counters.window(prefix_counters.PrefixCounters(10, 5), prefix_counters.PrefixCounters(4, 1)) == \
        {"queried_tokens": None, "hit_tokens": None, "hit_pct": None}
    text = ('# TYPE vllm:prefix_cache_queries counter\nvllm:prefix_cache_queries_total{engine="0"} 100.0\n'
            'vllm:prefix_cache_queries_total{engine="1"} 50.0\n'
            '# TYPE vllm:prefix_cache_hits counter\nvllm:prefix_cache_hits_total{engine="0"} 30.0\n')
    assert prefix_counters.parse(text) == prefix_counters.PrefixCounters(150.0, 30.0)
    assert prefix_counters.parse("vllm:num_requests_running 3\n") is None


@pytest.mark.fault("workloads", "prefix-cache counters that did not move over a level (vLLM 0.26 with caching off; "
                   "or caching on and nothing looked up)", "caching off: no hit rate, a notice; caching on: a measurement "
                   "error that fails")
def test_a_level_with_no_lookups_has_no_hit_rate_and_fails_only_with_caching_on():
    """vLLM 0.26 with prefix caching off publishes both counters at 0 (an H100, session 17): the
    cache-off level has no hit rate to judge (it failed there as a value of None). With caching
    on, prompts served and nothing looked up is a broken measurement, and fails."""
    still = prefix_counters.window(prefix_counters.PrefixCounters(0, 0), prefix_counters.PrefixCounters(0, 0))
    assert prefix_counters.level_hits([still, still], cache_on=False).absent
    broken = prefix_counters.level_hits([still], cache_on=True)
    assert not broken.absent and "did not move" in broken.error and broken.hit_pct is None
    assert prefix_counters.level_hits([{"queried_tokens": None, "hit_tokens": None, "hit_pct": None}],
                                      cache_on=True).absent
    two = [prefix_counters.window(prefix_counters.PrefixCounters(0, 0), prefix_counters.PrefixCounters(100, 80)),
           prefix_counters.window(prefix_counters.PrefixCounters(100, 80), prefix_counters.PrefixCounters(400, 140))]
    level = prefix_counters.level_hits(two, cache_on=True)
    assert (level.hit_pct, level.queried_tokens, level.hit_tokens, level.error) == (35.0, 400.0, 140.0, None)


# ---- multi-turn conversations ---------------------------------------------------------------------
def test_conversations_are_seeded_turn_by_turn():
    turns = list(workloads.conversations(3, turns=4, input_len=10, output_len=5, think_s=0.5, vocab_size=VOCAB, seed=2))
    assert [(p.conversation, p.turn) for p in turns] == [(c, t) for c in range(3) for t in range(4)]
    assert all(len(p.prompt) == 10 and p.think_s == 0.5 for p in turns)
    assert len({tuple(p.prompt) for p in turns}) == 12  # every message its own
    assert turns == list(workloads.conversations(3, turns=4, input_len=10, output_len=5, think_s=0.5,
                                                 vocab_size=VOCAB, seed=2))
    load = load_settings({"dataset": "multiturn", "turns": "3", "think_s": "0.2", "input_len": "10"})
    assert load.label == "conversations of 3 turns, 10 new in / 256 out per turn, 0.2 s think time (token ids)"
    assert len(datasets.for_load("multiturn", 9, input_len=10, output_len=4, token_ids=True, vocab_size=VOCAB,
                                 turns=3)) == 9


def test_each_turn_resends_the_history_with_the_servers_own_answers():
    """Token ids on the emulator: turn k's prompt is turn k−1's prompt, the ids the server streamed
    back and the new message, so the history grows by exactly that; with the prefix cache on, every
    later turn finds its whole history cached; a think time separates an answer from the next turn."""
    turns = list(workloads.conversations(4, turns=3, input_len=32, output_len=8, think_s=0.05, vocab_size=VOCAB, seed=5))
    with emulator_process("--ttft-ms", "2", "--itl-ms", "1", "--prefix-cache", "--record-timings") as emulator:
        before = counters(emulator.v1_url)
        run = run_load(LoadConfig(base_url=emulator.v1_url, model="m", concurrency=2, num_requests=len(turns),
                                  return_token_ids=True), turns)
        level = prefix_counters.window(before, counters(emulator.v1_url))
        with urllib.request.urlopen(emulator.v1_url.removesuffix("/v1") + "/emulator/timings", timeout=30) as answer:
            timings = json.load(answer)
    records = sorted(run.measured, key=lambda r: (r.conversation, r.turn))
    assert [(r.conversation, r.turn) for r in records] == [(c, t) for c in range(4) for t in range(3)]
    assert all(r.ok for r in records)
    for first, second in zip(records, records[1:]):
        if first.conversation != second.conversation:
            continue
        assert second.prompt_tokens == first.prompt_tokens + 8 + 32  # the answer and the new message
        assert second.sent_at - first.ended_at >= 0.05  # the think time
        # the history in full blocks of 16, but for the answer's last token (its KV never computed)
        assert timings[second.x_request_id]["cached_tokens"] == (first.prompt_tokens + 8 - 1) // 16 * 16
    assert max(len([r for r in records if r.sent_at <= x.sent_at < r.ended_at]) for x in records) <= 2
    # the expected share the check reports beside the counters: exactly what the server counted
    assert workloads.expected_history_hits(records, 16) == (level["hit_tokens"], level["queried_tokens"])


def test_the_expected_history_share_counts_each_turns_previous_prompt_and_answer():
    """Blocks of 16: turn 0 of 32 + 8 answered holds (32 + 8 − 1) // 16 = 2 blocks for turn 1's
    72-token prompt; a failed turn leaves its successor nothing to count, a first turn shares nothing."""
    def turn(conversation, number, prompt, output, status="ok"):
        return RequestRecord(request_id=0, scheduled_at=0.0, conversation=conversation, turn=number,
                             prompt_tokens=prompt, output_tokens=output, status=status)
    records = [turn(0, 0, 32, 8), turn(0, 1, 72, 8), turn(0, 2, 112, 8),
               turn(1, 0, 32, 8, status="error"), turn(1, 1, 72, 8), turn(None, None, 40, 8)]
    # conversation 0: 0 + 32 + 64 (turn 2: (72 + 8 − 1) // 16 × 16 = 64); conversation 1: its turn 1
    # follows a failure; a warm-up message (conversation None) is queried, never a hit
    assert workloads.expected_history_hits(records, 16) == (32 + 64, 32 + 72 + 112 + 72 + 40)
    assert workloads.expected_history_hits([turn(0, 0, 16, 1), turn(0, 1, 17, 1)], 16) == (16, 33)
    with pytest.raises(ValueError, match="block_size"):
        workloads.expected_history_hits(records, 0)


def test_chat_conversations_send_their_messages_and_answers_to_a_real_server():
    """The chat path: history as messages, the answers as the server streamed them (text)."""
    turns = list(workloads.conversations(2, turns=2, input_len=20, output_len=3, token_ids=False, seed=1))
    sent = []
    with emulator_process("--ttft-ms", "2", "--itl-ms", "1", "--prefix-cache") as emulator:
        config = LoadConfig(base_url=emulator.v1_url, model="m", endpoint="chat", concurrency=1, num_requests=4)
        generator = LoadGenerator(config, turns)
        original = generator._record

        def spy(*args, **kwargs):
            record, body = original(*args, **kwargs)
            sent.append(json.loads(body)["messages"])
            return record, body
        generator._record = spy
        run = run_in_new_loop(generator.run())
        after = counters(emulator.v1_url)
    assert all(r.ok for r in run.measured)
    assert [len(m) for m in sent] == [1, 3, 1, 3]
    assert sent[1][0]["content"] == turns[0].prompt and sent[1][1]["role"] == "assistant"
    assert sent[1][1]["content"] == " t0 t1 t2" and sent[1][2]["content"] == turns[1].prompt
    assert after.hits > 0  # the second turns found their history


def test_a_failed_turn_ends_its_conversation_and_its_later_turns_say_why():
    turns = list(workloads.conversations(1, turns=3, input_len=4, output_len=2, vocab_size=VOCAB, seed=1))
    with emulator_process("--ttft-ms", "2", "--itl-ms", "1", "--error-rate", "1") as emulator:
        run = run_load(LoadConfig(base_url=emulator.v1_url, model="m", concurrency=1, num_requests=3,
                                  return_token_ids=True), turns)
    errors = [r.error for r in sorted(run.measured, key=lambda r: r.turn)]
    assert errors[0].startswith("HTTP 500") and all(e.startswith("not sent: turn 0 of its conversation failed")
                                                    for e in errors[1:])
    with pytest.raises(ValueError, match="need the answers' token ids"):
        LoadGenerator(LoadConfig(base_url="http://127.0.0.1:1/v1", model="m", concurrency=1, num_requests=3), turns)


# ---- by hand: gpucert loadgen --dataset prefix | multiturn | trace ------------------------------------
def test_the_loadgen_command_runs_each_workload(tmp_path, capsys):
    trace_file = bursty_trace(tmp_path / "t.jsonl", 20, 0.5)
    with emulator_process("--ttft-ms", "2", "--itl-ms", "1", "--prefix-cache") as emulator:
        common = ["loadgen", "--base-url", emulator.v1_url, "--model", "m", "--token-ids", "--output-len", "4", "--json"]
        assert main([*common, "--dataset", "trace", "--dataset-path", trace_file]) == 0
        replay = json.loads(capsys.readouterr().out)
        assert main([*common, "--dataset", "multiturn", "--turns", "3", "--concurrency", "2", "--num-requests", "6",
                     "--input-len", "16"]) == 0
        turns = json.loads(capsys.readouterr().out)
        assert main([*common, "--dataset", "prefix", "--prefix-groups", "2", "--prefix-len", "64",
                     "--input-len", "8", "--concurrency", "1", "--num-requests", "6"]) == 0
        shared = json.loads(capsys.readouterr().out)
        assert main([*common, "--dataset", "trace", "--dataset-path", trace_file, "--request-rate", "3"]) == 2
        assert "no --request-rate" in capsys.readouterr().err
    assert replay["summary"]["completed"] == 20 and replay["client"]["send_delay_ms"]["p99"] is not None
    assert turns["summary"]["completed"] == 6 and shared["summary"]["completed"] == 6
