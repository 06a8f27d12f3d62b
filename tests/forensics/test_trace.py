"""A trace window under gpucert's own load, read for the user: per capture of forensics.yaml (an
engine configuration, e.g. CUDA graphs on and enforce_eager) and load level, the level measured
without the profiler, then again with profile windows in its steady state (their median judged:
one window is one moment of the level); the trace's GPU busy
share, idle gaps by cause and decode steps (gpucert.forensics.analyze), the worst steps matched
with the requests that felt them and the monitor's samples; the host-bound share of decode time
and the step time judged against their baselines (docs/METRICS.md, Forensics)."""

from __future__ import annotations

import concurrent.futures
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from gpucert.forensics import capture as cap
from gpucert.forensics import level
from gpucert.forensics.analyze import analyze
from gpucert.forensics.read import load_trace
from gpucert.forensics.timeline import TraceError
from gpucert.forensics.window import window_view
from gpucert.serving.loadgen_workers import spawn_event
from gpucert.serving.offline import run_offline
from gpucert.serving.summary import summarize

from ..inference.engine_setup import engine_config, load_from_options, no_local_engine, pool_target
from ..inference.load import prompts_for, run_level

pytestmark = pytest.mark.forensics

# a profile window's usual time beyond its own length: /start_profile (a profiler's first start
# takes seconds), /stop_profile (the workers write their traces: 6 s on an H100 at 256 streams) and
# the trace read. The load's prompts are sized for it; its duration is bounded by the worst, the
# start's and the stop's own timeouts (the load stops as soon as the windows are taken)
WINDOW_USUAL_S = 10.0


def _engine_settings(plan, point, trace_dir, kind) -> dict:
    """The capture's engine settings over the configured engine (engine_config's study settings)."""
    trace_dir.mkdir(parents=True, exist_ok=True)  # nsys writes its report there, it makes no folder
    launcher = ()
    if kind == "nsys":
        launcher = cap.nsys_launcher(shutil.which("nsys"), trace_dir / "engine")
    return {**plan.engine, **point.engine,
            "profiler_config": cap.profiler_config(kind, trace_dir, plan.delay_iterations, plan.max_iterations),
            "launcher": list(launcher)}


def _warmup_s(planned_s: float, streaming_after_s: float | None) -> float:
    """The plan's warm-up, or longer where the level streams later: as long after the start as
    the unprofiled level's first measured token came (its client start, warm-up requests and first
    prefill), plus half the plan's warm-up — so the load streams when the window opens (eager at
    256 on an H100 streamed nothing in the 5 s the plan gave it)."""
    if streaming_after_s is None:
        return planned_s
    return max(planned_s, streaming_after_s + planned_s / 2)


def _profiled_prompts(rate: float | None, concurrency: int, seconds: float) -> int:
    """Prompts enough that none repeats (a repeat would hit the prefix cache) while the load runs
    at 1.5× the unprofiled rate for `seconds`, and at least two waves: the load cycles them if it
    runs longer."""
    return max(2 * concurrency, math.ceil((rate or 0) * seconds * 1.5))


def _span(run) -> tuple[float, float] | None:
    """A run's measured stretch on the monotonic clock: its start to its last request's end."""
    ends = [r.ended_at for r in run.measured if r.ended_at is not None]
    return (run.started_monotonic, max(ends)) if ends else None


def _level_batch(columns, concurrency: int) -> tuple[float, str]:
    """The batch a window must show to be the level's steady state: the most requests the engine
    ran during the unprofiled level (vLLM's running gauge in the monitor's samples `columns`), else
    the level's concurrency (no engine gauge)."""
    peak = level.running_peak(columns)
    if peak:
        return float(peak), "the most requests the engine ran in the unprofiled level"
    return float(concurrency), "the level's concurrency"


def _window_batch(reads) -> tuple[float | None, int]:
    """The median decode batch (generation requests a step) of the first rank's trace, and its
    decode steps: every rank runs the same steps."""
    decode = ((reads[0][2].get("steps") or {}).get("decode") or {}) if reads else {}
    return (decode.get("batch") or {}).get("p50"), decode.get("count", 0)


def _short_of(batch: float, steps: int, plan, level_batch: tuple[float, str]) -> str:
    """How a window fell short of the level's batch, in words (the notice and the failure say it)."""
    return (f"{steps} decode steps ran a median batch of {batch:g} requests, under {plan.min_batch_pct:g} % of "
            f"{level_batch[0]:g} ({level_batch[1]})")


def _windows_wanted(plan, kind: str) -> int:
    """Steady windows a served capture judges: the plan's; one under nsys (its report comes when
    the engine exits)."""
    return 1 if kind == "nsys" else plan.windows


def _take_windows(gpucert, plan, target, kind, trace_dir, loading, level_batch, floor):
    """Profile windows until plan.windows of them show the level's batch (plan.min_batch_pct of
    it), at most plan.attempts in all: a window that opens as a wave of requests ends holds only
    its stragglers — on an H100 at 256 streams one caught 100 steps of 2 requests while 256 were
    open at the client, the engine done with their tokens and the API server still streaming them.
    Each window that missed is said in a notice. Returns every window opened and the reads of
    those judged: the steady ones, or, where too few were, every window read (what was measured is
    kept; the check then fails). nsys takes one window (its report comes when the engine exits)."""
    wanted = _windows_wanted(plan, kind)
    opened, steady, read = [], [], []
    for attempt in range(1, plan.attempts + 1):
        if loading.done():
            loading.result()  # its error, if it failed
            pytest.fail(f"the load ended before profile window {attempt} could open", pytrace=False)
        window = cap.profile_window(target.server.base_url, kind, trace_dir, plan.window_s)
        opened.append(window)
        if kind == "nsys":
            return opened, [(window, [])]
        if not window.missing:
            reads = [_read_trace(path, plan) for path in window.traces]
            read.append((window, reads))
            batch, steps = _window_batch(reads)
            if batch is None or batch >= floor:
                steady.append((window, reads))
                if len(steady) == wanted:
                    return opened, steady
                continue
        more = len(steady) + plan.attempts - attempt >= wanted  # the attempts left can make up the windows
        then = "; another window taken" if more else ""
        if window.missing:
            gpucert.finding("capture", notice=(
                f"profile window {attempt} left no trace ({window.missing}): vLLM's profiler records only once "
                f"{plan.delay_iterations} engine steps have run after /start_profile (profiler.delay_iterations), and "
                f"fewer ran in its {window.seconds:.1f} s (on an H100 a window fell wholly in the GPU's idle time between "
                f"two waves of requests){then}"))
        else:
            gpucert.finding("capture", notice=(
                f"profile window {attempt} missed the level's steady state: its "
                f"{_short_of(batch, steps, plan, level_batch)}{then} ({Path(window.traces[0]).name} kept)"))
        if not more:
            break
    return opened, read


def test_trace_served(gpucert, plan, forensics_engines, capture, concurrency, request, gpucert_report_dir,
                      gpucert_monitor):
    point = plan.capture(capture)
    kind = cap.resolve_kind(plan.profiler)
    trace_dir = gpucert_report_dir / "forensics" / "traces" / point.id
    load = load_from_options(request.config)
    if load.dataset in ("trace", "multiturn"):
        pytest.fail(f"a served capture runs a fixed concurrency of single requests, kept on until its window is "
                    f"taken; the load's dataset {load.dataset!r} sets its own times or turns: give another dataset "
                    "(--load-opt dataset=random)", pytrace=False)
    target = pool_target(request.config, forensics_engines, _engine_settings(plan, point, trace_dir, kind), load,
                         point.id)
    gpucert.finding("capture", capture=point.id, profiler=kind, level=f"concurrency {concurrency}",
                    **{k: str(v) for k, v in point.engine.items()})

    # 1. the level without the profiler: what every finding is put beside
    called = time.monotonic()
    plain = run_level(target, concurrency, load.requests_at(concurrency), repeat=0)
    firsts = [r.token_times[0] for r in plain.measured if r.token_times]
    plain_summary = summarize(plain.measured, load.slo)
    itl = plain_summary.itl_ms.get("p50")
    gpucert.record("unprofiled_output_tok_s", plain_summary.output_tokens_per_s, unit="tok/s", direction="higher",
                   note="the level without the profiler, just before the window")
    if itl is not None:
        gpucert.record("unprofiled_step_ms_p50", itl, unit="ms", direction="lower",
                       note="ITL p50 without the profiler, at the client: the engine's step where the API server keeps "
                            "up, longer where it delivers tokens in bunches (unprofiled_engine_itl_ms is the engine's own)")
    span = _span(plain)
    samples = gpucert_monitor.columns(*span) if gpucert_monitor and span else None
    level_batch = _level_batch(samples, concurrency)
    floor = plan.min_batch_pct / 100 * level_batch[0]
    _record_between_steps(gpucert, samples, floor)
    engine_itl = _record_engine_itl(gpucert, samples, floor)

    # 2. the same level again, kept on (duration-bound, stopped once the windows are taken) until
    # plan.windows profile windows in its steady state show the level's batch
    warmup_s = _warmup_s(plan.warmup_s, min(firsts) - called if firsts else None)
    bound_s = warmup_s + plan.attempts * (plan.window_s + cap.START_TIMEOUT_S + cap.STOP_TIMEOUT_S)
    usual_s = warmup_s + plan.attempts * (plan.window_s + WINDOW_USUAL_S)
    prompts = prompts_for(load, _profiled_prompts(plain_summary.requests_per_s, concurrency, usual_s) + load.warmup,
                          concurrency, repeat=1)
    stop = spawn_event()
    failure = None
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        loading = pool.submit(run_level, target, concurrency, None, prompts=prompts, duration_s=bound_s, stop=stop)
        try:
            _sleep_unless_done(loading, warmup_s)
            opened, judged = _take_windows(gpucert, plan, target, kind, trace_dir, loading, level_batch, floor)
        except cap.CaptureError as exc:
            failure = f"capture: {exc}"
        finally:
            stop.set()
        profiled = loading.result()
    records = plain.measured + profiled.measured
    gpucert.record("failed_requests", sum(not r.ok for r in records), unit="requests", direction="lower",
                   note="; ".join(sorted({r.error for r in records if r.error}))[:500] or None)
    if failure:
        pytest.fail(failure, pytrace=False)
    if not judged:
        pytest.fail(f"none of {len(opened)} profile window(s) left a trace: fewer than the profiler's "
                    f"{plan.delay_iterations} delay steps ran in each (profiler.delay_iterations, served.window_s)",
                    pytrace=False)
    if opened[-1].stopped_mono > max(((r.ended_at or 0) for r in profiled.measured), default=0):
        gpucert.finding("capture", notice="the load ended before the last window closed: the trace's tail is idle")
    _record_profiled_rate(gpucert, profiled, judged)

    # 3. the traces, read
    if kind == "nsys":
        forensics_engines.release()  # nsys writes its report when the engine exits
        report = cap.nsys_report(trace_dir / "engine")
        window = judged[0][0]
        window.traces = [cap.nsys_export(shutil.which("nsys"), report)]
        judged = [(window, [_read_trace(path, plan) for path in window.traces])]
    _record_traces(gpucert, plan, [reads for _, reads in judged], itl, run=profiled, monitor=gpucert_monitor,
                   engine_itl_ms=engine_itl)
    _record_step_cost(gpucert, [reads for _, reads in judged], engine_itl, floor)
    batches = [(b, n) for b, n in (_window_batch(reads) for _, reads in judged) if b is not None]
    _record_windows(gpucert, "window_batch_pct", [b / level_batch[0] * 100 for b, _ in batches],
                    what="decode batches", unit="%", direction="higher",
                    note=f"the judged windows' median decode batch against {level_batch[0]:g}, {level_batch[1]}; "
                         f"{len(judged)} window(s) judged of {len(opened)} opened, at most {plan.attempts}")
    # too few windows in the steady state (a short one, or none left by the attempts): a partial
    # measurement, never a pass nor a baseline
    wanted = _windows_wanted(plan, kind)
    steady = sum(b >= floor for b, _ in batches)
    if steady < wanted:
        short = [(b, n) for b, n in batches if b < floor]
        last = f": the last short one's {_short_of(*short[-1], plan, level_batch)}" if short else ""
        pytest.fail(f"{steady} of {len(opened)} profile window(s) caught the level's steady state, {wanted} wanted"
                    f"{last}; the notices name each window that missed", pytrace=False)


def test_trace_offline(gpucert, plan, forensics_engines, capture, prompts, request, gpucert_report_dir):
    """LLM.generate of `prompts` prompts: once plain (its throughput), once with the profiler
    started before and stopped after (the profiler schedule keeps a few dozen of its steps): the
    offline engine's steps, to set beside the served ones at the same level. Always the PyTorch
    profiler (the worker is a process of gpucert's own, not a server nsys could be put around)."""
    point = plan.capture(capture)
    trace_dir = gpucert_report_dir / "forensics" / "traces" / f"{point.id}-offline"
    engine = engine_config(request.config, _engine_settings(plan, point, trace_dir, "torch"))
    missing = no_local_engine(engine)
    if missing:
        pytest.skip(missing)
    forensics_engines.release()  # the offline engine needs the GPUs the served one holds
    load = load_from_options(request.config)
    gpucert.finding("capture", capture=point.id, profiler="torch", level=f"{prompts} prompts offline",
                    **{k: str(v) for k, v in point.engine.items()})
    before = cap.trace_files(trace_dir)
    result = run_offline(engine, [prompts], lambda n, level, repeat=0: prompts_for(load, n, level, repeat),
                         gpucert_report_dir / "forensics" / f"offline-{point.id}-{prompts}",
                         ignore_eos=load.ignore_eos, repeats=1, profile_levels=(prompts,))
    rates = result.rates(prompts)
    if rates:
        gpucert.record("unprofiled_output_tok_s", rates[0], unit="tok/s", direction="higher",
                       note=f"LLM.generate of {prompts} prompts without the profiler, just before")
    profiled = result.profiled.get(prompts)
    if profiled is None:
        pytest.fail(f"the profiled run did not finish: {result.error or 'not reported'}; log: {result.log_path}",
                    pytrace=False)
    rate = profiled["output_tokens"] / profiled["elapsed_s"] if profiled["elapsed_s"] > 0 else None
    gpucert.record("profiled_output_tok_s", rate, unit="tok/s", direction="higher",
                   note="the whole profiled LLM.generate (the profiler records only its schedule's steps)")
    if rate and rates:
        gpucert.record("profiler_overhead_pct", (1 - rate / rates[0]) * 100, unit="%", direction="lower",
                       note="throughput lost over the profiled generate: 1 − profiled ÷ plain")
    try:
        traces = cap.wait_for_traces(trace_dir, before, timeout_s=60.0)
    except cap.CaptureError as exc:
        pytest.fail(f"capture: {exc}", pytrace=False)
    _record_traces(gpucert, plan, [[_read_trace(path, plan) for path in traces]], None)


def _read_trace(path, plan) -> tuple:
    """(path, timeline, analysis) of one worker's trace; a trace that cannot be read fails the check."""
    try:
        timeline = load_trace(path)
    except TraceError as exc:
        pytest.fail(f"trace {path}: {exc}", pytrace=False)
    return path, timeline, analyze(timeline, gap_us=plan.gap_us)


def _record_traces(gpucert, plan, windows: list[list[tuple]], unprofiled_step_ms, run=None, monitor=None,
                   engine_itl_ms=None) -> None:
    """The judged windows' traces recorded, each worker's (with several ranks, parameter `rank`):
    every figure the windows' median, each window's value a sample; the window whose decode step
    is that median is the one drawn in full, its worst steps matched with the load's requests and
    the monitor where there was a served load."""
    shown = _median_window(windows)
    for rank in range(len(windows[0])):
        params = {"rank": rank} if len(windows[0]) > 1 else None
        _record_analysis(gpucert, [reads[rank][2] for reads in windows], params, unprofiled_step_ms, engine_itl_ms)
    for number, reads in enumerate(windows, 1):
        for rank, (path, timeline, result) in enumerate(reads):
            drawn = number - 1 == shown
            if drawn and run is not None:
                _match_worst(gpucert, result, run, monitor)
            gpucert.finding("trace", path=str(path), rank=rank, window_number=number, windows=len(windows),
                            analysis=_compact(result),
                            window=window_view(timeline, result, gap_us=plan.gap_us) if drawn else None)
    if not any(m.metric == "decode_step_ms_p50" for m in gpucert.metrics):
        pytest.fail("no decode steps in the trace: vLLM's execute_context_… step annotations are missing (a profiler "
                    "window that closed before any step, or an engine without them)", pytrace=False)


def _decode(result: dict) -> dict:
    return (result.get("steps") or {}).get("decode") or {}


def _median_window(windows: list[list[tuple]]) -> int:
    """The window whose first rank's decode step p50 is the windows' median (the lower of the two
    middle ones where their number is even); the first where no window has decode steps."""
    steps = [(_decode(reads[0][2]).get("step_ms") or {}).get("p50") if reads else None for reads in windows]
    ranked = sorted((v, i) for i, v in enumerate(steps) if v is not None)
    return ranked[(len(ranked) - 1) // 2][1] if ranked else 0


def _per_window(values: list[float]) -> list[float] | None:
    """A figure's samples: one per window, where there are several."""
    return values if len(values) > 1 else None


def _record_windows(gpucert, metric: str, values: list, *, what: str, **kwargs) -> None:
    """One figure over the windows that gave it: their median, each window's value a sample."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return
    note = kwargs.pop("note", None)
    if len(values) > 1:
        note = "; ".join(n for n in (f"median of {len(values)} profile windows' {what}", note) if n)
    gpucert.record(metric, float(np.median(values)), samples=_per_window(values), stat="median", note=note, **kwargs)


def _sleep_unless_done(future, seconds: float) -> None:
    try:
        future.result(timeout=seconds)
    except concurrent.futures.TimeoutError:
        pass


def _profiled_span(window, reads, run) -> tuple[float, float]:
    """Where the profiler recorded, on the load generator's clock: the first rank's trace, first op
    to last (its Unix time → the run's monotonic clock) — vLLM's profiler starts its delay steps
    after /start_profile and stops itself after max_iterations, so the window's own ends hold
    unprofiled time; the window where the trace has no wall time (nsys, read later)."""
    trace = (reads[0][2].get("trace") or {}) if reads else {}
    start, span_ms = trace.get("wall_start_unix_s"), trace.get("span_ms")
    if start is None or not span_ms:
        return window.started_mono, window.stopped_mono
    start -= run.started_wall - run.started_monotonic
    return start, start + span_ms / 1e3


def _record_profiled_rate(gpucert, run, judged) -> None:
    """Each judged window's streamed tok/s while the profiler recorded (`_profiled_span`): the
    windows' median, each window a sample. Not set against a stretch before the window: the
    profiler records only once steps run, so its span never holds the idle time between waves of
    requests that any stretch before it may (on an H200 that comparison read the profiler's cost
    as −15 to −24 %); the profiler's cost is read from the step (`_record_step_cost`)."""
    inside, seconds = [], []
    for window, reads in judged:
        t0, t1 = _profiled_span(window, reads, run)
        seconds.append(t1 - t0)
        inside.append(cap.output_tok_s(run.measured, t0, t1))
    _record_windows(gpucert, "profiled_output_tok_s", inside, what="rates", unit="tok/s", direction="higher",
                    note="streamed while the profiler recorded: " + ", ".join(f"{s:.2f}" for s in seconds)
                         + " s (the trace's first op to its last)")


def _record_engine_itl(gpucert, samples, floor: float) -> float | None:
    """vLLM's own inter-token latency over the unprofiled level at the window's batch floor
    (forensics.level.engine_itl): the decode step the engine ran without the profiler, stamped
    by the engine core — what the profiled step is set beside. None where the server publishes
    no such histogram: the judged metric is then recorded as skipped with the reason, so the card
    shows it was not measured (and it never becomes a baseline)."""
    figures = level.engine_itl(samples, floor)
    if figures is None:
        gpucert.record("unprofiled_engine_itl_ms", None, unit="ms", direction="lower", status="skipped", error=(
            "not measured: no vllm:inter_token_latency_seconds tokens on the engine's /metrics over the unprofiled "
            f"level at {floor:g} requests or more (a server that does not publish it, or no monitor)"))
        return None
    gpucert.record("unprofiled_engine_itl_ms", figures["itl_ms_mean"], unit="ms", direction="lower", stat="mean",
                   note=f"vLLM's inter-token latency (engine core timestamps) over the unprofiled level at "
                        f"{floor:g} requests or more: Δsum ÷ Δcount of vllm:inter_token_latency_seconds, "
                        f"{figures['tokens']:,} tokens — the engine's step, however the API server delivered")
    return figures["itl_ms_mean"]


def _record_step_cost(gpucert, windows: list[list[tuple]], engine_itl_ms: float | None, floor: float) -> None:
    """The profiler's cost where it acts, on the step: each judged window's mean decode step (first
    rank) against the engine's own mean inter-token latency without the profiler at the same batch
    floor — (profiled ÷ unprofiled − 1) × 100; the windows' median, each window a sample."""
    if not engine_itl_ms:
        return
    means = [(_decode(reads[0][2]).get("step_ms") or {}).get("mean") if reads else None for reads in windows]
    _record_windows(gpucert, "profiler_step_cost_pct",
                    [None if m is None else (m / engine_itl_ms - 1) * 100 for m in means], what="costs",
                    unit="%", direction="lower",
                    note=f"how much longer a decode step ran under the profiler: the window's mean decode step "
                         f"({', '.join('-' if m is None else f'{m:.2f}' for m in means)} ms) against vLLM's own "
                         f"{engine_itl_ms:.2f} ms between tokens without it, at {floor:g} requests or more")


def _record_between_steps(gpucert, samples, floor: float) -> None:
    """What the monitor saw of the unprofiled level between the engine's steps (forensics.level):
    the GPU's idle share and the engine's share under the window's batch floor, and the finding."""
    figures = level.idle_between_steps(samples, floor)
    if not figures:
        return
    if figures["gpu_idle_pct"] is not None:
        gpucert.record("unprofiled_gpu_idle_pct", figures["gpu_idle_pct"], unit="%", direction="lower",
                       note=f"monitor samples of the unprofiled level with no kernel on any GPU; "
                            f"{figures['idle_runs']} idle runs, median {figures['idle_run_s_p50'] or 0:.2f} s")
    if figures["below_floor_pct"] is not None:
        gpucert.record("unprofiled_below_batch_pct", figures["below_floor_pct"], unit="%", direction="lower",
                       note=f"monitor samples of the unprofiled level with vLLM running under {floor:g} requests "
                            "(the window's batch floor)")
    text = level.sentence(figures)
    if text:
        gpucert.finding("capture", notice=text)


def _record_analysis(gpucert, results: list[dict], params, unprofiled_step_ms, engine_itl_ms=None) -> None:
    """One worker's figures over the judged windows' analyses (`results`, one per window)."""
    for device in results[0]["devices"]:
        where = {**(params or {}), "gpu": device} if len(results[0]["devices"]) > 1 else params
        each = [r["devices"].get(device) for r in results]
        spans = ", ".join(f"{d['span_ms']:.0f}" for d in each if d)
        idle = ", ".join(f"{d['idle_gaps']['total_ms']:.1f}" for d in each if d)
        _record_windows(gpucert, "gpu_busy_pct", [d and d["busy_pct"] for d in each], what="busy shares", unit="%",
                        direction="higher", params=where, note=f"GPU {device} busy over the trace's {spans} ms")
        _record_windows(gpucert, "idle_gaps", [d and d["idle_gaps"]["count"] for d in each], what="gap counts",
                        unit="gaps", direction="lower", params=where,
                        note=f"idle ≥ {results[0]['gap_us']:g} µs, {idle} ms in all")
    decode = [_decode(r) for r in results]
    decode = [d for d in decode if (d.get("step_ms") or {}).get("p50")]
    if not decode:
        return
    unprofiled = [f"the engine's mean step {engine_itl_ms:.2f} ms (vLLM's inter-token latency)" if engine_itl_ms else "",
                  f"{unprofiled_step_ms:.2f} ms between tokens at the client (p50)" if unprofiled_step_ms else ""]
    beside = "; without the profiler " + ", ".join(u for u in unprofiled if u) if any(unprofiled) else ""
    _record_windows(gpucert, "decode_steps", [d.get("count", 0) for d in decode], what="step counts", unit="steps",
                    direction="higher", params=params)
    _record_windows(gpucert, "decode_step_ms_p50", [d["step_ms"]["p50"] for d in decode], what="p50 steps",
                    unit="ms", direction="lower", params=params,
                    note=f"decode step wall time in the trace (profiled){beside}")
    _record_windows(gpucert, "decode_step_ms_p99", [d["step_ms"]["p99"] for d in decode], what="p99 steps",
                    unit="ms", direction="lower", params=params)
    _record_windows(gpucert, "host_bound_pct", [d["host_wait_pct"] for d in decode], what="shares", unit="%",
                    direction="lower", params=params,
                    note="share of decode step time the GPU sat idle with nothing queued (the host was late)")


def _match_worst(gpucert, result: dict, run, monitor) -> None:
    """The worst decode steps on the load generator's and the monitor's clock: who was waiting,
    what the GPUs showed then."""
    offset = run.started_wall - run.started_monotonic  # wall = monotonic + offset (one host)
    for step in (result.get("steps") or {}).get("worst", []):
        if step.get("wall_start_unix_s") is None:
            continue
        t0 = step["wall_start_unix_s"] - offset
        t1 = t0 + step["step_ms"] / 1e3
        row = {"step": step["index"], "label": step.get("label"), "step_ms": round(step["step_ms"], 3),
               "gpu_ms": round(step["gpu_ms"], 3), "host_wait_ms": round(step["host_wait_ms"], 3),
               **cap.requests_during(run.measured, t0, t1)}
        figures = monitor.figures(t0 - 0.1, t1 + 0.1) if monitor else None
        for index, gpu in ((figures or {}).get("gpus") or {}).items():
            row[f"gpu{index}_util_pct"] = gpu.get("util_gpu_mean_pct")
            row[f"gpu{index}_sm_clock_mhz"] = gpu.get("sm_clock_min_mhz")
        gpucert.finding("worst_step", **row)


def _compact(result: dict) -> dict:
    """What the card draws: the summaries, not every gap."""
    return {"trace": result["trace"], "gap_us": result["gap_us"], "devices": result["devices"],
            "steps": {k: v for k, v in (result.get("steps") or {}).items()}, "findings": result.get("findings", [])}
