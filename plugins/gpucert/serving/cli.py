"""`gpucert loadgen` and `gpucert emulator`.

Connection refused (or any transport failure) is not a usage error: the run completes with
every request failed, the JSON says why in `errors`, and the exit status is 1 — a script sees
the measured failure; bad input is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

from gpucert import redaction
from gpucert.cli import CommandError
from gpucert.serving.emulator import EmulatorConfig, serve
from gpucert.serving import datasets
from gpucert.serving.loadgen import LoadConfig
from gpucert.serving.loadgen_workers import resolve_workers, run_load_spread, worker_figures
from gpucert.serving.summary import SLO_NAMES, client_check, error_breakdown, summarize
from gpucert.serving.vllm_server import first_model

EXIT_REQUESTS_FAILED = 1
# without a model's vocabulary at hand, random token ids stay inside every common one
DEFAULT_VOCAB_SIZE = 32000
# GET /v1/models is answered from vLLM's API process, not its engine: seconds even under load
MODELS_TIMEOUT_S = 30.0


def _rate(text: str) -> float:
    value = float(text)  # "inf" parses to math.inf
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0 or inf")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError("must be > 0 s")
    return value


def _workers(text: str) -> int | str:
    if text == "auto":
        return text
    return _positive_int(text)


def register(subparsers) -> None:
    load = subparsers.add_parser("loadgen", help="stream a load at an OpenAI-compatible server")
    load.add_argument("--base-url", required=True, help="the server's API root, e.g. http://127.0.0.1:8000/v1 "
                                                        "(required)")
    load.add_argument("--model", default=None,
                      help="model name sent in every request (default: the first model the server lists "
                           "at GET /v1/models)")
    load.add_argument("--endpoint", choices=("completions", "chat"), default="completions",
                      help="/v1/completions or /v1/chat/completions")
    load.add_argument("--concurrency", type=_positive_int,
                      help="fixed concurrency; with --request-rate, the cap on requests in flight "
                           "(default: no cap; --concurrency or --request-rate is required)")
    load.add_argument("--request-rate", type=_rate,
                      help="requests/s, or inf (default: none, a fixed --concurrency; --concurrency or "
                           "--request-rate is required)")
    load.add_argument("--burstiness", type=float, default=1.0,
                      help="gamma shape of inter-arrivals (1 = Poisson)")
    load.add_argument("--num-requests", type=_positive_int,
                      help="measured requests (default: none, the run ends at --duration; one of the two "
                           "is required)")
    load.add_argument("--duration", type=float,
                      help="stop sending new requests after S s (default: none, the run ends at --num-requests)")
    load.add_argument("--dataset", default="random",
                      help="random (token ids with --token-ids, else text) | synthetic | sharegpt | jsonl | "
                           "prefix (shared prefixes) | multiturn (conversations) | trace (replay a Mooncake-format "
                           "JSONL trace at its timestamps)")
    load.add_argument("--dataset-path", help="the ShareGPT JSON, JSONL or trace file (default: none; required by "
                                             "sharegpt, jsonl and trace)")
    load.add_argument("--prefix-groups", type=_positive_int, default=16, metavar="G",
                      help="prefix: groups, each sharing one prefix (default: 16)")
    load.add_argument("--prefix-len", type=_positive_int, default=1024, metavar="P",
                      help="prefix: tokens of each group's shared prefix, before --input-len of its own (default: 1024)")
    load.add_argument("--turns", type=_positive_int, default=4, metavar="T",
                      help="multiturn: turns per conversation; --concurrency conversations run at once (default: 4)")
    load.add_argument("--think-s", type=float, default=0.0, metavar="S",
                      help="multiturn: seconds between an answer and the next turn (default: 0)")
    load.add_argument("--trace-speed", type=_positive_float, default=1.0, metavar="X",
                      help="trace: replay X times as fast as recorded (default: 1)")
    load.add_argument("--trace-block-size", type=_positive_int, default=512, metavar="N",
                      help="trace: tokens per hash id (default: 512, Mooncake's)")
    load.add_argument("--range-ratio", type=float, default=0.0, metavar="R",
                      help="input/output lengths uniform in len·[1−R, 1+R] (random, synthetic)")
    load.add_argument("--input-len", type=_positive_int, default=128, help="prompt tokens per request")
    load.add_argument("--output-len", type=_positive_int, default=128, help="output tokens asked per request")
    load.add_argument("--token-ids", action="store_true",
                      help="token-id prompts, and ask the server to stream token ids")
    load.add_argument("--warmup", type=int, default=0, help="warm-up requests (not measured)")
    load.add_argument("--ramp-up", type=float, default=0.0, metavar="S",
                      help="with --concurrency: start the streams evenly over S seconds, not all at once")
    load.add_argument("--seed", type=int, default=0, help="seed of the prompts and the arrival times")
    load.add_argument("--api-key-env", metavar="VAR",
                      help="name of the environment variable with the API key (default: no key, or the "
                           "--base-url's user:password)")
    load.add_argument("--extra-body", type=json.loads, default={},
                      help="JSON object merged into every request body (default: {})")
    load.add_argument("--slo", action="append", default=[], metavar="NAME=MS",
                      help=f"goodput SLO, e.g. ttft_ms=500 (repeatable; names: {', '.join(SLO_NAMES)}): "
                           "adds goodput and SLO attainment to the output (default: no SLO)")
    load.add_argument("--timeout", type=float, default=600.0, metavar="S", help="per-request timeout in s")
    load.add_argument("--deadline", type=_positive_float, default=None, metavar="S",
                      help="end the whole run after S s: requests in flight fail, unsent ones are "
                           "recorded as not sent (default: from the load, see README)")
    load.add_argument("--workers", type=_workers, default=1, metavar="N|auto",
                      help="client processes to spread the streams over (auto: one per "
                           "1000 streams, at most cpu_count - 1)")
    load.add_argument("--json", action="store_true", help="print the result as JSON")
    load.set_defaults(run=run_loadgen)

    emu = subparsers.add_parser("emulator", help="run an OpenAI-compatible server with exact "
                                                 "token timing")
    emu.add_argument("--host", default="127.0.0.1", help="address to listen on")
    emu.add_argument("--port", type=int, default=8000, help="port to listen on")
    emu.add_argument("--ttft-ms", type=float, default=50.0, help="time to the first chunk, ms")
    emu.add_argument("--itl-ms", type=float, default=10.0, help="time between chunks, ms")
    emu.add_argument("--tokens-per-chunk", type=_positive_int, default=1, help="tokens in each streamed chunk")
    emu.add_argument("--error-rate", type=float, default=0.0,
                     help="fraction of requests answered with HTTP 500, in [0, 1]")
    emu.add_argument("--stall-after", type=int,
                     help="pause before this token index (default: no stall)")
    emu.add_argument("--stall-ms", type=float, default=0.0, help="length of that pause, ms")
    emu.add_argument("--seed", type=int, default=0, help="seed of which requests fail (--error-rate)")
    emu.add_argument("--model", default="gpucert-emulator", help="model name it serves (GET /v1/models)")
    emu.add_argument("--exit-after", type=_positive_int, default=None,
                     help="die (exit status 70) when this many more requests arrive: a crashing server "
                          "(default: never)")
    emu.add_argument("--record-timings", action="store_true",
                     help="keep each request's actual send times, served at GET /emulator/timings "
                          "(keyed by X-Request-Id)")
    emu.add_argument("--processes", type=_positive_int, default=1,
                     help="server processes sharing the port (SO_REUSEPORT), so the emulator keeps up "
                          "with thousands of zero-ITL streams")
    sched = emu.add_argument_group("scheduler", "a model of vLLM V1's scheduler, so the server's capacity is "
                                                "known exactly (gpucert/serving/emulator.py's docstring)")
    sched.add_argument("--max-running", type=_positive_int, default=None, metavar="N",
                       help="at most N requests in service, the rest queue first come first served and wait "
                            "in their TTFT, as vLLM's --max-num-seqs (default: no limit)")
    sched.add_argument("--kv-blocks", type=_positive_int, default=None, metavar="N",
                       help="a KV cache of N blocks (one kept back, as vLLM's null block) that requests fill "
                            "as they generate, preempting the latest admitted when full; published as "
                            "vllm:kv_cache_usage_perc and in vllm:cache_config_info (default: no KV cache limit)")
    sched.add_argument("--block-size", type=_positive_int, default=16, metavar="N",
                       help="tokens per KV block, with --kv-blocks")
    sched.add_argument("--max-model-len", type=_positive_int, default=None, metavar="N",
                       help="answer a request whose prompt + max_tokens exceeds N tokens with vLLM's HTTP 400 "
                            "(default: no limit; with --kv-blocks, the cache's usable tokens)")
    prof = emu.add_argument_group("profiling", "a PyTorch profiler trace of the emulated engine's steps, as vLLM "
                                                "writes one (gpucert/serving/emulator_profile.py)")
    prof.add_argument("--profiler-config", default=None, metavar="JSON",
                      help="vLLM's --profiler-config: with {\"profiler\": \"torch\", \"torch_profiler_dir\": DIR} "
                           "POST /start_profile and /stop_profile write a trace to DIR (default: no profiler)")
    prof.add_argument("--host-gap-ms", type=float, default=0.0,
                      help="per step (one every --itl-ms), how long the emulated GPU waits on the host")
    cache = emu.add_argument_group("prefix cache", "vLLM's automatic prefix caching, counted on /metrics as "
                                                    "vllm:prefix_cache_queries and _hits (emulator_prefix.py)")
    cache.add_argument("--prefix-cache", action="store_true",
                       help="cache prompts' full blocks (--block-size tokens) as vLLM does (default: off)")
    cache.add_argument("--prefill-ms-per-token", type=float, default=0.0, metavar="MS",
                       help="TTFT grows by this per prompt token the cache did not hold (default: 0)")
    cache.add_argument("--prefix-cache-blocks", type=_positive_int, default=None, metavar="N",
                       help="the cache's capacity, least recently used out first (default: unbounded)")
    emu.set_defaults(run=run_emulator)


def _slos(pairs: list[str]) -> dict[str, float]:
    slos = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        try:
            slos[name] = float(value)
        except ValueError:
            raise CommandError(f"bad --slo {pair!r}; expected NAME=MS") from None
        if not sep:
            raise CommandError(f"bad --slo {pair!r}; expected NAME=MS")
    return slos


def load_result(args) -> tuple[dict, int]:
    """Run the load the arguments describe; (JSON-ready result, number of failed requests)."""
    replay = args.dataset == "trace"
    if args.concurrency is None and args.request_rate is None and not replay:
        raise CommandError("give --concurrency N or --request-rate R")
    if replay and args.request_rate is not None:
        raise CommandError("--dataset trace sends at the trace's timestamps: no --request-rate")
    if not args.think_s >= 0:
        raise CommandError(f"--think-s must be >= 0, got {args.think_s}")
    if args.token_ids and args.endpoint == "chat":
        raise CommandError("--token-ids needs --endpoint completions")
    if not isinstance(args.extra_body, dict):
        raise CommandError("--extra-body must be a JSON object")
    # a replay without --num-requests replays the whole trace
    count = args.num_requests or (None if replay else 1000)
    try:
        slos = _slos(args.slo)
        summarize([], slos)  # validates the SLO names before any request is sent
        prompts = datasets.for_load(args.dataset, count, input_len=args.input_len, output_len=args.output_len,
                                    token_ids=args.token_ids, vocab_size=DEFAULT_VOCAB_SIZE,
                                    range_ratio=args.range_ratio, seed=args.seed, path=args.dataset_path,
                                    prefix_groups=args.prefix_groups, prefix_len=args.prefix_len,
                                    trace_speed=args.trace_speed, trace_block_size=args.trace_block_size,
                                    turns=args.turns, think_s=args.think_s)
        config = LoadConfig(
            base_url=args.base_url, model=args.model, endpoint=args.endpoint,
            concurrency=args.concurrency, request_rate=args.request_rate,
            burstiness=args.burstiness, num_requests=args.num_requests or (len(prompts) if replay else None),
            duration_s=args.duration, warmup_requests=args.warmup, seed=args.seed,
            ramp_up_s=args.ramp_up, return_token_ids=args.token_ids, extra_body=args.extra_body,
            api_key_env=args.api_key_env, request_timeout_s=args.timeout, deadline_s=args.deadline, replay=replay)
        workers = resolve_workers(args.workers, config)
        if not config.model:  # asked last: bad input fails before the server is contacted
            config = dataclasses.replace(config, model=server_model(config))
        run = run_load_spread(config, prompts, workers)
    except ValueError as err:
        raise CommandError(str(err)) from None
    measured = run.measured
    summary = summarize(measured, slos)
    result = {
        # deadline_passed: the run's deadline ended it (requests in flight failed, unsent ones counted)
        "summary": {**summary.to_dict(), "deadline_passed": run.deadline_passed},
        "client": {**client_check(run), "workers": worker_figures(run, config)},
        "errors": error_breakdown(measured),
        "config": {"base_url": redaction.display_url(args.base_url), "model": config.model,
                   "model_from_server": not args.model, "endpoint": args.endpoint,
                   "concurrency": args.concurrency,
                   # JSON has no infinity
                   "request_rate": "inf" if args.request_rate is not None and math.isinf(
                       args.request_rate) else args.request_rate,
                   "burstiness": args.burstiness, "num_requests": args.num_requests,
                   "duration_s": args.duration, "input_len": args.input_len,
                   "output_len": args.output_len, "token_ids": args.token_ids, "dataset": args.dataset,
                   "dataset_path": args.dataset_path, "range_ratio": args.range_ratio,
                   "warmup": args.warmup, "ramp_up_s": args.ramp_up, "seed": args.seed,
                   "workers": workers, "deadline_s": run.deadline_s},
    }
    return result, summary.failed


def server_model(config: LoadConfig) -> str:
    """The first model the server lists at GET <base-url>/models (vllm_server.first_model, the
    run's key or user:password sent): nothing can be measured without a model name."""
    parts = urllib.parse.urlsplit(config.base_url)
    url = redaction.without_credentials(urllib.parse.urlunsplit(
        parts._replace(path=parts.path.rstrip("/") + "/models", fragment="")))
    try:
        return first_model(url, config.headers(), MODELS_TIMEOUT_S, hint="; give --model NAME")
    except ValueError as err:
        raise ValueError(f"--model not given, and {err}") from None


def _print_text(result: dict) -> None:
    s = result["summary"]
    if result["config"].get("model_from_server"):
        print(f"model {result['config']['model']} (the server's first, from GET /v1/models)")
    print(f"completed {s['completed']}  failed {s['failed']}  duration {s['duration_s']:.2f} s")
    print(f"requests/s {s['requests_per_s']:.2f}  output tok/s {s['output_tokens_per_s']:.1f}  "
          f"total tok/s {s['total_tokens_per_s']:.1f}")
    if s["slos"]:
        # goodput counts completed requests meeting every SLO; attainment is over every measured
        # request, failed ones missing (serving/summary.py)
        limits = ", ".join(f"{name} <= {limit:g}" for name, limit in s["slos"].items())
        attained = "—" if s["slo_attainment_pct"] is None else f"{s['slo_attainment_pct']:.1f} %"
        print(f"goodput {s['goodput_requests_per_s']:.2f} requests/s  SLO attainment {attained}  "
              f"(SLO: {limits})")
    for name in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
        d = s[name]
        if d["mean"] is not None:
            print(f"{name:8s} mean {d['mean']:9.2f}  p50 {d['p50']:9.2f}  p90 {d['p90']:9.2f}  "
                  f"p99 {d['p99']:9.2f}")
    if s["token_count_mismatches"]:
        print(f"token count mismatches {s['token_count_mismatches']}: "
              + "; ".join(s["token_count_mismatch_reasons"]))
    if s["deadline_passed"]:
        print(f"the run's deadline ({result['config']['deadline_s']:g} s) ended it")
    for notice in result["client"]["notices"]:
        print(f"client may be the bottleneck: {notice}")
    for error, n in result["errors"].items():
        print(f"error x{n}: {error}")


def run_loadgen(args) -> int:
    # the key and the URL's credentials are secrets of this command: a server may echo them back
    # in an error body or a model name, and the result printed must not carry them
    scope = redaction.push_scope()
    try:
        redaction.register_url(args.base_url)
        if args.api_key_env:
            redaction.register(os.environ.get(args.api_key_env))
        result, failed = load_result(args)
        _print_result(redaction.redact_obj(result), args.json)
    finally:
        redaction.pop_scope(scope)
    return EXIT_REQUESTS_FAILED if failed else 0


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        _print_text(result)


def run_emulator(args) -> int:
    try:
        config = EmulatorConfig(ttft_ms=args.ttft_ms, itl_ms=args.itl_ms,
                                tokens_per_chunk=args.tokens_per_chunk,
                                error_rate=args.error_rate, stall_after=args.stall_after,
                                stall_ms=args.stall_ms, seed=args.seed, model=args.model,
                                exit_after=args.exit_after, record_timings=args.record_timings,
                                max_running=args.max_running, kv_blocks=args.kv_blocks,
                                block_size=args.block_size, max_model_len=args.max_model_len,
                                profiler_config=args.profiler_config, host_gap_ms=args.host_gap_ms,
                                prefix_cache=args.prefix_cache, prefill_ms_per_token=args.prefill_ms_per_token,
                                prefix_cache_blocks=args.prefix_cache_blocks)
    except ValueError as err:
        raise CommandError(str(err)) from None
    if args.record_timings and args.processes > 1:
        raise CommandError("--record-timings needs --processes 1: each process would keep its own share")
    if config.scheduled and args.processes > 1:
        raise CommandError("--max-running and --kv-blocks need --processes 1: each process would schedule "
                           "its own share, and the capacity would depend on how the kernel spread the connections")
    if config.prefix_cache and args.processes > 1:
        raise CommandError("--prefix-cache needs --processes 1: each process would cache its own share")
    if config.profiler_config and args.processes > 1:
        raise CommandError("--profiler-config needs --processes 1: one process profiles its own steps")
    print(f"gpucert emulator on http://{args.host}:{args.port}/v1 ({args.processes} process"
          f"{'es' if args.processes > 1 else ''})", file=sys.stderr, flush=True)
    serve(config, host=args.host, port=args.port, processes=args.processes)
    return 0
