"""The monitor as the plugin uses it: one sampler for the session, started by the first monitored
check (or the serving fixture, which attaches vLLM's /metrics), and for each monitored check the
window between its start and end: its samples kept as `monitor/<check>.npz` in the report folder,
its figures recorded as metrics of the check (judged like any other), and a downsampled timeline
for the card's charts. Which checks: `--monitor inference` (default) | `all` | `off`.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from . import store
from . import summary as summary_engine
from .sampler import Monitor, MonitorConfig, clock_offset

# self-tests name a fake NVML binding here (NVML cannot exist without a GPU); never set in use
NVML_MODULE_HOOK = "GPUCERT_NVML_MODULE"


def nvml_module() -> str:
    """The NVML binding to import: pynvml, or the fake a self-test names in NVML_MODULE_HOOK."""
    return os.environ.get(NVML_MODULE_HOOK, "pynvml")
MODES = ("inference", "all", "off")


class SessionMonitor:
    def __init__(self, mode: str, interval_ms: float, report_dir: Path):
        if mode not in MODES:
            raise ValueError(f"--monitor must be one of {', '.join(MODES)}, got {mode!r}")
        self.mode = mode
        self.config = MonitorConfig(str(report_dir / "monitor" / "session.npz"), interval_s=interval_ms / 1e3,
                                    nvml_module=nvml_module())
        self.report_dir = report_dir
        self.monitor: Monitor | None = None
        self.error: str | None = None
        self._windows: dict[str, float] = {}
        self.notes: list[str] = []
        self.plugin_clock: dict[str, float] = {}

    def wants(self, markers: list[str]) -> bool:
        # a study or a forensics capture runs vLLM under load like an inference check
        # … and the burn-in is nothing without its clocks, temperatures, slowdowns and XIDs
        return self.mode == "all" or (self.mode == "inference"
                                      and bool({"inference", "study", "forensics", "burnin"} & set(markers)))

    def ensure_started(self) -> Monitor | None:
        if self.monitor is None and self.error is None:
            try:
                self.plugin_clock = clock_offset()
                self.monitor = Monitor(self.config).start()
                self.notes.extend(self.monitor.meta.get("notes", []))
            except Exception as exc:  # the checks still run; the card says why there is no monitor
                self.error = f"monitor not started: {type(exc).__name__}: {exc}"
                self.notes.append(self.error)
        return self.monitor

    def attach_vllm(self, metrics_url: str) -> None:
        if self.ensure_started():
            self.monitor.attach_vllm(metrics_url)

    def detach_vllm(self) -> None:
        if self.monitor:
            self.monitor.detach_vllm()

    def begin(self, nodeid: str) -> None:
        if self.ensure_started():
            self._windows[nodeid] = time.monotonic()

    def end(self, result, recorder) -> None:
        """Record the window's figures on the check. A check may narrow the window to what it
        measured and give its output tokens (`gpucert.work(...)`). A monitor that fails here
        leaves a finding on the check, never a failed check."""
        t0 = self._windows.pop(result.nodeid, None)
        if t0 is None or self.monitor is None:
            return
        try:
            self._record_window(result, recorder, t0, time.monotonic())
        except Exception as exc:
            recorder.finding("monitor", notice=f"monitor window unavailable: {type(exc).__name__}: {exc}")

    def _record_window(self, result, recorder, t0: float, t1: float) -> None:
        work = result.work or {}
        windows = work.get("windows") or [(t0, t1)]
        w0, w1 = min(w[0] for w in windows), max(w[1] for w in windows)
        # the measured window may lie before the check's body (the offline sweep runs in a
        # session fixture): the file and the charts then cover both
        t0, t1 = min(t0, w0), max(t1, w1)
        meta, columns = self.monitor.window(t0, t1)
        if not columns or not len(columns.get("t", ())):
            return
        path = self.report_dir / "monitor" / (re.sub(r"[^\w.=,-]+", "_", result.check_id)[:150] + ".npz")
        events = self.monitor.events(t0, t1, flush=False)  # the whole check's, set-up included
        store.save_slice(path, meta, columns, events)
        figures = summary_engine.summarize_windows(columns, windows, output_tokens=work.get("output_tokens"),
                                                   meta=meta, events=events, repeats=work.get("repeats", True))
        for metric, value, unit, direction, note in summary_engine.check_metrics(figures):
            # a level measured with repeats: each repeat's figure is a sample of the value
            repeats = figures.get(f"{metric}_repeats")
            if repeats and len(repeats) > 1:
                how = (f"median of {len(repeats)} repeats" if metric == "energy_j"
                       else f"{len(repeats)} repeats' energy over their tokens")
                recorder.record(metric, value, unit=unit, direction=direction, samples=repeats, stat="median",
                                note="; ".join(filter(None, (note, how))))
            else:
                recorder.record(metric, value, unit=unit, direction=direction, note=note)
        reasons = sorted({r for g in figures["gpus"].values() for r in g["slowdown_reasons"]})
        if reasons:
            recorder.finding("monitor", notice="GPU clock slowdown reasons seen: " + ", ".join(reasons))
        if events:  # an XID or ECC event during the check: said on it, wherever in the check it came
            recorder.finding("monitor", notice=summary_engine.describe_events(events, t0))
        result.monitor = {"file": str(path), "samples": figures["samples"], "jitter_ms": figures["jitter_ms"],
                          "window_s": [round(w0 - t0, 3), round(w1 - t0, 3)],
                          # different loads in one window (a study's): the figures are theirs alone
                          "loads": len(windows) if not work.get("repeats", True) else None,
                          "timeline": summary_engine.timeline(columns, t0, per_gpu=work.get("per_gpu", False)),
                          "overlays": {name: {"t_s": [round(t - t0, 3) for t in times], "values": values}
                                       for name, (times, values) in (result.timelines or {}).items()}}

    def columns(self, t0: float, t1: float) -> dict[str, Any] | None:
        """The monitor's raw samples over one time.monotonic() window (name → array; "t" the
        sample times); None without a monitor or samples."""
        if self.monitor is None:
            return None
        _, columns = self.monitor.window(t0, t1)
        return columns if columns and len(columns.get("t", ())) else None

    def figures(self, t0: float, t1: float) -> dict[str, Any] | None:
        """The monitor's figures over one time.monotonic() window inside a check (a study compares
        two engine configurations measured in one check); None without a monitor or samples."""
        if self.monitor is None:
            return None
        meta, columns = self.monitor.window(t0, t1)
        if not columns or not len(columns.get("t", ())):
            return None
        return summary_engine.summarize(columns, meta=meta, events=self.monitor.events(t0, t1, flush=False))

    def stop(self) -> dict[str, Any]:
        if self.monitor is None:
            return {}
        final = self.monitor.stop()
        self.notes.extend(n for n in final.get("notes", []) if n not in self.notes)
        sampler_clock = self.monitor.meta.get("clock", {})
        info = {"file": self.config.out_path, "interval_ms": self.config.interval_s * 1e3,
                "ticks": final.get("ticks"), "missed": final.get("missed"), "notes": self.notes,
                "counter_reads": final.get("counter_reads"), "counter_spacing_s": final.get("counter_spacing_s"),
                "vllm_metrics_filtered": final.get("vllm_metrics_filtered"),
                # both processes read time.monotonic(); their wall − monotonic offsets differ by
                # the read-out gap alone on one host (µs) — recorded so that is shown, not assumed
                "clock_offset_ms": (sampler_clock["wall_minus_monotonic"] - self.plugin_clock["wall_minus_monotonic"]) * 1e3
                if sampler_clock and self.plugin_clock else None}
        try:  # the monitor's own cost over the whole session: lateness, CPU, bytes on disk
            figures = self.monitor.summary()  # after the stop: every chunk, read once more only where new
            info.update(samples=figures["samples"], jitter_ms=figures["jitter_ms"],
                        sampler_cpu_mean_pct=final.get("cpu_steady_pct"),
                        file_bytes=Path(self.config.out_path).stat().st_size,
                        # the GPUs' health over the whole session: events, repairs, slowdowns
                        gpus={str(i): {key: gpu[key] for key in summary_engine.RUN_HEALTH_KEYS}
                              for i, gpu in figures["gpus"].items()})
        except (OSError, ValueError, KeyError) as exc:
            info["notes"] = self.notes + [f"monitor file unreadable: {exc}"]
        return info
