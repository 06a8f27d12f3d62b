"""Capture: a profiler trace window while gpucert's own load drives the engine.

vLLM (≥ 0.10) profiles on request: started with `--profiler-config` it answers POST
/start_profile and /stop_profile, and each worker writes its trace when the window closes — the
PyTorch profiler's `<rank>.<ms>.pt.trace.json.gz` in `torch_profiler_dir` (the machines gpucert is
lent have no Nsight Systems), or, with `{"profiler": "cuda"}` under `nsys profile
--capture-range=cudaProfilerApi`, an Nsight Systems report. The profiler's schedule keeps the
window short (`delay_iterations` steps skipped after the start, at most `max_iterations` kept).

The profiler is not free (an H200 at concurrency 256 fell from 25.7k to 10.9k output tok/s under
a 3 s torch window), so the window's own throughput is measured beside the same run's just before
it, and every finding is put next to the level measured without a profiler.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from gpucert.serving.records import RequestRecord

PROFILER_KINDS = ("torch", "nsys")
TRACE_GLOB = "*.pt.trace.json*"
FRONTEND_MARK = ".async_llm"  # the API server's own (CPU) trace beside the workers'
# the longest /start_profile (a profiler's first start) and /stop_profile (the workers write their
# traces) may take before the window fails
START_TIMEOUT_S, STOP_TIMEOUT_S = 120.0, 300.0
# how long after /stop_profile returned a window's traces may take to appear: vLLM answers once
# its workers wrote them (an H100's 1.4 MB trace: there when the answer came), so this is only
# slack for a slow disk; a window that recorded nothing costs this long
TRACE_WAIT_S = 10.0


class CaptureError(RuntimeError):
    """The window could not be taken: why, in one line (the check fails with it)."""


class NoTrace(CaptureError):
    """The window closed and no worker wrote a trace."""


def resolve_kind(kind: str) -> str:
    """`auto`: nsys where it is on PATH, else the PyTorch profiler."""
    if kind == "auto":
        return "nsys" if shutil.which("nsys") else "torch"
    if kind not in PROFILER_KINDS:
        raise ValueError(f"profiler kind {kind!r} not one of auto, {', '.join(PROFILER_KINDS)}")
    return kind


def profiler_config(kind: str, trace_dir: Path, delay_iterations: int, max_iterations: int) -> str:
    """vLLM's --profiler-config for a window: the torch profiler writes to `trace_dir` (no Python
    stacks, gzip, the front end left out: its trace does not count iterations and would record
    the whole range); "cuda" only marks the range for nsys."""
    config: dict = {"profiler": "torch" if kind == "torch" else "cuda",
                    "delay_iterations": delay_iterations, "max_iterations": max_iterations}
    if kind == "torch":
        config.update(torch_profiler_dir=str(Path(trace_dir).resolve()), torch_profiler_with_stack=False,
                      torch_profiler_use_gzip=True, ignore_frontend=True)
    return json.dumps(config, sort_keys=True)


def nsys_launcher(nsys: str, output_base: Path) -> tuple[str, ...]:
    """`nsys profile` around the engine: CUDA and NVTX only (no CPU sampling: its own overhead),
    kernels inside CUDA graphs one by one (as the PyTorch profiler shows them), collection only
    between cudaProfilerStart and Stop — vLLM's "cuda" profiler calls them on /start_profile and
    /stop_profile — and the report written when the engine exits."""
    return (nsys, "profile", "--trace=cuda,nvtx", "--sample=none", "--cpuctxsw=none",
            "--cuda-graph-trace=node", "--capture-range=cudaProfilerApi", "--capture-range-end=stop",
            "--force-overwrite=true", "--output", str(output_base))


def nsys_export(nsys: str, report: Path, timeout_s: float = 600.0) -> Path:
    """`nsys export --type sqlite`: the form read_nsys reads (the documented schema)."""
    out = report.with_suffix(".sqlite")
    try:
        done = subprocess.run([nsys, "export", "--type", "sqlite", "--force-overwrite", "true", "--output", str(out),
                               str(report)], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CaptureError(f"nsys export of {report} failed: {exc}") from None
    if done.returncode != 0 or not out.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise CaptureError(f"nsys export of {report} failed (exit {done.returncode}): {tail[0]}")
    return out


@dataclass
class Window:
    """One profile window: when it opened and closed (both clocks: the load generator's records
    are on time.monotonic(), the trace on Unix time) and the trace files it left."""

    kind: str
    started_mono: float
    stopped_mono: float
    started_wall: float
    stopped_wall: float
    traces: list[Path] = field(default_factory=list)
    requested_mono: float | None = None  # when /start_profile was sent (its answer can take seconds)
    closed_mono: float | None = None  # when /stop_profile returned: the workers had written their traces
    missing: str | None = None  # why a torch window has no trace (NoTrace's words)

    @property
    def seconds(self) -> float:
        return self.stopped_mono - self.started_mono


def _post(url: str, headers: dict[str, str], timeout_s: float) -> None:
    request = urllib.request.Request(url, data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        hint = " (the engine was started without --profiler-config)" if exc.code == 404 else ""
        raise CaptureError(f"POST {url}: HTTP {exc.code}{hint}") from None
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise CaptureError(f"POST {url}: {getattr(exc, 'reason', exc)}") from None


def trace_files(trace_dir: Path) -> set[Path]:
    """The workers' finished traces in `trace_dir` (not the front end's, not a file being written)."""
    if not trace_dir.is_dir():
        return set()
    return {p for p in trace_dir.glob(TRACE_GLOB) if FRONTEND_MARK not in p.name
            and not p.name.endswith((".part", ".tmp"))}


def wait_for_traces(trace_dir: Path, before: set[Path], timeout_s: float, poll_s: float = 0.5) -> list[Path]:
    """The traces that appeared since `before`, once their sizes hold still between two looks
    (a worker may still be writing when /stop_profile returns on another rank)."""
    deadline = time.monotonic() + timeout_s
    sizes: dict[Path, int] = {}
    while True:
        new = sorted(trace_files(trace_dir) - before)
        now = {p: p.stat().st_size for p in new if p.exists()}
        if new and now == sizes:
            return new
        if time.monotonic() > deadline:
            if new:
                return new
            raise NoTrace(f"no trace appeared in {trace_dir} within {timeout_s:g} s of /stop_profile")
        sizes = now
        time.sleep(poll_s)


def profile_window(base_url: str, kind: str, trace_dir: Path, window_s: float, headers: dict[str, str] | None = None,
                   stop_timeout_s: float = STOP_TIMEOUT_S, trace_wait_s: float = TRACE_WAIT_S) -> Window:
    """POST /start_profile, `window_s` later /stop_profile (which returns once the workers have
    written their traces: seconds for a large window), then the new torch traces — none, and the
    window says why in `missing`: vLLM's profiler records nothing until its delay steps have run,
    and a window in which the engine ran fewer writes no trace (on an H100 one 3 s window fell
    wholly in the GPU's idle time between two waves of requests). For nsys the report comes when
    the engine exits (`nsys_report`)."""
    headers = dict(headers or {})
    before = trace_files(trace_dir)
    # the window opens when /start_profile returns: the workers' profilers are running then (the
    # first start of a profiler takes seconds, which are not the window's)
    requested_mono = time.monotonic()
    _post(f"{base_url}/start_profile", headers, START_TIMEOUT_S)
    started_mono, started_wall = time.monotonic(), time.time()
    time.sleep(max(0.0, window_s - (time.monotonic() - started_mono)))
    stopped_mono, stopped_wall = time.monotonic(), time.time()
    _post(f"{base_url}/stop_profile", headers, stop_timeout_s)
    window = Window(kind, started_mono, stopped_mono, started_wall, stopped_wall, requested_mono=requested_mono,
                    closed_mono=time.monotonic())
    if kind == "torch":
        try:
            window.traces = wait_for_traces(trace_dir, before, timeout_s=trace_wait_s)
        except NoTrace as exc:
            window.missing = str(exc)
    return window


def nsys_report(output_base: Path, timeout_s: float = 120.0) -> Path:
    """The .nsys-rep the engine's nsys wrote on exit."""
    report = output_base.with_name(output_base.name + ".nsys-rep")
    deadline = time.monotonic() + timeout_s
    while not report.is_file():
        if time.monotonic() > deadline:
            raise CaptureError(f"nsys wrote no report {report} within {timeout_s:g} s of the engine's exit")
        time.sleep(0.5)
    return report


# ---- the load around the window ------------------------------------------------------------

def output_tok_s(records: list[RequestRecord], t0: float, t1: float) -> float | None:
    """Streamed output tokens per second between t0 and t1 (monotonic), every request's tokens
    that arrived then: what the node delivered over that stretch, whatever started when."""
    if t1 <= t0:
        return None
    count = sum(1 for r in records for t in r.token_times if t0 <= t <= t1)
    return count / (t1 - t0)


def requests_during(records: list[RequestRecord], t0: float, t1: float, limit: int = 5) -> dict:
    """Who felt a stretch [t0, t1]: requests in flight, and those whose stream went quiet across
    all of it (one token before t0, the next after t1) — with their X-Request-Ids, the names
    vLLM's own logs give them (cmpl-<id>-0)."""
    in_flight = [r for r in records if r.sent_at is not None and r.sent_at <= t1 and (r.ended_at or t1) >= t0]
    stalled = []
    for r in in_flight:
        before = [t for t in r.token_times if t < t0]
        after = [t for t in r.token_times if t > t1]
        if before and after and not any(t0 <= t <= t1 for t in r.token_times):
            stalled.append(r)
    return {"in_flight": len(in_flight), "stalled": len(stalled),
            "stalled_ids": [r.x_request_id for r in stalled[:limit] if r.x_request_id],
            "in_flight_ids": [r.x_request_id for r in in_flight[:limit] if r.x_request_id]}
