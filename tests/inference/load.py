"""Shared by the inference checks: one load-generator run against the session's server, built
from the load settings (kept out of conftest so the checks can import it: `from .load import run_level`)."""

from __future__ import annotations

from gpucert.serving import datasets
from gpucert.serving.loadgen import LoadConfig
from gpucert.serving.loadgen_workers import resolve_workers, run_load_spread
from gpucert.serving.records import RunRecords


def prompts_for(load, count: int, level: int, repeat: int = 0) -> list[datasets.Prompt]:
    """`count` prompts of their own for `level` and `repeat` (no prefix-cache hits across them)."""
    return datasets.for_load(load.dataset, count, input_len=load.input_len, output_len=load.output_len,
                             token_ids=load.token_ids, vocab_size=load.vocab_size, range_ratio=load.range_ratio,
                             seed=datasets.level_seed(load.seed, level, repeat), path=load.dataset_path)


def run_level(target, concurrency: int, requests: int, level: int | None = None, repeat: int = 0) -> RunRecords:
    """`requests` measured requests (plus the warm-up ones) at fixed `concurrency`, over as many
    client processes as the load settings say (the client must never be the limit). `level`
    picks the prompts (default: the concurrency; the sanity check uses 0), `repeat` a fresh set.
    The run ends at its deadline (`level_timeout_s`, else from its load): a server that never
    answers fails the level with what it measured, it does not hold it."""
    load = target.load
    config = LoadConfig(
        base_url=target.v1_url, model=target.model, endpoint=load.endpoint, concurrency=concurrency,
        num_requests=requests, warmup_requests=load.warmup, seed=load.seed, ignore_eos=load.ignore_eos,
        return_token_ids=load.token_ids, extra_body=dict(load.extra_body), api_key_env=target.api_key_env,
        request_timeout_s=load.request_timeout_s, ramp_up_s=load.ramp_up_s,
        deadline_s=load.level_timeout_s or None)  # None: the deadline from the level's load
    workers = resolve_workers(load.client_workers, config)
    prompts = prompts_for(load, requests + load.warmup, concurrency if level is None else level, repeat)
    return run_load_spread(config, prompts, workers)
