"""The sampler: its own process (never the load generator's event loop), a tick every `interval_s`
on absolute deadlines (tick i at start + i × interval, so a late tick does not shift the next),
each tick's `t` and `scheduled` on time.monotonic() — the clock the load generator stamps its
requests with (CLOCK_MONOTONIC is one clock for every process of the host; each process's
monotonic→wall offset is recorded too, so runs on different hosts can be aligned).

`Monitor` is the parent's handle: start, attach a vLLM /metrics URL, flush, read a window, stop.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pickle
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import store
from . import summary as summary_engine
from .sources import HostSource, NvmlSource, VllmMetricsSource

MIN_INTERVAL_S = 0.020
# the counter reads' share of one core: a node whose counters cost more (many GPUs, a slow driver)
# has them read less often — measured on each read, so the cadence follows the node. Half of the
# sampler's 2 % target: the ticks' gauges and vLLM's /metrics need the rest (2× H100: ~3.6 s)
COUNTER_CPU_BUDGET = 0.005


@dataclass
class MonitorConfig:
    out_path: str
    interval_s: float = 0.100
    nvml_module: str = "pynvml"
    vllm_metrics_url: str | None = None
    flush_every: int = 50  # ticks per chunk on disk (5 s at 100 ms)
    # cumulative counters and rates (energy, PCIe/NVLink bytes, ECC, host CPU) are read at most this
    # often, and less often where reading them costs more than COUNTER_CPU_BUDGET of a core: their
    # differences lose nothing, and on H100 they are most of NVML's cost (METRICS.md, monitor)
    counter_interval_s: float = 1.0
    # NVML's XID and ECC events, on a thread of the sampler blocked in NVML's wait (off: their
    # figures are None — to compare the sampler's lateness with and without the listener)
    nvml_events: bool = True

    def __post_init__(self):
        if not self.interval_s >= MIN_INTERVAL_S:
            raise ValueError(f"monitor interval must be >= {MIN_INTERVAL_S * 1e3:g} ms, got {self.interval_s * 1e3:g} ms")
        if not self.counter_interval_s >= self.interval_s:
            raise ValueError(f"counter interval must be >= the sampling interval ({self.interval_s * 1e3:g} ms), "
                             f"got {self.counter_interval_s * 1e3:g} ms")


def clock_offset() -> dict[str, float]:
    """This process's monotonic and wall clocks read together."""
    mono, wall = time.monotonic(), time.time()
    return {"pid": os.getpid(), "monotonic": mono, "wall": wall, "wall_minus_monotonic": wall - mono}


class _Sampler:
    """The sampler process's state and loop (spawned; `conn` carries commands — stop among them —
    and acknowledgements; waiting on it between ticks, a command wakes the sampler at once)."""

    def __init__(self, config: MonitorConfig, conn):
        self.config, self.conn = config, conn
        self.vllm_filtered: bool | None = None  # whether vLLM's /metrics sent our families only
        self.nvml = NvmlSource(config.nvml_module, events=config.nvml_events)
        self.sources: list = [HostSource(), self.nvml]
        self.opened = [source for source in self.sources if source.open()]
        if config.vllm_metrics_url:
            self._attach(config.vllm_metrics_url)
        self.meta = {"interval_s": config.interval_s, "counter_interval_s": config.counter_interval_s,
                     "counter_cpu_budget": COUNTER_CPU_BUDGET, "clock": clock_offset(), "gpus": self.nvml.gpus,
                     "sources": [source.name for source in self.opened],
                     "notes": [source.note for source in self.sources if source.note] + self.nvml.notes}
        if self.nvml in self.opened:
            # which GPUs listen for which events: the summary's "0 events" needs "listened" (a file
            # without this key — older, or no NVML — has event figures None); and the repair
            # counters at the start, for their growth over the run
            self.meta["nvml_events"] = {"listening": self.nvml.listening, "enabled": config.nvml_events}
            self.meta["repairs_start"] = self.nvml.repairs_start
        self.out = store.ColumnStore(config.out_path, self.meta)
        self.buffer: dict[str, list[float]] = {}
        self.ticks = self.missed = self.counter_reads = 0
        self.counter_spacing_s: tuple[float, float] | None = None  # the cadence the budget gave: min, max
        self.flush()

    def flush(self) -> None:
        if self.buffer.get("t"):
            self.out.append(self.buffer)
        self.out.append_events(self.nvml.take_events())
        columns = ["t", "scheduled"] + [c for source in self.opened for c in source.columns]
        self.buffer = {name: [] for name in columns}

    def _attach(self, url: str) -> None:
        self._detach()
        vllm = VllmMetricsSource(url, self.config.interval_s)
        vllm.open()
        self.opened.append(vllm)

    def _detach(self) -> None:
        for source in self.opened:
            if source.name == "vllm":
                source.close()
                # kept past the detach: the plugin detaches when the engine stops, before the
                # session's monitor reports (session 5 on H100 reported None for a filtered run)
                self.vllm_filtered = source.filtered if source.filtered is not None else self.vllm_filtered
        self.opened = [source for source in self.opened if source.name != "vllm"]

    def receive(self) -> bool:
        """Take one command off the pipe; True means stop (also when the parent is gone)."""
        try:
            return self.command(self.conn.recv())
        except (EOFError, OSError):  # the parent died without a word: flush and end
            return True
        except (pickle.UnpicklingError, ValueError):  # a command the parent's Ctrl-C cut off: the same
            return True

    def command(self, message) -> bool:
        """Handle one command; True means stop."""
        kind, argument = message
        if kind == "stop":
            return True
        if kind in ("attach_vllm", "detach_vllm"):
            self.flush()  # columns change: the next chunk has the new set
            self._attach(argument) if kind == "attach_vllm" else self._detach()
            self.flush()
        elif kind == "flush":
            self.flush()
            self.conn.send(("flushed", {"ticks": self.ticks, "missed": self.missed}))
        return False

    def run(self) -> None:
        interval, conn = self.config.interval_s, self.conn
        conn.send(("ready", self.meta))
        start = time.monotonic()
        next_counters = start
        began = (start, time.process_time())
        steady_from = None  # (monotonic, CPU seconds) once the first second is over
        stopping = False
        while not stopping:
            scheduled = start + self.ticks * interval
            while not stopping and (delay := scheduled - time.monotonic()) > 0:
                if conn.poll(delay):
                    stopping = self.receive()
            if stopping:
                break
            row: dict[str, float] = {"t": time.monotonic(), "scheduled": scheduled}
            if steady_from is None and row["t"] >= start + 1.0:
                steady_from = (row["t"], time.process_time())
            for source in self.opened:
                source.read(row)
            if row["t"] >= next_counters:
                next_counters = row["t"] + self._read_counters(row) - interval / 2  # on the tick grid
            for name, values in self.buffer.items():
                values.append(row.get(name, math.nan))
            self.ticks += 1
            behind = int((time.monotonic() - start) / interval) + 1 - self.ticks
            if behind > 0:  # a tick took longer than the interval: skip the deadlines already past
                self.ticks += behind
                self.missed += behind
            if len(self.buffer["t"]) >= self.config.flush_every:
                self.flush()
            while not stopping and conn.poll():
                stopping = self.receive()
        self.flush()
        # the sampler's own CPU % of one core after its first second (start-up and the first
        # /metrics connection would make a short run report several times what a long one costs);
        # a run of under two seconds: over all of it
        since = steady_from if steady_from is not None and time.monotonic() - steady_from[0] >= 1.0 else began
        cpu_steady = (100.0 * (time.process_time() - since[1]) / (time.monotonic() - since[0])
                      if time.monotonic() > since[0] else None)
        # the listener ends (within one wait), its last events go to the file, then the repair
        # counters are read a second time: their growth over the run
        self.nvml.stop_events()
        self.flush()
        repairs_end = self.nvml.read_repairs() if self.nvml in self.opened else None
        if repairs_end is not None:
            self.out.put_json(store.REPAIRS_END, repairs_end)
        notes = [s.note for s in self.opened + self.sources if s.note] + self.nvml.notes
        self._detach()
        for source in self.opened:
            source.close()
        try:
            conn.send(("stopped", {"ticks": self.ticks, "missed": self.missed, "notes": sorted(set(notes)),
                                   "counter_reads": self.counter_reads, "cpu_steady_pct": cpu_steady,
                                   # None: no vLLM attached, or it never answered
                                   "vllm_metrics_filtered": self.vllm_filtered,
                                   "counter_spacing_s": self.counter_spacing_s, "repairs_end": repairs_end}))
        except OSError:
            pass  # nobody is listening any more

    def _read_counters(self, row: dict) -> float:
        """Every source's counters; returns the seconds until the next counter read: the configured
        interval, or longer where this read cost more than the budget's share of that time."""
        used = time.process_time()
        for source in self.opened:
            read = getattr(source, "read_counters", None)
            if read is not None:
                read(row)
        cost = time.process_time() - used
        self.counter_reads += 1
        if self.counter_reads == 1:  # the first read also finds which NVLink counters answer (once)
            return self.config.counter_interval_s
        spacing = max(self.config.counter_interval_s, cost / COUNTER_CPU_BUDGET)
        low, high = self.counter_spacing_s or (spacing, spacing)
        self.counter_spacing_s = (min(low, spacing), max(high, spacing))
        return spacing


def _sample(config: MonitorConfig, conn) -> None:
    # Ctrl-C reaches the whole process group: the parent stops the sampler (after a final
    # flush), the sampler does not die half-way on its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _Sampler(config, conn).run()


class Monitor:
    """`with Monitor(MonitorConfig(path)) as monitor: … monitor.window(t0, t1)`."""

    def __init__(self, config: MonitorConfig):
        self.config = config
        self.meta: dict[str, Any] = {}
        self.final: dict[str, Any] = {}
        self._reader = store.Reader(config.out_path)
        ctx = multiprocessing.get_context("spawn")  # no fork of a parent holding CUDA or threads
        self._conn, child = ctx.Pipe()
        self._desynced = False  # a command was cut off half-way (see _ask)
        self._proc = ctx.Process(target=_sample, args=(config, child), name="gpucert-monitor", daemon=True)

    @property
    def path(self) -> Path:
        return Path(self.config.out_path)

    def start(self, timeout_s: float = 60.0) -> Monitor:
        self._proc.start()
        try:
            ready = self._conn.poll(timeout_s)
        except BaseException:
            # Ctrl-C while the sampler is still starting (a driver's init can take seconds):
            # no half-started sampler is left behind, and the caller decides what to say
            self._proc.terminate()
            self._proc.join(10)
            raise
        if not ready:
            self._proc.terminate()
            raise RuntimeError(f"the monitor did not start within {timeout_s:g} s")
        _, self.meta = self._conn.recv()
        return self

    def alive(self) -> bool:
        return self._proc.is_alive()

    def _ask(self, command: str, argument: Any = None, answer: str | None = None, timeout_s: float = 10.0) -> Any:
        if not self.alive() or self._desynced:
            return None
        transferring = True
        try:
            self._conn.send((command, argument))
            transferring = False
            if answer is None:
                return None
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self._conn.poll(max(0.0, deadline - time.monotonic())):
                transferring = True
                kind, payload = self._conn.recv()
                transferring = False
                if kind == answer:
                    return payload
        except BaseException:
            # a Ctrl-C inside a send or a receive may leave half a message in the pipe: nothing
            # read from it after that could be trusted (stop() then waits for the process alone).
            # One while waiting for the answer leaves the pipe whole.
            if transferring:
                self._desynced = True
            raise
        return None

    def attach_vllm(self, metrics_url: str) -> None:
        self._ask("attach_vllm", metrics_url)

    def detach_vllm(self) -> None:
        self._ask("detach_vllm")

    def flush(self) -> dict | None:
        """Every tick so far on disk (the sampler answers after its current tick)."""
        return self._ask("flush", answer="flushed", timeout_s=max(10.0, 5 * self.config.interval_s))

    def window(self, t0: float | None = None, t1: float | None = None) -> tuple[dict, dict]:
        """(meta, columns) of the ticks with t0 <= t <= t1 (monotonic), after a flush."""
        self.flush()
        meta, columns = self._reader.read()
        if "t" not in columns:
            return meta, {}
        t = columns["t"]
        keep = (t >= (t0 if t0 is not None else -math.inf)) & (t <= (t1 if t1 is not None else math.inf))
        return meta, {name: values[keep] for name, values in columns.items()}

    def events(self, t0: float | None = None, t1: float | None = None, flush: bool = True) -> list[dict]:
        """The NVML events received with t0 <= t <= t1 (monotonic), after a flush (`flush=False`:
        right after a window(), which flushed)."""
        if flush:
            self.flush()
        if not self.path.exists():
            return []
        self._reader.read()
        lo, hi = (t0 if t0 is not None else -math.inf), (t1 if t1 is not None else math.inf)
        return [e for e in self._reader.events if lo <= e["t"] <= hi]

    def summary(self, t0: float | None = None, t1: float | None = None, **kwargs) -> dict[str, Any]:
        """summary.summarize of the window with its events; the whole run (no t0, no t1) once
        stopped also has the memory-repair counters' growth (their end is read at the stop)."""
        meta, columns = self.window(t0, t1)
        whole = t0 is None and t1 is None
        end = (self.final.get("repairs_end") or self._reader.repairs_end) if whole else None
        return summary_engine.summarize(columns, meta=meta, events=self.events(t0, t1, flush=False),
                                        repairs_end=end, **kwargs)

    def stop(self, timeout_s: float = 10.0) -> dict:
        """Stop the sampler (it flushes what it holds first) and return its final figures. A pipe
        left half-read by a Ctrl-C, or one that breaks, gives no figures, never an error: the
        samples are on disk either way."""
        if self._proc.is_alive():
            try:
                self._conn.send(("stop", None))
                while not self._desynced and self._conn.poll(timeout_s):
                    kind, payload = self._conn.recv()
                    if kind == "stopped":
                        self.final = payload
                        break
            except (EOFError, OSError, pickle.UnpicklingError, ValueError):
                pass
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout_s)
        return self.final

    def __enter__(self) -> Monitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "meta": self.meta, "final": self.final}
