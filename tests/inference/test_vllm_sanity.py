"""The engine is up and serves: a few streamed requests, token counts right, and what the engine
reported at start (KV cache capacity, compile and graph-capture time) on the card."""

import pytest

from gpucert.serving import configuration, vllm_metrics
from gpucert.serving.summary import summarize, token_count_mismatches

from .load import run_level

pytestmark = pytest.mark.inference

REQUESTS = 4
# what vLLM reports at start, recorded as metrics (key in the engine's facts → unit, direction): from
# its /metrics where it publishes them (vllm_metrics), from its log for the rest
ENGINE_FACTS = {
    "kv_cache_tokens": ("tokens", "higher"),
    "max_concurrency": ("x", "higher"),
    "compile_s": ("s", "lower"),
    "cuda_graph_s": ("s", "lower"),
    "engine_init_s": ("s", "lower"),
    "startup_s": ("s", "lower"),
}
ENGINE_CHOICES = ("vllm_version", "allreduce_backends", "attention_backend", "nccl_version", "dtype",
                  "kv_cache_dtype", "enable_prefix_caching", "max_num_batched_tokens", "block_size")


def test_vllm_sanity(gpucert, serving, gpucert_note):
    run = run_level(serving, concurrency=1, requests=REQUESTS, level=0)
    records = run.measured
    summary = summarize(records)
    crashed = serving.crashed(grace_s=2.0 if summary.failed else 0.0)
    gpucert.record("failed_requests", summary.failed, unit="requests", direction="lower",
                   note="; ".join(sorted({r.error for r in records if r.error}))[:500] or None)
    # every completed request got exactly what it asked for, by the server's own count
    wrong = token_count_mismatches(records, exact=serving.load.ignore_eos)
    gpucert.record("token_count_mismatches", len(wrong), unit="requests", direction="lower",
                   note="; ".join(f"request {r.request_id}: " + (r.token_count_mismatch or
                                                                  f"{r.output_tokens} tokens ({r.output_tokens_source}), "
                                                                  f"asked {r.requested_output_tokens}")
                                  for r in wrong)[:500] or None)
    if summary.completed:
        gpucert.record("ttft_ms", summary.ttft_ms["p50"], unit="ms", direction="lower",
                       samples=[(r.first_token_at - r.sent_at) * 1e3 for r in records if r.ok])
    # what the engine chose, as text on the card: a changed all-reduce or attention backend
    # explains a changed latency before any number does
    chosen = {key: serving.facts[key] for key in ENGINE_CHOICES if serving.facts.get(key) is not None}
    if chosen:
        gpucert.finding("engine", **{key: ", ".join(map(str, value)) if isinstance(value, list) else str(value)
                                     for key, value in chosen.items()})
    for key, (unit, direction) in ENGINE_FACTS.items():
        if serving.facts.get(key) is not None:
            gpucert.record(key, serving.facts[key], unit=unit, direction=direction,
                           note=vllm_metrics.source_note(serving.facts, key))
    judge_configuration(gpucert, serving, gpucert_note)
    if crashed:
        pytest.fail(f"the engine died during the check: {crashed}", pytrace=False)


def judge_configuration(gpucert, serving, note):
    """The engine and load settings beside the baseline's: a run under other settings is said to
    be one (a finding per setting, `config_changes` warns, a note at the top of the card)."""
    gpucert.artifact("configuration", serving.configuration)
    baseline = gpucert.baseline_artifact("configuration")
    if baseline is None:
        gpucert.record("config_changes", None, unit="settings", direction="lower", status="skipped",
                       error=f"no baseline configuration for profile {gpucert.profile} yet "
                             "(--update-baselines keeps this run's)")
        return
    changed = configuration.changes(baseline, serving.configuration)
    for change in changed:
        gpucert.finding("configuration", **{k: str(v) for k, v in change.items()})
    gpucert.record("config_changes", len(changed), unit="settings", direction="lower",
                   note="engine and load settings that differ from the baseline's" if changed else None)
    if changed:
        note("the serving and offline figures are judged against baselines measured under other settings: "
             + "; ".join(f"{c['setting']} {c['baseline']} → {c['now']}" for c in changed))
