"""Shared by the inference checks: one load-generator run against the session's server, built
from the load settings (kept out of conftest so the checks import it by name)."""

from __future__ import annotations

from gpucert.serving import datasets
from gpucert.serving.loadgen import LoadConfig
from gpucert.serving.loadgen_workers import resolve_workers, run_load_spread
from gpucert.serving.records import RunRecords


def prompts_for(target, count: int) -> list[datasets.Prompt]:
    load = target.load
    if load.token_ids:
        return datasets.get("random", num_prompts=count, input_len=load.input_len, output_len=load.output_len,
                            vocab_size=load.vocab_size, seed=load.seed)
    return datasets.get("synthetic", num_prompts=count, input_len=load.input_len, output_len=load.output_len,
                        seed=load.seed)


def run_level(target, concurrency: int, requests: int) -> RunRecords:
    """`requests` measured requests (plus the warm-up ones) at fixed `concurrency`, over as many
    client processes as the load settings say (the client must never be the limit)."""
    load = target.load
    config = LoadConfig(
        base_url=target.v1_url, model=target.model, endpoint=load.endpoint, concurrency=concurrency,
        num_requests=requests, warmup_requests=load.warmup, seed=load.seed, ignore_eos=load.ignore_eos,
        return_token_ids=load.token_ids, extra_body=dict(load.extra_body), api_key_env=target.api_key_env,
        request_timeout_s=load.request_timeout_s)
    workers = resolve_workers(load.client_workers, config)
    return run_load_spread(config, prompts_for(target, requests + load.warmup), workers)
