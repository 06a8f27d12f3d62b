"""The timing loops of gpucert's micro-benchmarks (a burst: time_op; seconds of back-to-back work:
time_sustained), and the lifecycle every benchmark shares.

A benchmark is a small class: its parameters, `setup()` (allocate, fill with random data),
`op()` (one iteration: the thing timed), the work formula (`flops()` and/or `bytes_moved()` per
iteration), an optional correctness `check()`. `measure()` owns the rest — warm-up, repetitions,
timing, L2 flush, time budget, status and raw samples — so no benchmark carries its own loop.

Timing: CUDA events around each iteration on a GPU (launched back to back, read after one final
synchronize, so host overhead between iterations is not counted); on the CPU, a monotonic clock
around each iteration. Statistics use pytest-benchmark's `Stats` (median, IQR, stddev, outliers)
so figures read the same as pytest-benchmark's tables; its own timer is not used because it
cannot bracket device work with CUDA events.
"""

from __future__ import annotations

import math
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from pytest_benchmark.stats import Stats

from ..phases import phase

STATUSES = ("ok", "error", "timeout", "skipped")


class BenchmarkSkipped(Exception):
    """The benchmark cannot run here (no GPU, dtype unsupported by this card or build)."""


def stats_of(samples: list[float]) -> dict[str, float]:
    """pytest-benchmark's statistics of raw samples (seconds or any unit)."""
    stats = Stats()
    for sample in samples:
        stats.update(sample)
    if not samples:
        return {}
    keys = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3", "rounds")
    return {k: float(getattr(stats, k)) if k != "rounds" else stats.rounds for k in keys}


class Benchmark:
    """Base of every micro-benchmark. Subclasses set `name`, take parameters in __init__ and
    implement setup/op and at least one of flops/bytes_moved."""

    name = "benchmark"
    flush_l2 = False  # flush the L2 cache before each timed iteration (GEMM, copies > L2)
    # sustained on a GPU: iterations replayed from a CUDA graph (time_sustained). Decided by the
    # benchmark from its size, never from a timing: a figure's method must not flip between runs
    graph_sustained = False
    # op() cycles through this many buffers (a GEMM's weight copies): a CUDA graph of sustained
    # iterations holds a whole number of cycles, so no replay starts on the buffer the last ended on
    cycle = 1

    def __init__(self, **params: Any):
        self.params = params

    def setup(self, device: str) -> None:
        """Allocate inputs on `device`; raise BenchmarkSkipped if this device cannot run it."""

    def op(self) -> None:
        raise NotImplementedError

    def flops(self) -> float | None:
        return None

    def bytes_moved(self) -> float | None:
        return None

    def check(self) -> str | None:
        """Correctness after the timed runs: None if right, else what is wrong."""
        return None

    def teardown(self) -> None:
        """Drop references so the caching allocator can reuse the memory."""
        for key in list(vars(self)):
            if key != "params":
                setattr(self, key, None)


@dataclass
class Result:
    name: str
    params: dict[str, Any]
    device: str
    status: str = "ok"
    error: str | None = None
    samples_s: list[float] = field(default_factory=list)
    warmup: int = 0
    flops: float | None = None
    bytes: float | None = None
    note: str | None = None
    method: str | None = None  # SUSTAINED or SUSTAINED_GRAPH (time_sustained); None: a burst

    @property
    def median_s(self) -> float | None:
        return stats_of(self.samples_s).get("median") if self.samples_s else None

    @property
    def tflops(self) -> float | None:
        """Rate at the median time, 1e12 FLOP/s."""
        t = self.median_s
        return self.flops / t / 1e12 if self.flops and t else None

    @property
    def gbps(self) -> float | None:
        """Bandwidth at the median time, 1e9 B/s."""
        t = self.median_s
        return self.bytes / t / 1e9 if self.bytes and t else None

    def rate_samples(self, unit: str) -> list[float]:
        """Per-iteration rates (tflops or gbps) for the metric's raw samples."""
        work, scale = (self.flops, 1e12) if unit == "tflops" else (self.bytes, 1e9)
        return [work / t / scale for t in self.samples_s if work and t > 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "params": self.params, "device": self.device, "status": self.status,
            "error": self.error, "note": self.note, "warmup": self.warmup, "samples_s": self.samples_s,
            "stats_s": stats_of(self.samples_s), "flops": self.flops, "bytes": self.bytes,
            "tflops": self.tflops, "gbps": self.gbps,
        }


def is_cuda(device: str) -> bool:
    return str(device).startswith("cuda")


def synchronize(device: str) -> None:
    if is_cuda(device):
        import torch
        torch.cuda.synchronize(device)


class L2Flusher:
    """Writes a buffer twice the size of the L2 cache so the next iteration starts cold."""

    def __init__(self, device: str):
        import torch
        props = torch.cuda.get_device_properties(device)
        size = max(int(getattr(props, "L2_cache_size", 0) or 0) * 2, 64 << 20)
        self._buffer = torch.empty(size, dtype=torch.uint8, device=device)

    def __call__(self) -> None:
        self._buffer.zero_()


SUSTAINED = "sustained"  # Result.method of a figure timed by time_sustained
# ... whose iterations were replayed from a CUDA graph: another figure than eager launches of the
# same work (the GPU's, not the host's launch rate), so never compared with a SUSTAINED baseline
SUSTAINED_GRAPH = "sustained, CUDA graph"
SUSTAIN_BLOCK_S = 0.1  # a sustained sample: ~100 ms of back-to-back iterations (the monitor's interval)
# A decode-sized GEMM's kernel takes a few µs, torch's launch of it 5-15 µs: back-to-back eager
# launches time the host's launch path (on an H100, m = 1..1024 projections moved 13-77 % between
# runs of one node, session 36). Such work (Benchmark.graph_sustained) is captured in a CUDA graph,
# as vLLM runs its decode steps, and the graph replayed.
GRAPH_REPLAY_S = 1e-3  # a replay holds about this much work, so its own launch is amortized
GRAPH_MOST = 1024  # iterations in one graph at most (its capture time and output buffers)


@dataclass
class Sustained:
    samples: list[float]  # seconds per iteration, one per block
    note: str | None
    graph_batch: int = 1  # iterations a replayed CUDA graph holds; 1: eager launches


def time_op(op: Callable[[], Any], device: str, *, warmup: int = 3, reps: int = 20,
            max_time_s: float = 30.0, flush: Callable[[], None] | None = None) -> tuple[list[float], str | None]:
    """The timing loop of a burst: (per-iteration seconds, note) of `reps` iterations after
    `warmup`, each timed on its own. Stops early, keeping what it has, once the time budget is
    spent (the note says so). Work is never timed on its first launch. Seconds of back-to-back
    work are time_sustained's (no L2 flush there: iterations run back to back, as a workload's do)."""
    if is_cuda(device):
        import torch
        # Events record on the *current* device's stream: without this guard, timing cuda:1 from a
        # process whose current device is cuda:0 brackets an idle stream and reads ~0 s.
        with torch.cuda.device(torch.device(device)):
            return _time_cuda(op, device, warmup, reps, max_time_s, flush)
    for _ in range(warmup):
        op()
    deadline = time.monotonic() + max_time_s
    samples: list[float] = []
    for i in range(reps):
        if flush is not None:
            flush()
        t0 = time.perf_counter()
        op()
        samples.append(time.perf_counter() - t0)
        if time.monotonic() > deadline and i + 1 < reps:
            return samples, _budget_note(max_time_s, i + 1, reps)
    return samples, None


def time_sustained(op: Callable[[], Any], device: str, sustain_s: float, *, warmup_s: float = 0.0,
                   block_s: float = SUSTAIN_BLOCK_S, timeline: list[float] | None = None,
                   graph: bool = False, cycle: int = 1) -> Sustained:
    """`warmup_s` seconds of back-to-back iterations first, untimed (the GPU reaches the clocks and
    power it holds under load), then back-to-back iterations for `sustain_s` seconds in blocks of
    about `block_s`: one sample per block, its mean seconds per iteration; `timeline` (when given)
    gets each block's end (time.monotonic()). A burst of a few milliseconds finishes inside the
    GPU's power-averaging window, at boost clocks; a sustained figure is what seconds of work see
    (issue 17: 829 burst against 687 sustained TFLOP/s). With `graph`, on CUDA, ~GRAPH_REPLAY_S of
    iterations (a whole number of `cycle`s) are captured in a CUDA graph that is replayed instead
    (graph_batch > 1; the note says so).

    On CUDA the host waits on the block before the one it just queued, so the GPU always has the
    next block and never idles between them (a wait on the block just queued would leave it empty
    while the host launches the next)."""
    cuda = is_cuda(device)
    if cuda:
        import torch
    # events record on the current device's stream (as in time_op's burst path)
    with torch.cuda.device(torch.device(device)) if cuda else nullcontext():
        op()  # never time a first launch
        synchronize(device)
        took, count = _calibrate(op, device, block_s)
        batch, note = 1, None
        if cuda and graph:
            op, batch, note = _graphed(op, device, took / count, cycle)
        per_block = max(1, round(block_s / max(took / count * batch, 1e-9)))  # in calls of op
        end = time.monotonic() + warmup_s
        while time.monotonic() < end:
            for _ in range(per_block):
                op()
            synchronize(device)
        samples: list[float] = []
        deadline = time.monotonic() + sustain_s
        if not cuda:
            while time.monotonic() < deadline or not samples:
                t0 = time.perf_counter()
                for _ in range(per_block):
                    op()
                samples.append((time.perf_counter() - t0) / per_block)
                if timeline is not None:
                    timeline.append(time.monotonic())
                per_block = _rescaled(per_block, samples[-1] * per_block, block_s)
            return Sustained(samples, None)
        pending = None
        while True:
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(per_block):
                op()
            stop.record()
            queued = per_block
            if pending is not None:
                took = _take_block(pending, samples, timeline, batch)
                per_block = _rescaled(per_block, took, block_s, pending[2])
            pending = (start, stop, queued)
            if time.monotonic() >= deadline:
                break
        _take_block(pending, samples, timeline, batch)
    return Sustained(samples, note, batch)


def _calibrate(op, device: str, block_s: float) -> tuple[float, int]:
    """(seconds, iterations) of a batch of eager iterations that fills a quarter block: doubled
    until it does (one iteration of a µs kernel is all launch overhead and jitter)."""
    count = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(count):
            op()
        synchronize(device)
        took = time.perf_counter() - t0
        if took >= block_s / 4 or count >= 1 << 20:
            return took, count
        count *= 2


def _graphed(op, device: str, eager_s: float, cycle: int) -> tuple[Callable[[], Any], int, str]:
    """(the replay of a CUDA graph of `batch` iterations, batch, note) — or (op, 1, why not) when
    the op cannot be captured, so the figure is still taken, from eager launches, and says so."""
    batch = min(GRAPH_MOST, max(2, math.ceil(round(GRAPH_REPLAY_S / eager_s, 6))))  # 1e-3/8e-6 is 125.00000000000001
    batch = max(cycle, batch - batch % cycle)  # whole cycles of the op's buffers
    try:
        replay = capture_graph(op, device, batch)
    except Exception as exc:  # noqa: BLE001 — whatever the capture raised, eager launches still give the figure
        return op, 1, f"eager launches of {eager_s * 1e6:.1f} µs (CUDA graph capture failed: {exc})"
    return replay, batch, (f"iterations replayed from a CUDA graph of {batch} (eager launches took "
                           f"{eager_s * 1e6:.1f} µs each: the host's, not the GPU's, time)")


def _rescaled(per_block: int, took_s: float, block_s: float, counted: int | None = None) -> int:
    """Iterations for the next block: halved or doubled while a block takes over twice or under half
    of `block_s` — a GPU that slows under minutes of load (or a CPU that is shared) still gives a
    sample every ~block_s. `counted`: the iterations `took_s` was of, when not `per_block`."""
    per_iteration = took_s / max(counted or per_block, 1)
    if per_iteration <= 0:
        return per_block
    while per_block > 1 and per_block * per_iteration > 2 * block_s:
        per_block //= 2
    while per_block * per_iteration < block_s / 2:
        per_block *= 2
    return per_block


def _take_block(block, samples: list[float], timeline: list[float] | None, batch: int = 1) -> float:
    """Wait for a queued block of `count` calls of `batch` iterations each; its mean seconds per
    iteration becomes a sample. Returns the block's seconds."""
    start, stop, count = block
    stop.synchronize()
    took = start.elapsed_time(stop) / 1e3
    samples.append(took / (count * batch))
    if timeline is not None:
        timeline.append(time.monotonic())
    return took


# A GPU busy-wait queued ahead of each block of HOLD_BLOCK iterations: the host enqueues the whole
# block while the GPU spins, so the iterations then run back to back and a short kernel is not
# timed with the host's launch gap inside its events (seen on 2x H100: µs-scale GEMMs varied
# 15-35 % between runs without it). 2 ms covers 8 launches of torch's host path many times over.
HOLD_S = 0.002
HOLD_BLOCK = 8
# Above any datacenter GPU's boost clock: `seconds × MAX_SM_CLOCK_HZ` cycles spin at least that
# long, and `cycles / MAX_SM_CLOCK_HZ` never over-states a spin.
MAX_SM_CLOCK_HZ = 3.0e9


def can_spin_gpu() -> bool:
    import torch
    return hasattr(torch.cuda, "_sleep")


def spin_gpu(cycles: int) -> None:
    """Queue a spin of `cycles` SM clock cycles on the current stream (torch.cuda._sleep)."""
    if cycles > 0 and can_spin_gpu():
        import torch
        torch.cuda._sleep(int(cycles))


def hold_gpu(seconds: float = HOLD_S) -> None:
    """Queue a spin of at least `seconds` on the current stream."""
    spin_gpu(int(seconds * MAX_SM_CLOCK_HZ))


def _time_cuda(op, device, warmup, reps, max_time_s, flush) -> tuple[list[float], str | None]:
    """CUDA events around each iteration, launched back to back behind a hold, read after one
    synchronize."""
    import torch
    for _ in range(warmup):
        op()
    synchronize(device)
    deadline = time.monotonic() + max_time_s
    note = None
    pairs = []
    for i in range(reps):
        if i % HOLD_BLOCK == 0:
            hold_gpu()
        if flush is not None:
            flush()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        op()
        end.record()
        pairs.append((start, end))
        # a budget check needs the host to wait; do it once a block, before the next hold
        if i % HOLD_BLOCK == HOLD_BLOCK - 1:
            end.synchronize()
            if time.monotonic() > deadline and i + 1 < reps:
                note = _budget_note(max_time_s, i + 1, reps)
                break
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) / 1e3 for s, e in pairs], note


def capture_graph(op: Callable[[], Any], device: str, batch: int) -> Callable[[], None]:
    """`batch` calls of `op` captured in one CUDA graph; returns its replay. For work shorter
    than its own launch (small collectives, tiny copies), timing graph replays measures the GPU
    instead of the host's launch path — divide each replay's time by `batch`. `op` must have
    run eagerly first (lazy initialization cannot be captured). Raises RuntimeError when the op
    cannot be captured."""
    import torch
    with torch.cuda.device(torch.device(device)):
        # capture on a side stream, as torch.cuda.graph requires, after one eager call there
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            op()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(batch):
                op()
        torch.cuda.synchronize()
    return graph.replay


def _budget_note(max_time_s: float, done: int, reps: int) -> str:
    return f"time budget {max_time_s:g} s reached after {done} of {reps} repetitions"


def measure(bench: Benchmark, device: str, *, warmup: int = 3, reps: int = 20, max_time_s: float = 30.0,
            sustain_s: float | None = None, warmup_s: float = 0.0, timeline: list[float] | None = None) -> Result:
    """Run one benchmark through its lifecycle. Never raises for the benchmark's own failures:
    the Result carries status and error text, so a sweep keeps everything measured so far."""
    result = Result(bench.name, dict(bench.params), str(device), warmup=warmup)
    try:
        bench.setup(device)
        result.flops, result.bytes = bench.flops(), bench.bytes_moved()
        flush = L2Flusher(device) if bench.flush_l2 and is_cuda(device) else None
        label = ",".join(f"{k}={v}" for k, v in bench.params.items())
        with phase(f"{bench.name}[{label}]"):  # named in an nsys / profiler trace of the suite
            if sustain_s is None:
                result.samples_s, result.note = time_op(bench.op, device, warmup=warmup, reps=reps,
                                                        max_time_s=max_time_s, flush=flush)
            else:
                timing = time_sustained(bench.op, device, sustain_s, warmup_s=warmup_s, timeline=timeline,
                                        graph=bench.graph_sustained, cycle=bench.cycle)
                result.samples_s, result.method = timing.samples, SUSTAINED_GRAPH if timing.graph_batch > 1 else SUSTAINED
                result.note = "; ".join(filter(None, (f"sustained: {warmup_s:g} s warm-up, then "
                                                      f"{len(result.samples_s)} blocks of back-to-back iterations "
                                                      f"over {sustain_s:g} s (median block)", timing.note)))
        wrong = bench.check()
        if wrong:
            result.status, result.error = "error", f"wrong result: {wrong}"
        elif not result.samples_s or not all(math.isfinite(s) and s > 0 for s in result.samples_s):
            result.status, result.error = "error", "no valid timing samples"
    except BenchmarkSkipped as exc:
        result.status, result.error = "skipped", str(exc)
    except Exception as exc:  # noqa: BLE001 — a benchmark failure is a result, not a crash of the sweep
        result.status = "error"
        result.error = f"{type(exc).__name__}: {exc}".strip()
        result.note = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    finally:
        try:
            bench.teardown()
        finally:
            if is_cuda(device):
                import torch
                torch.cuda.empty_cache()
    return result
