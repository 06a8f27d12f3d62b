"""Workloads that look like production (`make workloads`; docs/METRICS.md, Workloads): shared
prefixes, multi-turn conversations and the replay of a request trace, each level served and judged
like a serving level (TTFT, TPOT, ITL, throughput, failures), plus what the workload is about:

- `prefix_cache_hit_pct`: vLLM's own counters (prefix_cache_hits ÷ prefix_cache_queries, in
  tokens) over the level's window, read from /metrics just before and after each repeat, beside
  `expected_prefix_hit_pct`, the share a prefix cache can serve for these prompts sent one after
  another with nothing evicted (token-id prompts of prefix and trace workloads);
- a cache-off point (`cache_off: true` in the plan) serves the same level on an engine with prefix
  caching off and records `ttft_cache_saving_pct`: how much lower the cache-on TTFT p50 was, with
  the 95 % interval of the two medians' ratio (noise.median_ratio_interval);
- a replay's `schedule_lag_ms_p50/p99/max`: how late the client sent each request against the
  trace's time; past SCHEDULE_LAG_BOUND_MS at p99 the finding says the client, not the server, was
  late for that level.

Under --endpoint the server given serves every point that needs no engine settings of its own (the
cache-off points skip, saying why); its hit rate comes from its /metrics where it publishes vLLM's
counters and is not keyed.

Certify keeps its random levels: these checks live here, not in tests/inference.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gpucert import noise
from gpucert.serving import prefix_counters, vllm_metrics, workloads
from gpucert.serving.summary import client_check, ttft_s

from ..inference.engine_setup import endpoint_target, pool_target
from ..inference.load import prompts_for, record_level, run_level
from .conftest import point_load

pytestmark = pytest.mark.inference

SCHEDULE_LAG_BOUND_MS = 5.0


def test_serving_workloads(gpucert, workload_point, point, workload_engines, workload_endpoint, workload_results,
                           gpucert_report_dir, request):
    config = request.config
    load = point_load(config, point, gpucert_report_dir / "workloads")
    if point.concurrency is None:  # a replay is one pass of its trace, with no warm-up of its prompts
        load = dataclasses.replace(load, warmup=0, repeats=1)
    if workload_endpoint is None:
        target = pool_target(config, workload_engines, point.engine_settings, load, point.id)
    elif not point.cache or point.engine:
        needs = "prefix caching off" if not point.cache else point.engine
        pytest.skip(f"{point.id} needs an engine of its own settings ({needs}); "
                    "an --endpoint gpucert did not start cannot be reconfigured")
    else:
        target = endpoint_target(workload_endpoint, load)
    # Endpoint.keyed, the monitor's rule: a server that wants credentials keeps its /metrics
    metrics_readable = workload_endpoint is None or not workload_endpoint.keyed
    gpucert.finding("workload", workload=point.workload, dataset=load.label, prefix_cache="on" if point.cache else "off",
                    level="replay" if point.concurrency is None else f"concurrency {point.concurrency}")

    runs, windows, prompts_sent = [], [], []
    for repeat in range(load.repeats):
        if target.crashed():
            pytest.fail(f"the engine is down before this level (repeat {repeat + 1}): {target.crashed()}", pytrace=False)
        if point.concurrency is None:  # the whole trace, at its own times
            prompts = prompts_for(load, None, 0, repeat)
            requests = len(prompts)
        else:
            requests = load.requests_at(point.concurrency)
            prompts = prompts_for(load, requests + load.warmup, point.concurrency, repeat)
        before = _counters(target, metrics_readable)
        runs.append(run_level(target, point.concurrency, requests, repeat=repeat, prompts=prompts))
        windows.append(prefix_counters.window(before, _counters(target, metrics_readable)))
        prompts_sent.append(prompts)
    summary = record_level(gpucert, target, runs)
    _record_cache(gpucert, target, point, windows, prompts_sent, runs, metrics_readable)
    if point.concurrency is None:
        _record_schedule_lag(gpucert, runs)
    _compare_cache(gpucert, point, runs, workload_results)
    crashed = target.crashed(grace_s=2.0 if summary.failed else 0.0)
    if crashed:
        pytest.fail(f"the engine died during this level: {crashed}", pytrace=False)


def _counters(target, readable: bool):
    if not readable:
        return None
    try:
        return prefix_counters.parse(vllm_metrics.fetch(target.v1_url.removesuffix("/v1")))
    except vllm_metrics.MetricsError:
        return None


def _record_cache(gpucert, target, point, windows, prompts_sent, runs, metrics_readable: bool) -> None:
    level = prefix_counters.level_hits(windows, cache_on=point.cache)
    if level.absent:
        gpucert.finding("prefix_cache", notice="no prefix-cache lookups on /metrics for this level "
                                               f"({_why_no_counters(point, metrics_readable)})")
    elif level.error:
        gpucert.record_error("prefix_cache_hit_pct", level.error, unit="%")
    else:
        per_repeat = [w["hit_pct"] for w in windows if w["hit_pct"] is not None]
        gpucert.record("prefix_cache_hit_pct", level.hit_pct, unit="%",
                       direction="higher", samples=per_repeat if len(per_repeat) > 1 else None,
                       note=f"vLLM's prefix_cache_hits ÷ prefix_cache_queries over the level: {level.hit_tokens:.0f} "
                            f"of {level.queried_tokens:.0f} prompt tokens")
    block = int(target.facts.get("block_size") or 16)
    if not point.cache or not all(isinstance(p.prompt, list) and isinstance(p.prompt[0], int)
                                  for ps in prompts_sent for p in ps):
        return  # text prompts: their tokens are the server's tokenizer's to count
    if point.load["dataset"] == "multiturn":  # a conversation's history holds the answers as served
        expected = [workloads.expected_history_hits(run.records, block) for run in runs]
        how = "each turn's history (the previous turn's prompt and answer) in full blocks, answers as served"
    else:
        expected = [workloads.expected_prefix_hits(ps, block) for ps in prompts_sent]
        how = "full blocks an earlier prompt of the level had, prompts one after another"
    total = sum(t for _, t in expected)
    if total:
        gpucert.record("expected_prefix_hit_pct", 100.0 * sum(h for h, _ in expected) / total, unit="%",
                       direction="higher", note=f"{how}; {block}-token blocks, nothing evicted")


def _why_no_counters(point, metrics_readable: bool) -> str:
    if not point.cache:
        return "caching off"
    if not metrics_readable:
        return "a keyed endpoint's /metrics is not read"
    return "the server does not publish them"


def _record_schedule_lag(gpucert, runs) -> None:
    lags = [client_check(run)["send_delay_ms"] for run in runs]
    for q in ("p50", "p99", "max"):
        values = [lag[q] for lag in lags if lag[q] is not None]
        if values:
            gpucert.record(f"schedule_lag_ms_{q}", max(values), unit="ms", direction="lower",
                           note="the client's send against the trace's time (worst repeat)")
    worst = max((lag["p99"] for lag in lags if lag["p99"] is not None), default=None)
    if worst is not None and worst > SCHEDULE_LAG_BOUND_MS:
        gpucert.finding("client", notice=f"the replay's schedule lag p99 {worst:.1f} ms is past {SCHEDULE_LAG_BOUND_MS:g} "
                                         "ms: the client, not the server, was late; this level's arrivals are not the trace's")


def _compare_cache(gpucert, point, runs, results: dict) -> None:
    """The cache-off point: its TTFT p50 against the cache-on point's of the same level, with the
    interval of the medians' ratio (noise.median_ratio_interval) over both points' requests."""
    key = (point.workload, point.concurrency)
    ttfts = [1e3 * ttft_s(r) for run in runs for r in run.measured if r.ok]
    if point.cache:
        results[key] = ttfts
        return
    with_cache = results.get(key)
    if not ttfts or not with_cache:
        gpucert.finding("prefix_cache", notice="no cache-on TTFT of this level in this session to compare with")
        return
    off_p50, on_p50 = float(np.median(ttfts)), float(np.median(with_cache))
    found = noise.median_ratio_interval(ttfts, with_cache)
    if found is None:
        ci, method = None, (f"none: {len(with_cache)} vs {len(ttfts)} TTFTs, a medians' ratio needs "
                            f"≥ {noise.MEDIAN_RATIO_MIN_N} a side")
    else:  # the saving 1 − ratio falls as the ratio rises: the bounds swap
        ci, method = (100.0 * (1 - found[2]), 100.0 * (1 - found[1])), found[3]
    gpucert.record("ttft_cache_saving_pct", 100.0 * (1 - on_p50 / off_p50), unit="%", direction="higher",
                   ci=ci, ci_method=method,
                   note=f"TTFT p50 {on_p50:.4g} ms with the prefix cache ({len(with_cache)} requests), "
                        f"{off_p50:.4g} ms without ({len(ttfts)})")
