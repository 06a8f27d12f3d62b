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
THERMAL_SLOWDOWNS = 0x020 | 0x040  # sw_thermal_slowdown, hw_thermal_slowdown
POWER_SLOWDOWNS = 0x004 | 0x080  # sw_power_cap, hw_power_brake_slowdown
# a sample's reading holds until the next sample, at most this many times the window's median
# sample spacing: a sampler stalled for a second does not stretch one reading over the stall
HOLD_LIMIT = 2.0
BUSY_UTIL_PCT = 50.0  # "busy" for the SM clock drop: NVML GPU utilization above this


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


def held_seconds(t: np.ndarray) -> np.ndarray:
    """Each sample's weight in seconds: the time to the next sample (the last sample: 0), at most
    HOLD_LIMIT × the median spacing. Over a window without stalls the weights add up to its
    sampled span, t[-1] − t[0]."""
    t = np.asarray(t, dtype=float)
    if len(t) < 2:
        return np.zeros(len(t))
    gaps = np.diff(t)
    return np.append(np.minimum(gaps, HOLD_LIMIT * float(np.median(gaps))), 0.0)


def slowdown_seconds(t: np.ndarray, clock_events: np.ndarray) -> dict[str, Any]:
    """Time in slowdown, from the clock-event-reason samples, time-weighted (held_seconds), not
    counted: `slowdown_s` {reason: seconds with that reason set} for each of SLOWDOWN_REASONS
    (sw_power_cap, hw_slowdown, sw_thermal_slowdown, hw_thermal_slowdown, hw_power_brake_slowdown);
    `thermal_slowdown_s` the seconds with sw_thermal_slowdown or hw_thermal_slowdown set,
    `power_slowdown_s` with sw_power_cap or hw_power_brake_slowdown set (either or both: a second
    counted once). A sample whose reasons are unread (NaN) counts nowhere; none read: all None.
    A reason that starts or ends between two samples is counted from the first sample that shows
    it to the first that does not: each edge is off by less than one sample interval."""
    events = np.asarray(clock_events, dtype=float)
    read = np.isfinite(events)
    if not read.any():
        return {"slowdown_s": None, "thermal_slowdown_s": None, "power_slowdown_s": None}
    weight = held_seconds(t)[read]
    bits = events[read].astype(np.int64)

    def seconds(mask: int) -> float:
        return float(weight[(bits & mask) != 0].sum())

    return {"slowdown_s": {name: seconds(bit) for bit, name in SLOWDOWN_REASONS.items()},
            "thermal_slowdown_s": seconds(THERMAL_SLOWDOWNS), "power_slowdown_s": seconds(POWER_SLOWDOWNS)}


def sm_clock_drop(sm_clock_mhz: np.ndarray, util_gpu_pct: np.ndarray) -> dict[str, float | None]:
    """`sm_clock_peak_mhz`: the highest SM clock of any sample; `sm_clock_busy_median_mhz`: the
    median SM clock over the samples where the GPU was busy (NVML GPU utilization > 50 %: an idle
    GPU's low clock is no slowdown); `sm_clock_drop_pct` = (peak − busy median) / peak × 100 — how
    far below its own highest clock the GPU ran under load (0: at its peak clock for at least half
    of its busy samples). None without a busy sample with a clock."""
    clock = np.asarray(sm_clock_mhz, dtype=float)
    util = np.asarray(util_gpu_pct, dtype=float)
    peak = _stat(clock, "max")
    busy = clock[np.isfinite(clock) & np.isfinite(util) & (util > BUSY_UTIL_PCT)]
    median = float(np.median(busy)) if busy.size else None
    drop = (peak - median) / peak * 100.0 if median is not None and peak else None
    return {"sm_clock_peak_mhz": peak, "sm_clock_busy_median_mhz": median, "sm_clock_drop_pct": drop}


def event_figures(gpu: int, meta: dict[str, Any] | None, events: list[dict] | None) -> dict[str, Any]:
    """NVML's fault events of one GPU in the window (events.py): `xid_events` [{t, wall, xid}] —
    each XID critical error the driver posted: `t` on time.monotonic() (the samples' clock) and
    `wall` (time.time()) when the sampler received it, `xid` its number (e.g. 79: the GPU fell off
    the bus; 48: a double-bit ECC error; 13, 31, 43: an application's fault) — and `xid_count`, how
    many; `ecc_events` {single_bit, double_bit}: how many ECC error events NVML posted. A figure is
    None where that GPU did not listen for that kind (registration refused or not supported, events
    off, a file written without the listener, or no `events` given) — never 0 for "unknown"."""
    listening = ((meta or {}).get("nvml_events") or {}).get("listening")
    kinds = set(listening.get(str(gpu), ())) if isinstance(listening, dict) and events is not None else set()
    mine = [e for e in events or () if e.get("gpu") == gpu]

    def count(kind: str) -> int | None:
        return sum(1 for e in mine if e["kind"] == kind) if kind in kinds else None

    xids = [{"t": e["t"], "wall": e.get("wall"), "xid": e["data"]} for e in mine if e["kind"] == "xid"]
    return {"xid_events": xids if "xid" in kinds else None, "xid_count": count("xid"),
            "ecc_events": {"single_bit": count("ecc_single_bit"), "double_bit": count("ecc_double_bit")}
            if kinds & {"ecc_single_bit", "ecc_double_bit"} else None}


def repair_figures(gpu: int, meta: dict[str, Any] | None, repairs_end: dict | None) -> dict[str, Any]:
    """The memory-repair counters' growth between the monitor's start and its end (events.py
    read_repairs): `row_remap_new` {corrected, uncorrected: rows remapped in between (end − start),
    pending, failure: the flags at the end — a remap waiting for a reset, a remap that failed};
    `retired_pages_new` {single_bit, double_bit: pages retired in between}. None where either
    reading is missing (NotSupported: no row remapping before Ampere, page retirement where the GPU
    does not use it; and in a window of a run, which has no end reading)."""
    start = ((meta or {}).get("repairs_start") or {}).get(str(gpu)) or {}
    end = (repairs_end or {}).get(str(gpu)) or {}
    remap0, remap1 = start.get("remapped_rows"), end.get("remapped_rows")
    pages0, pages1 = start.get("retired_pages"), end.get("retired_pages")

    def grew(a: dict, b: dict, key: str) -> int | None:
        return b[key] - a[key] if a.get(key) is not None and b.get(key) is not None else None

    return {"row_remap_new": {"corrected": grew(remap0, remap1, "corrected"),
                              "uncorrected": grew(remap0, remap1, "uncorrected"),
                              "pending": remap1["pending"], "failure": remap1["failure"]}
            if remap0 and remap1 else None,
            "retired_pages_new": {key: grew(pages0, pages1, key) for key in ("single_bit", "double_bit")}
            if pages0 and pages1 else None}


# per GPU, the figures of a whole run that say whether the GPU stayed healthy through it
RUN_HEALTH_KEYS = ("xid_count", "xid_events", "ecc_events", "row_remap_new", "retired_pages_new", "slowdown_s",
                   "thermal_slowdown_s", "power_slowdown_s", "sm_clock_drop_pct", "temp_peak_c")
EVENT_WORDS = {"xid": "XID", "ecc_single_bit": "single-bit ECC error", "ecc_double_bit": "double-bit ECC error"}


def describe_events(events: list[dict], t0: float, most: int = 10) -> str:
    """One line: each event's GPU, kind (and XID number) and seconds after t0, the first `most`."""
    words = [f"GPU {e['gpu']} {EVENT_WORDS.get(e['kind'], e['kind'])}"
             + (f" {e['data']}" if e["kind"] == "xid" else "") + f" at +{e['t'] - t0:.2f} s" for e in events[:most]]
    more = f"; and {len(events) - most} more" if len(events) > most else ""
    return "NVML events: " + "; ".join(words) + more


def gpu_indices(columns: dict[str, np.ndarray]) -> list[int]:
    return sorted({int(name[3:name.index(".")]) for name in columns if name.startswith("gpu")})


def jitter_ms(columns: dict[str, np.ndarray]) -> dict[str, float | None]:
    if "t" not in columns or not len(columns["t"]):
        return {"p50": None, "p99": None, "max": None}
    late = (columns["t"] - columns["scheduled"]) * 1e3
    return {"p50": float(np.percentile(late, 50)), "p99": float(np.percentile(late, 99)), "max": float(late.max())}


def summarize(columns: dict[str, np.ndarray], output_tokens: float | None = None,
              window_s: float | None = None, *, meta: dict[str, Any] | None = None,
              events: list[dict] | None = None, repairs_end: dict | None = None) -> dict[str, Any]:
    """Figures of one window. `meta` (the file's), `events` (the window's NVML events) and
    `repairs_end` (the repair counters at the monitor's end: whole runs only) give the event and
    repair figures (event_figures, repair_figures); without them those are None. Rates of
    cumulative counters are their difference over the time
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
        reasons = _finite(col("clock_events")).astype(np.int64)
        seen = int(np.bitwise_or.reduce(reasons)) if reasons.size else 0
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
            **sm_clock_drop(col("sm_clock_mhz"), col("util_gpu_pct")),
            "slowdown_reasons": [name for bit, name in SLOWDOWN_REASONS.items() if seen & bit],
            "hard_slowdown_samples": int(np.count_nonzero(reasons & HARD_SLOWDOWNS)),
            **slowdown_seconds(t, col("clock_events")),
            "ecc_corrected_new": _counter_delta(col("ecc_corrected")),
            "ecc_uncorrected_new": _counter_delta(col("ecc_uncorrected")),
            **event_figures(i, meta, events),
            **repair_figures(i, meta, repairs_end),
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
                      output_tokens: float | list[float] | None = None, *, meta: dict[str, Any] | None = None,
                      events: list[dict] | None = None, repeats: bool = True) -> dict[str, Any]:
    """Figures of what a check measured: one window, or one per repeat of the same workload. With
    several, the figures are of their samples alone (the pauses between repeats are no part of the
    workload), the energy is each window's own (`energy_j_repeats`), `energy_j` their median — one
    repeat's energy, whatever the number of repeats — and joules per output token all of their
    energy over all of their tokens; given tokens per window, each repeat's joules per token too
    (`energy_j_per_output_token_repeats`, the samples of its interval). The events counted are
    those inside the windows; time in slowdown is each window's own, added up (a pause between
    repeats holds no reading). `repeats=False`: the windows are different loads of one check (a
    study's probes, its engine starts' runs), so `energy_j` is their sum and no window is a sample."""
    per_window = list(output_tokens) if isinstance(output_tokens, (list, tuple)) else None
    if per_window is not None:
        output_tokens = sum(per_window)
    t = columns.get("t", np.array([]))

    def within(a: float, b: float) -> np.ndarray:
        return (t >= a) & (t <= b)

    inside_events = None if events is None else [e for e in events if any(a <= e["t"] <= b for a, b in windows)]
    if len(windows) == 1:
        (a, b), = windows
        return summarize({name: values[within(a, b)] for name, values in columns.items()},
                         output_tokens=output_tokens, window_s=b - a, meta=meta, events=inside_events)
    inside = np.zeros(len(t), dtype=bool)
    for a, b in windows:
        inside |= within(a, b)
    out = summarize({name: values[inside] for name, values in columns.items()}, meta=meta, events=inside_events)
    for i, gpu in out["gpus"].items():
        name = f"gpu{i}.clock_events"
        if name not in columns:
            continue
        parts = [slowdown_seconds(t[within(a, b)], columns[name][within(a, b)]) for a, b in windows]
        for key in ("thermal_slowdown_s", "power_slowdown_s"):
            known = [p[key] for p in parts if p[key] is not None]
            gpu[key] = sum(known) if known else None
        known = [p["slowdown_s"] for p in parts if p["slowdown_s"] is not None]
        gpu["slowdown_s"] = {r: sum(k[r] for k in known) for r in SLOWDOWN_REASONS.values()} if known else None
    energies = [summarize({name: values[within(a, b)] for name, values in columns.items()},
                          window_s=b - a)["energy_j"] for a, b in windows]
    known = None not in energies
    # per token over every window's energy and tokens, repeats or different loads alike
    out["energy_j_per_output_token"] = sum(energies) / output_tokens if known and output_tokens else None
    if not repeats:  # different loads: the check's energy is all of theirs
        out["energy_j"] = sum(energies) if known else None
        return out
    out["energy_j_repeats"] = energies if known else None
    out["energy_j"] = float(np.median(energies)) if known else None
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


# (column, the series' name after "GPU i ") of each GPU's own series, where a check asks for them
PER_GPU_SERIES = (("sm_clock_mhz", "SM clock MHz"), ("power_w", "power W"), ("temp_c", "temperature °C"))


def timeline(columns: dict[str, np.ndarray], t0: float, max_points: int = 300,
             per_gpu: bool = False) -> dict[str, Any]:
    """Downsampled series for the card's charts: seconds from t0 → GPU util (mean of GPUs), memory
    used (GiB, sum), power (W, sum), KV cache %; with `per_gpu`, each GPU's SM clock, power and
    temperature too ("GPU 0 SM clock MHz"), so one GPU that throttles is not averaged away."""
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
    columns_named = [("KV cache %", "vllm.kv_cache_usage_pct"), ("vLLM running", "vllm.running"),
                     ("vLLM waiting", "vllm.waiting")]
    if per_gpu:
        columns_named += [(f"GPU {i} {name}", f"gpu{i}.{field}") for i in gpus for field, name in PER_GPU_SERIES]
    for name, column in columns_named:
        if column in columns:
            series[name] = [None if not math.isfinite(v) else round(float(v), 3) for v in columns[column][idx]]
    return {"t_s": [round(float(v - t0), 3) for v in t[idx]], "series": {k: v for k, v in series.items() if v}}
