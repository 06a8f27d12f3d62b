"""Spread one load over several client processes and merge their records (issue 4, point 2).

One asyncio process tops out somewhere near 30-60k streamed tok/s (see
docs/evidence/issue-4-client/README.md; vLLM's `bench serve` shows the same ceiling), so past
that the streams go to worker processes, each running `loadgen.run_load` on its share:

- fixed concurrency: concurrency and request count split as evenly as possible (every worker
  gets >= 1 stream and >= 1 request; never more workers than either);
- request rate: each worker sends at rate/workers with seed + worker index, so the merged
  arrivals are the superposition of independent gamma processes (for Poisson, exactly a Poisson
  process of the full rate); a concurrency cap and the request count are split as above;
- warm-up requests split likewise; a duration bound passes as is.

Workers are started with the *spawn* context (no forked event loops or open connections), import,
report ready, and are released together so their shares start within a few ms of one another.
Each sends back its `RunRecords` (dataclasses: picklable) over a pipe.

`time.monotonic()` is CLOCK_MONOTONIC on Linux: one system-wide clock, so the timestamps of
records from different processes are directly comparable and the merge can take the earliest
start and compute a duration across workers.

A worker that fails (an exception, or a process that dies) has its share recorded as failed
requests carrying the error text: it is never silently missing from the counts.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
import traceback
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait as wait_connections

from gpucert.serving.datasets import Prompt
from gpucert.serving.loadgen import ERROR_TEXT_LIMIT, LoadConfig, Stop, run_deadline_s, run_load
from gpucert.serving.records import RequestRecord, RunRecords

# Streams one client process is given before `auto` adds another. The one-process reach runs
# (docs/evidence/issue-4-client) held 5,000 streams but the loop lag p99 passed 5 ms from 500
# streams on; 1,000 keeps each loop well inside the range where it measured > 40k tok/s.
STREAMS_PER_PROCESS = 1000
READY_TIMEOUT_S = 120.0  # spawn + import of one worker; generous for a loaded box
# past the run's deadline a worker has this long to send its records before it is killed (its
# share then counts as failed): pickling a large share and a loaded box
RESULT_GRACE_S = 60.0


@dataclass
class SpreadRunRecords(RunRecords):
    """A merged run; `workers` holds each worker's own figures (see `worker_figures`)."""

    workers: list[dict] = field(default_factory=list)


@dataclass
class WorkerFailure:
    """What came back from a worker that produced no records."""

    error: str


# --- splitting ---------------------------------------------------------------------------------

def even_split(total: int, parts: int) -> list[int]:
    """`total` over `parts` as evenly as possible, larger shares first: 5 over 2 → [3, 2]."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def max_workers(config: LoadConfig) -> int:
    """Never more workers than streams or requests: each share needs >= 1 of both."""
    limits = [n for n in (config.concurrency, config.num_requests) if n is not None]
    return min(limits) if limits else os.cpu_count() or 1


def expected_streams(config: LoadConfig) -> int | None:
    """Streams in flight at peak: the concurrency (or cap); for an all-at-once rate, the request
    count; for a finite rate without a cap it depends on the server, so None."""
    if config.concurrency is not None:
        return config.concurrency
    if config.request_rate is not None and math.isinf(config.request_rate):
        return config.num_requests
    return None


def resolve_workers(workers: int | str, config: LoadConfig) -> int:
    """`auto`: one process per STREAMS_PER_PROCESS streams, capped at cpu_count - 1, >= 1 (a
    finite rate without a concurrency cap has no known stream count: one process). An explicit
    count is capped so that no worker is left without a stream."""
    if workers == "auto":
        streams = expected_streams(config)
        wanted = 1 if streams is None else math.ceil(streams / STREAMS_PER_PROCESS)
        workers = max(1, min(wanted, (os.cpu_count() or 2) - 1))
    workers = int(workers)
    if workers < 1:
        raise ValueError("workers must be >= 1 or auto")
    return max(1, min(workers, max_workers(config)))


def split_config(config: LoadConfig, workers: int) -> list[LoadConfig]:
    """One LoadConfig per worker (see the module docstring for the rules)."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if workers > max_workers(config):
        raise ValueError(f"{workers} workers for {max_workers(config)} streams/requests: "
                         "every worker needs at least one")

    def parts(total):
        return [None] * workers if total is None else even_split(total, workers)

    return [replace(config, concurrency=c, num_requests=n, warmup_requests=w,
                    request_rate=None if config.request_rate is None
                    else config.request_rate / workers,
                    seed=config.seed + i)
            for i, (c, n, w) in enumerate(zip(parts(config.concurrency),
                                              parts(config.num_requests),
                                              even_split(config.warmup_requests, workers)))]


def split_prompts(prompts: list[Prompt], workers: int) -> list[list[Prompt]]:
    """Strided shares (each worker sees the whole mix of lengths); all prompts to every worker
    when there are fewer prompts than workers. A multi-turn load is split by whole conversations
    (a conversation's turns need its history, which only one worker holds)."""
    if any(p.conversation is not None for p in prompts):
        conversations = sorted({p.conversation for p in prompts})
        shares = [set(conversations[i::workers]) for i in range(workers)]
        return [[p for p in prompts if p.conversation in share] or prompts for share in shares]
    return [prompts[i::workers] or prompts for i in range(workers)]


# --- the worker process ------------------------------------------------------------------------

def _worker_main(conn, config: LoadConfig, prompts: list[Prompt], stop: Stop | None = None) -> None:
    """Runs in the spawned child: report ready, wait for go, run the share, send its records."""
    try:
        conn.send(("ready", None))
        if conn.recv() != "go":
            return
        conn.send(("ok", run_load(config, prompts, stop)))
    except BaseException as err:  # noqa: BLE001 - every failure goes back as text
        text = "".join(traceback.format_exception_only(type(err), err)).strip()
        try:
            conn.send(("error", text))
        except Exception:  # the parent is gone, or the pipe broke: nothing left to tell
            pass
    finally:
        conn.close()


def _exit_text(process) -> str:
    process.join(timeout=5)
    code = process.exitcode
    if code is None:
        return "worker process did not exit"
    if code < 0:
        return f"worker process killed by signal {-code}"
    return f"worker process exited with status {code} without a result"


def run_load_spread(config: LoadConfig, prompts: list[Prompt], workers: int, stop: Stop | None = None) -> RunRecords:
    """Run `config` over `workers` spawned processes and merge their records. One worker runs in
    this process (plain `run_load`). `stop` (see LoadGenerator) reaches every worker: with more
    than one, a multiprocessing Event of the spawn context (spawn_event())."""
    if not prompts:
        raise ValueError("no prompts")
    if workers == 1:
        return run_load(config, prompts, stop)
    # one deadline for every share (each worker's own default would be of its smaller share)
    deadline_s = run_deadline_s(config, prompts)
    configs = [replace(cfg, deadline_s=deadline_s) for cfg in split_config(config, workers)]
    shares = split_prompts(prompts, workers)
    config.headers()  # a missing key variable is a usage error here, not N failed workers
    ctx = multiprocessing.get_context("spawn")
    processes, conns = [], []
    for cfg, share in zip(configs, shares):
        parent_end, child_end = ctx.Pipe()
        process = ctx.Process(target=_worker_main, args=(child_end, cfg, share, stop), daemon=True)
        process.start()
        child_end.close()
        processes.append(process)
        conns.append(parent_end)
    results: list[RunRecords | WorkerFailure | None] = [None] * workers
    fallback_start = time.monotonic(), time.time()
    try:
        # 1. wait for every worker to be imported and ready, then release them together
        deadline = time.monotonic() + READY_TIMEOUT_S
        for i, conn in enumerate(conns):
            try:
                if not conn.poll(max(0.0, deadline - time.monotonic())):
                    results[i] = WorkerFailure("worker not ready after "
                                               f"{READY_TIMEOUT_S:g} s")
                    processes[i].kill()
                    continue
                kind, payload = conn.recv()
                if kind != "ready":
                    results[i] = WorkerFailure(payload)
            except (EOFError, OSError):
                results[i] = WorkerFailure(_exit_text(processes[i]))
        fallback_start = time.monotonic(), time.time()
        for i, conn in enumerate(conns):
            if results[i] is None:
                try:
                    conn.send("go")
                except OSError:
                    results[i] = WorkerFailure(_exit_text(processes[i]))
        # 2. collect as they finish (read before join: a large pickle fills the pipe); a worker
        # whose loop hangs past the deadline cannot hold the run: it is killed, its share failed
        pending = {conn: i for i, conn in enumerate(conns) if results[i] is None}
        give_up = time.monotonic() + deadline_s + RESULT_GRACE_S
        while pending:
            ready = wait_connections(list(pending), timeout=max(0.0, give_up - time.monotonic()))
            if not ready:
                for i in pending.values():
                    processes[i].kill()
                    results[i] = WorkerFailure(f"no result {deadline_s + RESULT_GRACE_S:g} s after the start "
                                               f"(the run's {deadline_s:g} s deadline + {RESULT_GRACE_S:g} s)")
                break
            for conn in ready:
                i = pending.pop(conn)
                try:
                    kind, payload = conn.recv()
                    results[i] = payload if kind == "ok" else WorkerFailure(payload)
                except (EOFError, OSError):
                    results[i] = WorkerFailure(_exit_text(processes[i]))
    finally:
        for conn in conns:
            conn.close()
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
    return merge_runs(results, configs, *fallback_start)


def spawn_event():
    """An Event the spawned client workers share with this process: a load's `stop`."""
    return multiprocessing.get_context("spawn").Event()


# --- merging -----------------------------------------------------------------------------------

def failed_share(config: LoadConfig, error: str, at: float) -> list[RequestRecord]:
    """A failed worker's share as failed records: its warm-up and its requests (a duration-only
    share has no count: one record stands for it)."""
    text = f"client worker failed: {error}"[:ERROR_TEXT_LIMIT]
    warmups = [RequestRecord(request_id=0, scheduled_at=at, error=text, warmup=True)
               for _ in range(config.warmup_requests)]
    measured = [RequestRecord(request_id=0, scheduled_at=at, error=text)
                for _ in range(config.num_requests or 1)]
    return warmups + measured


def _figures(index: int, run: RunRecords | None, records: list[RequestRecord],
             config: LoadConfig, error: str | None) -> dict:
    lag = sorted(run.loop_lag_s) if run else []
    measured = [r for r in records if not r.warmup]
    return {
        "worker": index,
        "concurrency": config.concurrency,
        "request_rate": "inf" if config.request_rate is not None and math.isinf(
            config.request_rate) else config.request_rate,  # JSON has no infinity
        "seed": config.seed,
        "requests": len(measured),
        "failed": sum(not r.ok for r in measured),
        "output_tokens": sum(r.output_tokens or 0 for r in measured if r.ok),
        "cpu_fraction": run.cpu_fraction if run else None,
        "loop_lag_p99_ms": lag[min(len(lag) - 1, int(0.99 * len(lag)))] * 1e3 if lag else None,
        "loop_lag_max_ms": lag[-1] * 1e3 if lag else None,
        "error": error,
    }


def merge_runs(results: list[RunRecords | WorkerFailure], configs: list[LoadConfig],
               fallback_monotonic: float, fallback_wall: float) -> SpreadRunRecords:
    """Concatenate the workers' records (ids offset per worker so they stay unique), take the
    earliest start (and its wall time), pool the loop-lag samples, and report the busiest
    worker's CPU fraction. A failure becomes its share's worth of failed records."""
    records: list[RequestRecord] = []
    lag: list[float] = []
    figures: list[dict] = []
    starts: list[tuple[float, float]] = []
    cpus: list[float] = []
    for index, (result, config) in enumerate(zip(results, configs)):
        offset = len(records)
        if isinstance(result, RunRecords):
            share = [replace(r, request_id=r.request_id + offset) for r in result.records]
            starts.append((result.started_monotonic, result.started_wall))
            lag += result.loop_lag_s
            if result.cpu_fraction is not None:
                cpus.append(result.cpu_fraction)
            error, run = None, result
        else:
            error = result.error if isinstance(result, WorkerFailure) else "no result"
            share = failed_share(config, error, fallback_monotonic)
            for k, r in enumerate(share):
                r.request_id = offset + k
            run = None
        records += share
        figures.append(_figures(index, run, share, config, error))
    started_monotonic, started_wall = min(starts) if starts else (fallback_monotonic,
                                                                  fallback_wall)
    runs = [result for result in results if isinstance(result, RunRecords)]
    return SpreadRunRecords(records=records, started_monotonic=started_monotonic,
                            started_wall=started_wall, loop_lag_s=lag,
                            cpu_fraction=max(cpus) if cpus else None, workers=figures,
                            deadline_s=configs[0].deadline_s if configs else None,
                            deadline_passed=any(run.deadline_passed for run in runs))


def worker_figures(run: RunRecords, config: LoadConfig) -> list[dict]:
    """Per-worker figures of any run (a one-process run is worker 0)."""
    if isinstance(run, SpreadRunRecords):
        return run.workers
    return [_figures(0, run, run.records, config, None)]
