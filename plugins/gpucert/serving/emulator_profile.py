"""The emulator's /start_profile and /stop_profile, answered as vLLM answers them with
`--profiler-config '{"profiler": "torch", "torch_profiler_dir": DIR}'`: between the two calls a
real PyTorch profiler (CPU activity) records the emulated engine's steps, and /stop_profile
returns once DIR holds the trace, `rank0.<ms>.pt.trace.json.gz`, as vLLM's worker writes it.

The steps: every `itl_ms` while requests are in service, one step annotated as vLLM's worker
annotates it (`execute_context_0(0)_generation_N(N)`, N the requests in service), with a real
torch op inside. `host_gap_ms` after the step starts the host "launches" the step's GPU work,
which runs until the next step starts. A CPU has no GPU, so that work and its launch are written
into the trace after the profiler stops — kernel and cudaLaunchKernel events in Kineto's format,
placed on the recorded annotations' own timestamps — the one emulated part (CUDA cannot exist
here). Each step's GPU therefore waits exactly `host_gap_ms` on the host, however late a busy box
wakes the step loop (that moves only the steps' cadence): the truth the forensics self-tests check
the analysis against. As vLLM's, the recording starts the config's `delay_iterations` steps after
/start_profile, and a window closed before then leaves no trace.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

STEP_NAME = "execute_context_0(0)_generation_{n}({n})"
LAUNCH_US = 5.0  # how long the emulated cudaLaunchKernel takes on the host
EMULATED_KERNEL = "emulated_decode_step_kernel"


def profiler_kind(profiler_config: str | None) -> str | None:
    """"torch", "cuda" (vLLM's: cudaProfilerStart/Stop for nsys to capture; the emulator has no
    CUDA to mark, it answers the routes and records nothing) or None."""
    return json.loads(profiler_config).get("profiler") if profiler_config else None


def profiler_delay(profiler_config: str | None) -> int:
    """vLLM's `delay_iterations`: engine steps after /start_profile before the profiler records."""
    return int(json.loads(profiler_config).get("delay_iterations") or 0) if profiler_config else 0


def profiler_dir(profiler_config: str | None) -> Path | None:
    """The trace folder of a vLLM profiler config (JSON), None when it does not ask for the torch
    profiler (vLLM then has no /start_profile route)."""
    if not profiler_config:
        return None
    config = json.loads(profiler_config)
    if config.get("profiler") != "torch" or not config.get("torch_profiler_dir"):
        return None
    return Path(config["torch_profiler_dir"])


class StepProfiler:
    """One profile window at a time; `running()` says how many requests are in service now.
    As vLLM's profiler wrapper: recording starts after `delay_steps` steps (steps run only while
    requests are in service), and a window closed before then writes no trace."""

    def __init__(self, trace_dir: Path, step_s: float, host_gap_s: float, running: Callable[[], int],
                 delay_steps: int = 0):
        import torch  # noqa: F401  (now, not inside /start_profile: the import blocks the server a second)

        self.trace_dir, self.step_s, self.host_gap_s, self.running = trace_dir, step_s, host_gap_s, running
        self.delay_steps = delay_steps
        self._profiler = None
        self._task: asyncio.Task | None = None

    @property
    def active(self) -> bool:
        return self._task is not None

    def start(self) -> None:
        if self.active:  # vLLM ignores a second start
            return
        if not self.delay_steps:
            self._record()  # before /start_profile answers, as vLLM's (a profiler's first start takes seconds)
        self._task = asyncio.get_running_loop().create_task(self._steps())

    def _record(self) -> None:
        import torch

        self._profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        self._profiler.start()

    async def _steps(self) -> None:
        import torch

        work = torch.ones(32, 32)
        next_step = time.monotonic()
        delayed = self.delay_steps
        while True:
            started = time.monotonic()
            running = self.running()
            if running and delayed:
                delayed -= 1  # a step before the recording starts: not in the trace
                if not delayed:
                    self._record()
            elif running:
                with torch.profiler.record_function(STEP_NAME.format(n=running)):
                    started = time.monotonic()  # the range's own start (its trace timestamp), not the wake-up
                    torch.mm(work, work)  # one real op in the range: a cpu_op event, as vLLM's steps have
            # every step_s; after a late wake-up, no burst of catch-up steps shorter than the host's
            # gap (each step keeps its GPU work, so each GPU wait stays exactly host_gap_s)
            next_step = max(next_step + self.step_s, started + self.host_gap_s + 0.001)
            await asyncio.sleep(max(0.0, next_step - time.monotonic()))

    async def stop(self) -> Path | None:
        if not self.active:
            return None
        task, self._task = self._task, None
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        profiler, self._profiler = self._profiler, None
        if profiler is None:
            return None  # closed within the delay: vLLM's profiler never started, no trace
        profiler.stop()
        with tempfile.TemporaryDirectory() as tmp:
            raw = Path(tmp) / "trace.json"
            profiler.export_chrome_trace(str(raw))
            trace = json.loads(raw.read_text())
        trace["traceEvents"] += emulated_gpu_events(trace["traceEvents"], self.host_gap_s * 1e6)
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        path = self.trace_dir / f"rank0.{time.time_ns() // 1_000_000}.pt.trace.json.gz"
        part = path.with_name(path.name + ".part")
        with gzip.open(part, "wt") as out:
            json.dump(trace, out)
        os.replace(part, path)  # whole or absent: a reader never sees half a trace
        return path


def emulated_gpu_events(events: list[dict], host_gap_us: float) -> list[dict]:
    """Each recorded step's GPU work: launched `host_gap_us` after the step's range starts (the
    launch call its last LAUNCH_US), running until the next step's range starts (the last step:
    as long as the one before it). Kineto's shapes: device 0, stream 7, correlation ids tying
    kernel and launch."""
    steps = sorted((e for e in events if e.get("cat") == "user_annotation"
                    and str(e.get("name", "")).startswith("execute_context_")), key=lambda e: e["ts"])
    if not steps:
        return []
    pid, tid = steps[0]["pid"], steps[0]["tid"]
    out = []
    for i, step in enumerate(steps):
        launched = step["ts"] + host_gap_us
        if i + 1 < len(steps):
            end = steps[i + 1]["ts"]
        else:
            end = launched + (steps[i]["ts"] - steps[i - 1]["ts"] - host_gap_us if i else host_gap_us)
        if end <= launched:
            continue  # the next step came before this one's launch: no GPU work to show
        correlation = 900_000 + i
        out.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": pid, "tid": tid,
                    "ts": launched - LAUNCH_US, "dur": LAUNCH_US, "args": {"correlation": correlation}})
        out.append({"ph": "X", "cat": "kernel", "name": EMULATED_KERNEL, "pid": 0, "tid": 7, "ts": launched,
                    "dur": end - launched, "args": {"device": 0, "stream": 7, "correlation": correlation}})
    return out
