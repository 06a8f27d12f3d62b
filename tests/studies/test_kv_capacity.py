"""KV-cache saturation, one check per configuration of studies.yaml's `kv_capacity` (memory
utilization, KV cache dtype, block size): the capacity vLLM reports, then measured against it —
the longest prompt that runs alone, and at the study's fixed request shape the concurrency where
preemption starts (vLLM's own counter) and where TTFT and TPOT knee. Definitions: docs/METRICS.md
(Studies)."""

from __future__ import annotations

import dataclasses
import math

import pytest

from gpucert.monitor.sources import parse_vllm_metrics
from gpucert.serving import vllm_metrics
from gpucert.serving.summary import summarize
from gpucert.studies.analysis import knee, onset_bracket, predicted_full_concurrency

from ..inference.load import run_level
from .conftest import study_load

pytestmark = pytest.mark.study


def _preemptions(target) -> float | None:
    """vLLM's preemption counter now (None: not published or not readable)."""
    try:
        return parse_vllm_metrics(vllm_metrics.fetch(target.server.base_url)).get("preemptions")
    except (vllm_metrics.MetricsError, ValueError):
        return None


class Prober:
    """Runs one wave of `concurrency` requests of the study's shape, keeps its row and tells the
    monitor its load (`loads`: LoadWindows); restarts the engine (through the pool) after a probe
    that killed it."""

    def __init__(self, connect, load, keep, loads):
        self.connect, self.load, self.keep, self.loads = connect, load, keep, loads
        self.target = connect(load)
        self.rows: list[dict] = []

    def run(self, concurrency: int, load=None, phase: str = "onset") -> dict:
        load = load or self.load
        if self.target.crashed():
            self.target = self.connect(load)
        target = dataclasses.replace(self.target, load=load)
        before = _preemptions(target)
        records = run_level(target, concurrency, concurrency, level=concurrency)
        crashed = target.crashed(grace_s=2.0 if any(not r.ok for r in records.measured) else 0.0)
        after = None if crashed else _preemptions(target)
        summary = summarize(records.measured, load.slo)
        self.loads.add_records(records.measured, summary.total_output_tokens)
        row = {"phase": phase, "concurrency": concurrency, "input_len": load.input_len, "output_len": load.output_len,
               "completed": summary.completed, "failed": summary.failed,
               "preemptions": None if before is None or after is None else after - before,
               "ttft_ms_p99": summary.ttft_ms.get("p99"), "tpot_ms_p99": summary.tpot_ms.get("p99"),
               "output_tok_s": summary.output_tokens_per_s if summary.completed else None,
               "error": "; ".join(sorted({r.error for r in records.measured if r.error}))[:300] or None,
               "crashed": crashed}
        self.rows.append(row)
        self.keep(row)  # on the card as it is measured: a failure or Ctrl-C later keeps it
        return row


def _search_onset(prober: Prober, predicted_onset: int, plan, cap: int | None) -> None:
    """Probes around the predicted onset (± the bracket), then bisects (low, high] to the plan's
    resolution; widens by half where the bracket missed. Stops at max_probes."""
    def onset_rows() -> list[dict]:
        return [r for r in prober.rows if r["phase"] == "onset"]

    searched = 0
    for fraction in (1 - plan.bracket, 1 + plan.bracket):
        prober.run(max(1, round(predicted_onset * fraction)))
        searched += 1
    while searched < plan.max_probes:
        rows = onset_rows()
        low, high = onset_bracket(rows)
        if high is None:
            nxt = math.ceil(max(r["concurrency"] for r in rows) * 1.5)
            if cap is not None and nxt > cap:
                break  # beyond what the scheduler runs at once: no onset to find above
        elif low is None:
            nxt = max(1, min(r["concurrency"] for r in rows) // 2)
            if nxt in {r["concurrency"] for r in rows}:
                break
        elif high - low <= max(1, plan.resolution * high):
            break
        else:
            nxt = (low + high) // 2
        prober.run(nxt)
        searched += 1


def _longest_context(prober: Prober, plan, max_model_len: int | None) -> tuple[int | None, str]:
    """The longest prompt (input tokens) that completes alone: doubling from the plan's start up to
    the longest the engine's max_model_len allows (max_model_len − output tokens), then one token
    past it (the refusal, seen); where something below that fails — out of memory, a crash — the
    bisection of (completed, failed) to the plan's resolution. (tokens, what stopped the next)"""
    out = plan.longest_output_len
    allowed = (max_model_len - out) if max_model_len else None
    ok, bad, why = None, None, "no longer prompt was tried"

    def attempt(n: int) -> bool:
        nonlocal why
        row = prober.run(1, dataclasses.replace(prober.load, input_len=n, output_len=out), phase="context")
        passed = row["completed"] == 1 and not row["failed"]
        if not passed:
            why = ("the engine crashed" if row["crashed"] else "failed") + f" at {n:,} tokens: {row['error'] or ''}"
        return passed

    length = min(plan.longest_start, allowed) if allowed else plan.longest_start
    while bad is None and length >= 1:
        if not attempt(length):
            bad = length
        elif allowed is not None and length >= allowed:
            ok = length
            if attempt(allowed + 1):  # an engine that takes more than its max_model_len says so
                ok, why = allowed + 1, f"{allowed + 1:,} tokens also ran, past max_model_len {max_model_len:,}"
            else:
                why = f"max_model_len {max_model_len:,} ({out} out) refused {allowed + 1:,}: {why.split(': ', 1)[-1]}"
            break
        else:
            ok = length
            length = min(length * 2, allowed) if allowed is not None else length * 2
        if len(prober.rows) > 64:
            break
    while ok is not None and bad is not None and bad - ok > max(1, plan.resolution * bad):
        mid = (ok + bad) // 2
        if attempt(mid):
            ok = mid
        else:
            bad = mid
    return ok, why


def test_kv_capacity(gpucert, plan, study_target, study_loads, kv_point, request):
    kv = plan.kv_capacity
    load = study_load(request.config, input_len=kv.input_len, output_len=kv.output_len, ignore_eos=True,
                      warmup=0, repeats=1, range_ratio=0.0, dataset="random")
    point = kv.point(kv_point)
    prober = Prober(lambda the_load: study_target(kv.engine, point, the_load), load,
                    lambda row: gpucert.finding("probe", **row), study_loads)
    facts = prober.target.facts
    blocks, block_size = facts.get("num_gpu_blocks"), facts.get("block_size")
    for name, key, unit in (("kv_cache_tokens", "kv_cache_tokens", "tokens"), ("kv_blocks", "num_gpu_blocks", "blocks"),
                            ("reported_max_concurrency", "max_concurrency", "requests")):
        if facts.get(key) is not None:
            gpucert.record(name, float(facts[key]), unit=unit, direction="higher",
                           note=vllm_metrics.source_note(facts, key))
    if not (blocks and block_size):
        pytest.fail("the engine reported no KV blocks and block size (vllm:cache_config_info, or its log): "
                    "nothing to predict the onset from", pytrace=False)
    full = predicted_full_concurrency(blocks, block_size, kv.input_len, kv.output_len)
    predicted = full + 1
    shape = f"{kv.input_len} in / {kv.output_len} out, {block_size}-token blocks"
    gpucert.record("predicted_onset_concurrency", float(predicted), unit="requests", direction="higher",
                   note=f"{blocks:,} blocks hold {full:,} requests of {shape} at full length; one more must preempt")
    engine = prober.target.server.config if prober.target.server else None

    longest, why = _longest_context(prober, kv, engine.max_model_len if engine else None)
    if longest is not None:
        gpucert.record("longest_context_tokens", float(longest), unit="tokens", direction="higher",
                       note=f"at concurrency 1, {kv.longest_output_len} out; the next: {why}"[:300])

    knee_levels = sorted({max(1, round(predicted * f)) for f in kv.knee_fractions})
    for level in knee_levels:
        prober.run(level)
    if all(r["preemptions"] is None for r in prober.rows if r["phase"] == "onset"):
        pytest.fail("vLLM's preemption counter (vllm:num_preemptions) is not readable on /metrics", pytrace=False)
    cap = engine.max_num_seqs if engine else None
    _search_onset(prober, predicted, kv, cap)

    rows = [r for r in prober.rows if r["phase"] == "onset"]
    low, high = onset_bracket(rows)
    if high is not None:
        gpucert.record("preemption_onset_concurrency", float(high), unit="requests", direction="higher",
                       note=f"lowest concurrency that preempted (or failed); {low if low is not None else 'no'} level "
                            f"below ran clean; vLLM's counter over one wave of {shape}")
        gpucert.record("onset_vs_predicted_pct", (high - predicted) / predicted * 100, unit="%", direction="higher",
                       note=f"measured {high:,} against {predicted:,} from the reported capacity")
    else:
        gpucert.finding("onset", notice=f"no preemption up to {max(r['concurrency'] for r in rows):,} concurrent "
                                        f"requests (max_num_seqs {cap}): the scheduler's cap, not the KV cache, limits")
    levels = [r["concurrency"] for r in rows if not r["failed"]]
    for metric, factor in kv.knee_factor.items():
        values = [r[metric] for r in rows if not r["failed"]]
        found = knee(levels, values, factor)
        if found is not None:
            gpucert.record(metric.split("_ms")[0] + "_knee_concurrency", float(found), unit="requests",
                           direction="higher",
                           note=f"lowest level with {metric} ≥ {factor:g}× its figure at {min(levels):,}")
