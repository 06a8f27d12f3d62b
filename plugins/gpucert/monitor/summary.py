"""From a window of monitor samples to figures: per GPU, host, vLLM, the sampler's own jitter, and
the per-check metrics the plugin records (docs/METRICS.md, "monitor")."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

# clock-event bits that mean the GPU was slowed by power, heat or hardware (not idle, not a
# setting an operator chose); nvml.h nvmlClocksEventReason*
SLOWDOWN_REASONS = {0x004: "sw_power_cap", 0x008: "hw_slowdown", 0x020: "sw_thermal_slowdown",
                    0x040: "hw_thermal_slowdown", 0x080: "hw_power_brake_slowdown"}
# of those, the ones a healthy node under a normal load does not show
HARD_SLOWDOWNS = 0x008 | 0x020 | 0x040 | 0x080


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def _stat(values: np.ndarray, how: str) -> float | None:
    v = _finite(values)
    if not v.size:
        return None
    return float({"mean": np.mean, "max": np.max, "min": np.min}[how](v))


def _counter_delta(values: np.ndarray) -> float | None:
    """last − first of a cumulative counter (None when it read fewer than twice)."""
    v = _finite(values)
    return float(v[-1] - v[0]) if v.size >= 2 else None


def _counter_span(values: np.ndarray, t: np.ndarray) -> tuple[float, float] | None:
    """(last − first, the seconds between those two reads) of a cumulative counter: the monitor
    reads counters every `counter_interval_s`, NaN between, so their time is not the window's."""
    ok = np.isfinite(np.asarray(values, dtype=float))
    if np.count_nonzero(ok) < 2:
        return None
    v, at = np.asarray(values, dtype=float)[ok], t[ok]
    span = float(at[-1] - at[0])
    return (float(v[-1] - v[0]), span) if span > 0 else None


def gpu_indices(columns: dict[str, np.ndarray]) -> list[int]:
    return sorted({int(name[3:name.index(".")]) for name in columns if name.startswith("gpu")})


def jitter_ms(columns: dict[str, np.ndarray]) -> dict[str, float | None]:
    if "t" not in columns or not len(columns["t"]):
        return {"p50": None, "p99": None, "max": None}
    late = (columns["t"] - columns["scheduled"]) * 1e3
    return {"p50": float(np.percentile(late, 50)), "p99": float(np.percentile(late, 99)), "max": float(late.max())}


def summarize(columns: dict[str, np.ndarray], output_tokens: float | None = None,
              window_s: float | None = None) -> dict[str, Any]:
    """Figures of one window. Rates of cumulative counters are their difference over the time
    between their first and last reads in the window (counters are read every
    `counter_interval_s`, not every tick). Energy per GPU is the NVML energy counter's difference,
    scaled from that span to the window — `window_s` (the length of what the check measured) or,
    without it, the sampled span: the mean power the counter gave, over the whole window. Where the
    counter is missing or read fewer than twice (a window under one counter interval), the integral
    of the power samples, scaled the same way."""
    t = columns.get("t", np.array([]))
    duration = float(t[-1] - t[0]) if len(t) >= 2 else 0.0
    to_window = window_s / duration if window_s and duration > 0 else 1.0
    out: dict[str, Any] = {"samples": int(len(t)), "duration_s": duration, "jitter_ms": jitter_ms(columns),
                           "gpus": {}, "host": {}, "vllm": {}}
    for i in gpu_indices(columns):
        def col(field: str) -> np.ndarray:
            return columns.get(f"gpu{i}.{field}", np.full(len(t), np.nan))  # noqa: B023 -- called in this iteration only
        # the counter's difference over its own span, scaled to the window (or to the sampled span)
        counted = _counter_span(col("energy_j"), t)
        if counted is not None:
            energy = counted[0] * (window_s or duration) / counted[1]
        elif duration > 0 and _finite(col("power_w")).size >= 2:  # no counter, or too short a window
            power = col("power_w")
            ok = np.isfinite(power)
            integrate = np.trapezoid if hasattr(np, "trapezoid") else np.trapz
            energy = float(integrate(power[ok], t[ok])) * to_window
        else:
            energy = None
        events = _finite(col("clock_events")).astype(np.int64)
        seen = int(np.bitwise_or.reduce(events)) if events.size else 0
        gpu = {
            "util_gpu_mean_pct": _stat(col("util_gpu_pct"), "mean"),
            "util_gpu_peak_pct": _stat(col("util_gpu_pct"), "max"),
            "util_mem_mean_pct": _stat(col("util_mem_pct"), "mean"),
            "mem_used_peak_gib": (lambda v: v / 1024 if v is not None else None)(_stat(col("mem_used_mib"), "max")),
            "power_mean_w": _stat(col("power_w"), "mean"),
            "power_peak_w": _stat(col("power_w"), "max"),
            "energy_j": energy,
            "temp_peak_c": _stat(col("temp_c"), "max"),
            "sm_clock_min_mhz": _stat(col("sm_clock_mhz"), "min"),
            "slowdown_reasons": [name for bit, name in SLOWDOWN_REASONS.items() if seen & bit],
            "hard_slowdown_samples": int(np.count_nonzero(events & HARD_SLOWDOWNS)),
            "ecc_corrected_new": _counter_delta(col("ecc_corrected")),
            "ecc_uncorrected_new": _counter_delta(col("ecc_uncorrected")),
        }
        for name, field, scale in (("pcie_tx_gbps", "pcie_tx_bytes", 1.0), ("pcie_rx_gbps", "pcie_rx_bytes", 1.0),
                                   ("nvlink_tx_gbps", "nvlink_tx_kib", 1024.0), ("nvlink_rx_gbps", "nvlink_rx_kib", 1024.0)):
            counted = _counter_span(col(field), t)
            gpu[name] = counted[0] * scale / counted[1] / 1e9 if counted is not None else None
        out["gpus"][i] = gpu
    out["host"] = {"cpu_busy_mean_pct": _stat(columns.get("host.cpu_busy_pct", np.array([])), "mean"),
                   "cpu_busy_peak_pct": _stat(columns.get("host.cpu_busy_pct", np.array([])), "max"),
                   "mem_used_peak_gib": _stat(columns.get("host.mem_used_gib", np.array([])), "max"),
                   "sampler_cpu_mean_pct": _stat(columns.get("host.sampler_cpu_pct", np.array([])), "mean")}
    if "vllm.running" in columns:
        out["vllm"] = {"running_peak": _stat(columns["vllm.running"], "max"),
                       "waiting_peak": _stat(columns["vllm.waiting"], "max"),
                       "kv_cache_usage_peak_pct": _stat(columns["vllm.kv_cache_usage_pct"], "max"),
                       "preemptions": _counter_delta(columns["vllm.preemptions"])}
    energies = [g["energy_j"] for g in out["gpus"].values() if g["energy_j"] is not None]
    out["energy_j"] = sum(energies) if energies else None
    out["energy_j_per_output_token"] = (out["energy_j"] / output_tokens
                                        if out["energy_j"] is not None and output_tokens else None)
    return out


def summarize_windows(columns: dict[str, np.ndarray], windows: list[tuple[float, float]],
                      output_tokens: float | list[float] | None = None) -> dict[str, Any]:
    """Figures of what a check measured: one window, or one per repeat of the same workload. With
    several, the figures are of their samples alone (the pauses between repeats are no part of the
    workload), the energy is each window's own (`energy_j_repeats`), `energy_j` their median — one
    repeat's energy, whatever the number of repeats — and joules per output token all of their
    energy over all of their tokens; given tokens per window, each repeat's joules per token too
    (`energy_j_per_output_token_repeats`, the samples of its interval)."""
    per_window = list(output_tokens) if isinstance(output_tokens, (list, tuple)) else None
    if per_window is not None:
        output_tokens = sum(per_window)
    t = columns.get("t", np.array([]))

    def within(a: float, b: float) -> np.ndarray:
        return (t >= a) & (t <= b)

    if len(windows) == 1:
        (a, b), = windows
        return summarize({name: values[within(a, b)] for name, values in columns.items()},
                         output_tokens=output_tokens, window_s=b - a)
    inside = np.zeros(len(t), dtype=bool)
    for a, b in windows:
        inside |= within(a, b)
    out = summarize({name: values[inside] for name, values in columns.items()})
    energies = [summarize({name: values[within(a, b)] for name, values in columns.items()},
                          window_s=b - a)["energy_j"] for a, b in windows]
    known = None not in energies
    out["energy_j_repeats"] = energies if known else None
    out["energy_j"] = float(np.median(energies)) if known else None
    out["energy_j_per_output_token"] = sum(energies) / output_tokens if known and output_tokens else None
    out["energy_j_per_output_token_repeats"] = ([e / n for e, n in zip(energies, per_window) if n]
                                                if known and per_window else None)
    return out


# summary field → (metric name, unit, direction) recorded on each monitored check
CHECK_METRICS = (
    # the same load with less GPU busy time: something else (host, front end, links) holds it back
    ("util_gpu_mean_pct", "gpu_util_mean_pct", "%", "higher"),
    ("util_gpu_peak_pct", "gpu_util_peak_pct", "%", "higher"),
    ("mem_used_peak_gib", "gpu_mem_peak_gib", "GiB", "lower"),
    ("power_mean_w", "gpu_power_mean_w", "W", "lower"),
    ("temp_peak_c", "gpu_temp_peak_c", "°C", "lower"),
)


def check_metrics(summary: dict[str, Any]) -> list[tuple[str, float, str, str | None, str | None]]:
    """(metric, value, unit, direction, note) to record on a check: GPU figures over all GPUs
    (means of means, peaks of peaks, power summed), energy, slowdowns, vLLM, jitter."""
    rows = []
    gpus = list(summary["gpus"].values())
    for field, metric, unit, direction in CHECK_METRICS:
        values = [g[field] for g in gpus if g[field] is not None]
        if not values:
            continue
        if field == "power_mean_w":
            value = sum(values)
        elif "mean" in field:
            value = sum(values) / len(values)
        else:
            value = max(values)
        rows.append((metric, value, unit, direction, f"over {len(values)} GPU(s)"))
    if summary.get("energy_j") is not None:
        rows.append(("energy_j", summary["energy_j"], "J", "lower", "all GPUs, NVML energy counter"))
    if summary.get("energy_j_per_output_token") is not None:
        rows.append(("energy_j_per_output_token", summary["energy_j_per_output_token"], "J/token", "lower", None))
    if gpus:
        hard = sum(g["hard_slowdown_samples"] for g in gpus)
        reasons = sorted({r for g in gpus for r in g["slowdown_reasons"]})
        rows.append(("gpu_hard_slowdown_samples", hard, "samples", "lower",
                     ("slowdown reasons seen: " + ", ".join(reasons)) if reasons else None))
    vllm = summary.get("vllm") or {}
    if vllm.get("kv_cache_usage_peak_pct") is not None:
        rows.append(("kv_cache_usage_peak_pct", vllm["kv_cache_usage_peak_pct"], "%", "lower",
                     "vLLM /metrics: the same load filling more of the KV cache leaves less headroom"))
    if vllm.get("preemptions") is not None:
        rows.append(("preemptions", vllm["preemptions"], "requests", "lower", "vLLM /metrics"))
    if summary["jitter_ms"]["p99"] is not None:
        rows.append(("monitor_jitter_ms_p99", summary["jitter_ms"]["p99"], "ms", "lower",
                     "the sampler's own lateness against its 100 ms schedule"))
    return [r for r in rows if r[1] is not None and not (isinstance(r[1], float) and math.isnan(r[1]))]


def timeline(columns: dict[str, np.ndarray], t0: float, max_points: int = 300) -> dict[str, Any]:
    """Downsampled series for the card's charts: seconds from t0 → GPU util (mean of GPUs), memory
    used (GiB, sum), power (W, sum), KV cache %."""
    t = columns.get("t")
    if t is None or not len(t):
        return {}
    step = max(1, math.ceil(len(t) / max_points))
    idx = np.arange(0, len(t), step)
    gpus = gpu_indices(columns)

    def over_gpus(field: str, how) -> list[float | None]:
        stack = [columns[f"gpu{i}.{field}"][idx] for i in gpus if f"gpu{i}.{field}" in columns]
        if not stack:
            return []
        with np.errstate(all="ignore"):
            values = how(np.vstack(stack), axis=0)
        return [None if not math.isfinite(v) else round(float(v), 3) for v in values]

    series = {"GPU util % (mean)": over_gpus("util_gpu_pct", np.nanmean),
              "GPU memory GiB (sum)": [None if v is None else round(v / 1024, 3)
                                       for v in over_gpus("mem_used_mib", np.nansum)],
              "power W (sum)": over_gpus("power_w", np.nansum)}
    for name, column in (("KV cache %", "vllm.kv_cache_usage_pct"), ("vLLM running", "vllm.running"),
                         ("vLLM waiting", "vllm.waiting")):
        if column in columns:
            series[name] = [None if not math.isfinite(v) else round(float(v), 3) for v in columns[column][idx]]
    return {"t_s": [round(float(v - t0), 3) for v in t[idx]], "series": {k: v for k, v in series.items() if v}}
