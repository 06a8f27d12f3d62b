"""Shared by the inference checks: one load-generator run against the session's server, built
from the load settings (kept out of conftest so the checks can import it: `from .load import run_level`)."""

from __future__ import annotations

import statistics

import pytest

from gpucert.serving import datasets
from gpucert.serving.loadgen import LoadConfig
from gpucert.serving.loadgen_workers import resolve_workers, run_load_spread
from gpucert.serving.records import RunRecords
from gpucert.serving.summary import (client_check, itl_gaps_s, measured_window, summarize, throughput_series,
                                     token_count_mismatches, tpot_s)


def prompts_for(load, count: int | None, level: int, repeat: int = 0) -> list[datasets.Prompt]:
    """`count` prompts of their own for `level` and `repeat` (no prefix-cache hits across them);
    None: a trace's every request."""
    return datasets.for_load(load.dataset, count, input_len=load.input_len, output_len=load.output_len,
                             token_ids=load.token_ids, vocab_size=load.vocab_size, range_ratio=load.range_ratio,
                             seed=datasets.level_seed(load.seed, level, repeat), path=load.dataset_path,
                             prefix_groups=load.prefix_groups, prefix_len=load.prefix_len,
                             trace_speed=load.trace_speed, trace_block_size=load.trace_block_size,
                             turns=load.turns, think_s=load.think_s)


def run_level(target, concurrency: int | None, requests: int | None, level: int | None = None, repeat: int = 0,
              rate: float | None = None, prompts: list[datasets.Prompt] | None = None,
              duration_s: float | None = None, stop=None) -> RunRecords:
    """`requests` measured requests (plus the warm-up ones) at fixed `concurrency` — or, with
    `rate` (requests/s), arriving as a Poisson process (burstiness 1) with no cap on concurrency —
    over as many client processes as the load settings say (the client must never be the limit).
    `level` picks the prompts (default: the concurrency, else the rate; the sanity check uses 0),
    `repeat` a fresh set; `prompts` gives them instead (the warm-up's first). A trace's prompts
    (their send times) are replayed at those times, `concurrency` then a cap. The run ends at its
    deadline (`level_timeout_s`, else from its load): a server that never answers fails the level
    with what it measured, it does not hold it. `requests` None: a fixed-concurrency load bound by
    `duration_s` instead, ended sooner by `stop` (spawn_event(): sends nothing more once set) —
    a load kept on while a profile window is taken; its prompts cycle."""
    load = target.load
    replay = load.dataset == "trace"
    config = LoadConfig(
        base_url=target.v1_url, model=target.model, endpoint=load.endpoint, concurrency=concurrency, request_rate=rate,
        num_requests=requests, duration_s=duration_s, warmup_requests=load.warmup, seed=load.seed, ignore_eos=load.ignore_eos,
        return_token_ids=load.token_ids, extra_body=dict(load.extra_body), api_key_env=target.api_key_env,
        request_timeout_s=load.request_timeout_s, ramp_up_s=load.ramp_up_s,
        deadline_s=load.level_timeout_s or None,  # None: the deadline from the level's load
        replay=replay)
    workers = resolve_workers(load.client_workers, config)
    if prompts is None:
        if level is None:
            level = concurrency if concurrency is not None else round(rate * 1000)  # prompts per rate, by mreq/s
        # a duration-bound load cycles its prompts: two waves of them
        count = requests if requests is not None else 2 * (concurrency or 1)
        prompts = prompts_for(load, count + load.warmup, level, repeat)
    return run_load_spread(config, prompts, workers, stop)


def _ms(values):
    return [v * 1e3 for v in values if v is not None]


def _record(gpucert, name, per_repeat, *, unit, direction, samples=None, note=None):
    """One metric: with one repeat its value and per-request `samples` (the interval is of that
    percentile); with several, the mean of the repeats with the repeats as samples — repeat-to-repeat
    noise, with a t interval whose 95 % holds at 3 repeats (a median of 3 has no honest one)."""
    values = [v for v in per_repeat if v is not None]
    if not values:
        return
    if len(per_repeat) == 1:
        gpucert.record(name, values[0], unit=unit, direction=direction, samples=samples, note=note)
    else:
        gpucert.record(name, statistics.fmean(values), unit=unit, direction=direction, samples=values,
                       stat="mean", note=f"mean of {len(values)} repeats" + (f"; {note}" if note else ""))


def record_level(gpucert, serving, runs):
    """A served level's metrics from its repeats' records (test_serving_baseline, the studies):
    failures, token counts, rates, SLO attainment and goodput, TTFT/TPOT/ITL percentiles, what the
    monitor needs, the client's own lag. Returns the pooled summary."""
    records = [r for run in runs for r in run.measured]
    summary = summarize(records, serving.load.slo)  # failures, token counts, SLO attainment: all requests
    per = [summarize(run.measured, serving.load.slo) for run in runs] if len(runs) > 1 else [summary]
    ok = [r for r in records if r.ok]

    gpucert.record("failed_requests", summary.failed, unit="requests", direction="lower",
                   note="; ".join(sorted({r.error for r in records if r.error}))[:500] or None)
    wrong = token_count_mismatches(records, exact=serving.load.ignore_eos)
    gpucert.record("token_count_mismatches", len(wrong), unit="requests", direction="lower",
                   note="; ".join(sorted({r.token_count_mismatch or f"{r.output_tokens} tokens, asked "
                                          f"{r.requested_output_tokens}" for r in wrong}))[:500] or None)
    if ok:
        # rates over each repeat's own window (pooled, the pause between repeats would count)
        _record(gpucert, "output_tok_s", [s.output_tokens_per_s for s in per], unit="tok/s", direction="higher")
        _record(gpucert, "total_tok_s", [s.total_tokens_per_s for s in per], unit="tok/s", direction="higher")
        _record(gpucert, "requests_per_s", [s.requests_per_s for s in per], unit="req/s", direction="higher")
    if summary.slo_attainment_pct is not None:
        slo = ", ".join(f"{name.removesuffix('_ms').upper()} ≤ {limit:g} ms" for name, limit in summary.slos.items())
        # per repeat like the rates: where the SLO cuts through the latency distribution (an
        # overloaded level) the share swings with small latency moves, and one pooled figure would
        # hide that swing from its interval (session 8: 79 % → 54–60 % at c=1,024 on a plain rerun)
        _record(gpucert, "slo_attainment_pct", [s.slo_attainment_pct for s in per], unit="%", direction="higher",
                note=f"requests meeting every SLO ({slo}) of all measured")
        _record(gpucert, "goodput_requests_per_s", [s.goodput_requests_per_s for s in per], unit="req/s",
                direction="higher")
        ttft = _ms(r.first_token_at - r.sent_at for r in ok)
        tpot = _ms(tpot_s(r) for r in ok)
        itl = _ms(g for r in ok for g in itl_gaps_s(r))
        for name, dist, samples in (("ttft_ms", "ttft_ms", ttft), ("tpot_ms", "tpot_ms", tpot)):
            if getattr(summary, dist).get("count"):
                for q in ("p50", "p99"):
                    _record(gpucert, f"{name}_{q}", [getattr(s, dist).get(q) for s in per], unit="ms",
                            direction="lower", samples=samples)
        if summary.itl_ms.get("count"):
            _record(gpucert, "itl_ms_p99", [s.itl_ms.get("p99") for s in per], unit="ms", direction="lower",
                    samples=itl)
    # for the resource monitor: its figures over each repeat's measured requests, a repeat's
    # energy, joules per output token, and the streamed tok/s drawn over its GPU charts
    timed = [(window, part.total_output_tokens) for window, part in
             zip((measured_window(run.measured) for run in runs), per) if window]
    if timed:
        gpucert.work(output_tokens=[tokens for _, tokens in timed], windows=[window for window, _ in timed])
    gpucert.timeline("output tok/s", *throughput_series(records))
    clients = [client_check(run) for run in runs]
    for notice in sorted({n for client in clients for n in client.get("notices") or []}):
        gpucert.finding("client", notice=notice)
    lags = [c["loop_lag_ms"]["p99"] for c in clients if c["loop_lag_ms"]["p99"] is not None]
    if lags:
        gpucert.record("client_loop_lag_ms_p99", max(lags), unit="ms", direction="lower",
                       note="the load generator's own event-loop lag (worst repeat): high means the client, "
                            "not the server, limits")
    return summary


def measure_level(gpucert, serving, concurrency: int):
    """One served level, as test_serving_baseline and the studies' points measure it: the load's
    repeats (a deadline that ends one ends the level), recorded by record_level; Ctrl-C (or the
    budget's stop) keeps the repeats that finished; an engine down before or dead after the level
    fails the check with what it measured. Returns the pooled summary."""
    runs = []
    try:
        for repeat in range(serving.load.repeats):
            if serving.crashed():
                pytest.fail(f"the engine is down before this level (repeat {repeat + 1}): {serving.crashed()}",
                            pytrace=False)
            runs.append(run_level(serving, concurrency, serving.load.requests_at(concurrency), repeat=repeat))
            if runs[-1].deadline_passed:  # a server that stalls would stall every repeat: one deadline is enough
                gpucert.finding("deadline", notice=f"the level's {runs[-1].deadline_s:g} s deadline ended repeat "
                                                   f"{repeat + 1} of {serving.load.repeats}; its requests in flight "
                                                   "failed, the repeats after it were not run")
                break
    except KeyboardInterrupt:
        # Ctrl-C (or the budget's stop) inside the level: the repeats that finished are recorded,
        # then the stop goes on and the plugin marks the check incomplete
        if runs:
            record_level(gpucert, serving, runs)
        raise
    summary = record_level(gpucert, serving, runs)
    crashed = serving.crashed(grace_s=2.0 if summary.failed else 0.0)
    if crashed:
        pytest.fail(f"the engine died during this level ({summary.completed} of {summary.completed + summary.failed} "
                    f"requests completed, kept on the card): {crashed}", pytrace=False)
    return summary
