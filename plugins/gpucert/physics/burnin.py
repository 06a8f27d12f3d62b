"""Burn-in: minutes of sustained work on every GPU at once — the load a handover needs to show a
cooling, power-delivery or clock fault that a burst of seconds on a cool GPU never meets (DCGM's
diagnostic level 3 runs its targeted stress and power plugins for this).

Per GPU, one fresh process each (all GPUs under load together, as a node serves), three phases
over the duration (PHASE_SHARES):
- `gemm`: a square GEMM at the served model's dtype, back to back;
- `hbm`: device-to-device copies far larger than L2 (HBM streaming);
- `together`: both at once on two CUDA streams, and with two or more GPUs an all-reduce on a
  third (NCCL; gloo on the CPU), its iteration count agreed by all ranks before the phase.
Before the phases, the same GEMM and copy as a burst (core.time_op's default: 10 iterations
after 3), the figure the certification's checks report: the sustained figures are given as a
fraction of it and of the datasheet. Every phase is timed by core.time_sustained:
samples of ~100 ms blocks of back-to-back iterations, each with its time, so the card can draw
TFLOP/s and GB/s over the minutes beside the monitor's clocks, power and temperature.

A rank that fails or dies is reported with what it measured; the others complete (their
all-reduce then ends with an error of its own, which is reported, not raised)."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpucert import process_group

from . import core
from .gemm import Gemm
from .memory import MemoryCopy

PHASE_SHARES = {"gemm": 0.3, "hbm": 0.2, "together": 0.5}
WARMUP_SHARE = 0.1  # of each phase, untimed, before its samples (clocks and power settle)
DEFAULTS_GPU = {"dtype": "bf16", "gemm_size": 8192, "copy_bytes": 2 << 30, "allreduce_bytes": 256 << 20}
DEFAULTS_CPU = {"dtype": "fp32", "gemm_size": 256, "copy_bytes": 16 << 20, "allreduce_bytes": 1 << 20}
START_GRACE_S = 120.0  # a rank's interpreter, torch and CUDA context start, beyond the phases


@dataclass
class BurninConfig:
    devices: list[str]  # "cuda:0", … or "cpu" (the self-tests: one process per entry)
    duration_s: float
    dtype: str
    gemm_size: int
    copy_bytes: int
    allreduce_bytes: int
    backend: str = "nccl"  # gloo on the CPU
    workdir: str = ""
    # a test hook, for the self-tests' planted faults: {"rank": R, "slow_factor": F} runs each GEMM
    # of rank R F times (a GPU F× slower: busy all along, so a CPU shared with other work slows
    # every rank alike); {"rank": R, "exit_after_s": S} kills it mid-run
    fault: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_devices(cls, devices: list[str], duration_s: float, workdir: str | Path, **overrides) -> BurninConfig:
        defaults = DEFAULTS_CPU if devices and devices[0] == "cpu" else DEFAULTS_GPU
        settings = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
        backend = "gloo" if devices and devices[0] == "cpu" else "nccl"
        return cls(devices=list(devices), duration_s=float(duration_s), workdir=str(workdir), backend=backend,
                   **settings)

    @staticmethod
    def fault_from_env() -> dict[str, Any]:
        """The self-tests' planted fault (GPUCERT_BURNIN_FAULT, JSON), e.g. a rank that runs slow."""
        text = os.environ.get("GPUCERT_BURNIN_FAULT")
        return json.loads(text) if text else {}

    def phase_seconds(self) -> dict[str, float]:
        return {name: self.duration_s * share for name, share in PHASE_SHARES.items()}


# ---- one rank (runs in burnin_worker's process) -----------------------------------------------

class _Together(core.Benchmark):
    """GEMM and copy queued on two streams each iteration: their work overlaps on the GPU."""

    name = "burnin_together"

    def __init__(self, gemm: Gemm, copy: MemoryCopy):
        super().__init__(dtype=gemm.params["dtype"], size=gemm.params["m"], copy_bytes=copy.size)
        self.gemm, self.copy = gemm, copy

    def setup(self, device: str) -> None:
        self.gemm.setup(device)
        self.copy.setup(device)
        self.device = device
        if core.is_cuda(device):
            import torch
            self.streams = (torch.cuda.Stream(device), torch.cuda.Stream(device))

    def op(self) -> None:
        if not core.is_cuda(self.device):
            self.gemm.op()
            self.copy.op()
        else:
            import torch
            current = torch.cuda.current_stream()
            for stream, work in zip(self.streams, (self.gemm.op, self.copy.op)):
                stream.wait_stream(current)
                with torch.cuda.stream(stream):
                    work()
                current.wait_stream(stream)

    def flops(self) -> float:
        return self.gemm.flops()

    def bytes_moved(self) -> float:
        return self.copy.bytes_moved()

    def teardown(self) -> None:
        self.gemm.teardown()
        self.copy.teardown()


class _SlowGemm(Gemm):
    """The planted slow GPU: the same GEMM `factor` times, counted once (test hook only). Not
    a sleep: a sleeping rank leaves the CPU to the others, and on a shared box a 10 ms sleep
    read only −43 % against the pair's median, short of the −50 % that fails."""

    def __init__(self, *args, factor: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.factor = factor

    def op(self) -> None:
        for _ in range(self.factor):
            super().op()


def _series(result: core.Result, times: list[float], metric: str) -> dict:
    rates = result.rate_samples(metric)
    return {"status": result.status, "error": result.error, "note": result.note, "t": times[:len(rates)],
            metric: rates, "median": statistics.median(rates) if rates else None}


class _AllReduceLoop(threading.Thread):
    """`count` all-reduces of one buffer on their own stream (NCCL) or thread (gloo), timed as a
    whole: the collective load of the together phase. An error ends it and is kept."""

    def __init__(self, dist, buffer, count: int, device: str):
        super().__init__(name="burnin-allreduce", daemon=True)
        self.dist, self.buffer, self.count, self.device = dist, buffer, count, device
        self.seconds: float | None = None
        self.error: str | None = None

    def run(self) -> None:
        try:
            import torch
            stream = torch.cuda.Stream(self.device) if core.is_cuda(self.device) else None
            started = time.perf_counter()
            with torch.cuda.stream(stream) if stream is not None else _null():
                for _ in range(self.count):
                    self.dist.all_reduce(self.buffer)
            core.synchronize(self.device)
            self.seconds = time.perf_counter() - started
        except Exception as exc:  # noqa: BLE001 — a failed collective is a result of the burn-in
            self.error = f"{type(exc).__name__}: {exc}"


def _null():
    from contextlib import nullcontext
    return nullcontext()


def join_timeout_s(config: BurninConfig) -> float:
    """How long a rank waits for the others at the together phase's rendezvous: the ranks get there
    within seconds of each other (same phases, started together); a rank that died never comes."""
    return max(30.0, 0.2 * config.duration_s)


def run_rank(config: BurninConfig, rank: int, join=None, save=None) -> dict:
    """The phases on this rank's device. `join()` (two or more ranks) joins the process group and
    returns torch.distributed; it is called only before the together phase, so a peer that died
    early costs this rank its all-reduce, not its own phases. `save(out)` after each phase: a rank
    killed later keeps what it measured before (`complete` says whether it got to the end)."""
    save = save or (lambda _: None)
    device = config.devices[rank]
    slow_factor = int(config.fault.get("slow_factor", 1)) if config.fault.get("rank") == rank else 1
    phases = config.phase_seconds()
    out: dict[str, Any] = {"rank": rank, "device": device, "phases": {}, "burst": {}, "complete": False}

    def gemm():
        if slow_factor > 1:
            return _SlowGemm(config.dtype, config.gemm_size, config.gemm_size, config.gemm_size, factor=slow_factor)
        return Gemm(config.dtype, config.gemm_size, config.gemm_size, config.gemm_size)

    def copy():
        return MemoryCopy("device_copy", config.copy_bytes)

    burst_gemm = core.measure(gemm(), device, warmup=3, reps=10)
    burst_copy = core.measure(copy(), device, warmup=3, reps=10)
    out["burst"] = {"gemm_tflops": burst_gemm.tflops, "hbm_gbps": burst_copy.gbps,
                    "errors": [r.error for r in (burst_gemm, burst_copy) if r.error]}
    save(out)
    for name, bench, metric in (("gemm", gemm(), "tflops"), ("hbm", copy(), "gbps")):
        times: list[float] = []
        result = core.measure(bench, device, sustain_s=phases[name] * (1 - WARMUP_SHARE),
                              warmup_s=phases[name] * WARMUP_SHARE, timeline=times)
        out["phases"][name] = _series(result, times, metric)
        save(out)
    loop, calibration_error, dist = None, None, None
    if join is not None:
        try:
            dist = join()
            loop = _start_allreduce(config, device, dist, phases["together"])
        except Exception as exc:  # noqa: BLE001 — a peer gone before the phase: GEMM and copy still run
            calibration_error = f"{type(exc).__name__}: {exc}"
    times = []
    result = core.measure(_Together(gemm(), copy()), device,
                          sustain_s=phases["together"] * (1 - WARMUP_SHARE),
                          warmup_s=phases["together"] * WARMUP_SHARE, timeline=times)
    together = _series(result, times, "tflops")
    together["gbps"] = result.rate_samples("gbps")
    together["median_gbps"] = statistics.median(together["gbps"]) if together["gbps"] else None
    if loop is not None:
        # calibrated to last the phase; under the GEMM's and the copy's load it may take longer
        loop.join(timeout=phases["together"] * 2 + 10)
        together["allreduce"] = _allreduce_figures(config, loop, dist)
    elif calibration_error:
        together["allreduce"] = {"error": f"the all-reduce did not start: {calibration_error}"}
    out["phases"]["together"] = together
    out["complete"] = True
    save(out)
    return out


def _start_allreduce(config: BurninConfig, device: str, dist, seconds: float) -> _AllReduceLoop:
    """Every rank must issue the same collectives: the count comes from a short calibration,
    the slowest rank's estimate agreed by all (a MAX all-reduce)."""
    import torch
    count_elems = max(1, config.allreduce_bytes // 4)
    buffer = torch.ones(count_elems, dtype=torch.float32, device=device)
    for _ in range(2):
        dist.all_reduce(buffer)
    core.synchronize(device)
    started = time.perf_counter()
    for _ in range(3):
        dist.all_reduce(buffer)
    core.synchronize(device)
    estimate = torch.tensor([(time.perf_counter() - started) / 3], dtype=torch.float64, device=device)
    dist.all_reduce(estimate, op=dist.ReduceOp.MAX)
    count = max(1, int(seconds / max(float(estimate.item()), 1e-6)))
    loop = _AllReduceLoop(dist, buffer, count, device)
    loop.start()
    return loop


def _allreduce_figures(config: BurninConfig, loop: _AllReduceLoop, dist) -> dict:
    """nccl-tests' bus bandwidth of the loop as a whole: 2 (n − 1) / n × bytes / time."""
    n = len(config.devices)
    figures = {"count": loop.count, "seconds": loop.seconds, "error": loop.error}
    if loop.error is None and loop.is_alive():
        figures["error"] = "the all-reduce loop did not finish in time"
    if loop.seconds:
        nbytes = max(1, config.allreduce_bytes // 4) * 4
        figures["busbw_gbps"] = 2 * (n - 1) / n * nbytes * loop.count / loop.seconds / 1e9
    return figures


# ---- the launcher ----------------------------------------------------------------------------

@dataclass
class BurninResult:
    config: BurninConfig
    ranks: dict[int, dict] = field(default_factory=dict)  # rank → run_rank's output
    failures: dict[int, str] = field(default_factory=dict)  # rank → why it has no (full) result
    started_monotonic: float = 0.0
    ended_monotonic: float = 0.0

    def to_dict(self) -> dict:
        return {"config": asdict(self.config), "ranks": self.ranks, "failures": self.failures,
                "window_monotonic": [self.started_monotonic, self.ended_monotonic]}


def run(config: BurninConfig) -> BurninResult:
    """One fresh interpreter per device, started together, each writing its result to
    rank<R>.json in the workdir; a rank past the phases plus START_GRACE_S is killed."""
    from .nccl.sweep import rank_environment

    workdir = Path(config.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "burnin-config.json"
    config_file.write_text(json.dumps(asdict(config)))
    env, _ = rank_environment(dict(os.environ))
    env.update(WORLD_SIZE=str(len(config.devices)), LOCAL_WORLD_SIZE=str(len(config.devices)))
    result = BurninResult(config, started_monotonic=time.monotonic())
    procs = []
    for rank in range(len(config.devices)):
        (workdir / f"rank{rank}.json").unlink(missing_ok=True)
        with (workdir / f"rank{rank}.log").open("wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "gpucert.physics.burnin_worker", str(config_file),
                                           str(rank)], env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)},
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    deadline = time.monotonic() + config.duration_s * 1.5 + START_GRACE_S
    try:
        for rank, proc in enumerate(procs):
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process_group.kill_group(proc)
                result.failures[rank] = f"rank {rank} still running {deadline - result.started_monotonic:.0f} s after " \
                                        f"the start: killed"
    except BaseException:
        for proc in procs:  # Ctrl-C: no rank left holding a GPU
            process_group.kill_group(proc)
        raise
    result.ended_monotonic = time.monotonic()
    for rank, proc in enumerate(procs):
        path = workdir / f"rank{rank}.json"
        if path.is_file():
            result.ranks[rank] = json.loads(path.read_text())
        if proc.returncode != 0 and rank not in result.failures:
            tail = (workdir / f"rank{rank}.log").read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
            result.failures[rank] = f"rank {rank} exited with status {proc.returncode}: {tail[0][-300:]}"
    return result


# ---- what the check judges ---------------------------------------------------------------------

def sustained(rank: dict) -> dict[str, float | None]:
    """The rank's sustained figures (median block of each phase) and their fraction of its burst."""
    phases, burst = rank.get("phases", {}), rank.get("burst", {})
    figures = {"sustained_tflops": (phases.get("gemm") or {}).get("median"),
               "sustained_gbps": (phases.get("hbm") or {}).get("median"),
               "together_tflops": (phases.get("together") or {}).get("median"),
               "together_gbps": (phases.get("together") or {}).get("median_gbps"),
               "burst_tflops": burst.get("gemm_tflops"), "burst_gbps": burst.get("hbm_gbps")}
    for name, part, whole in (("tflops_of_burst_pct", "sustained_tflops", "burst_tflops"),
                              ("gbps_of_burst_pct", "sustained_gbps", "burst_gbps")):
        figures[name] = figures[part] / figures[whole] * 100 if figures[part] and figures[whole] else None
    # GEMM and copy share one GPU in the together phase, so neither alone can be held to the
    # datasheet; the share of its own alone figure each keeps, summed, can: ~100 % when the GPU
    # time-slices them, more where they overlap, less when the node cannot feed both at full power
    alone = [(figures["together_tflops"], figures["sustained_tflops"]),
             (figures["together_gbps"], figures["sustained_gbps"])]
    figures["together_work_pct"] = (sum(part / whole for part, whole in alone) * 100
                                    if all(part and whole for part, whole in alone) else None)
    return figures


def outliers(values: dict[int, float | None]) -> dict[int, float]:
    """Each GPU's distance from the median of all (percent; negative: slower). With one GPU
    there is nothing to compare: empty."""
    known = {rank: v for rank, v in values.items() if v}
    if len(known) < 2:
        return {}
    median = statistics.median(known.values())
    return {rank: (v - median) / median * 100 for rank, v in known.items()}
