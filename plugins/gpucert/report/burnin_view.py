"""The card's burn-in section, from metrics.json alone: per GPU the sustained figures beside the
burst and the datasheet, the monitor's slowdowns, clock drop, temperature and fault counters, and
the verdict in words, and its time series per GPU (TFLOP/s, SM clock, power, temperature)."""

from __future__ import annotations

from typing import Any

from ..monitor.summary import PER_GPU_SERIES
from . import charts

FAULTS = ("xid_count", "ecc_uncorrected_new", "ecc_corrected_new", "row_remap_new", "retired_pages_new")


def _by_gpu(check: dict) -> dict[int, dict[str, dict]]:
    out: dict[int, dict[str, dict]] = {}
    for metric in check.get("metrics", []):
        gpu = (metric.get("params") or {}).get("gpu")
        if gpu is not None:
            out.setdefault(int(gpu), {})[metric["metric"]] = metric
    return out


def _value(metrics: dict, name: str) -> float | None:
    value = (metrics.get(name) or {}).get("value")
    return value if isinstance(value, (int, float)) else None


def _of_peak(metrics: dict, name: str) -> float | None:
    metric = metrics.get(name) or {}
    value, peak = metric.get("value"), metric.get("peak")
    return value / peak * 100 if isinstance(value, (int, float)) and peak else None


def sentence(gpu: int, metrics: dict) -> str:
    """One GPU's burn-in in words, from its metrics (what is missing is left out, not guessed)."""
    parts = []
    tflops, gbps = _value(metrics, "sustained_tflops"), _value(metrics, "sustained_gbps")
    if tflops is not None:
        extra = [f"{_value(metrics, 'tflops_of_burst_pct'):.0f} % of its burst"] if _value(metrics, "tflops_of_burst_pct") else []
        if _of_peak(metrics, "sustained_tflops") is not None:
            extra.append(f"{_of_peak(metrics, 'sustained_tflops'):.0f} % of the datasheet")
        parts.append(f"sustained {tflops:,.1f} TFLOP/s" + (f" ({', '.join(extra)})" if extra else ""))
    if gbps is not None:
        extra = [f"{_value(metrics, 'gbps_of_burst_pct'):.0f} % of its burst"] if _value(metrics, "gbps_of_burst_pct") else []
        if _of_peak(metrics, "sustained_gbps") is not None:
            extra.append(f"{_of_peak(metrics, 'sustained_gbps'):.0f} % of the datasheet")
        parts.append(f"{gbps:,.0f} GB/s" + (f" ({', '.join(extra)})" if extra else ""))
    slow = [(name, _value(metrics, f"{name}_slowdown_s")) for name in ("thermal", "power")]
    if any(v is not None for _, v in slow):
        parts.append(", ".join(f"{v:.0f} s in {name} slowdown" for name, v in slow if v is not None))
    if _value(metrics, "sm_clock_drop_pct") is not None:
        parts.append(f"clocks {_value(metrics, 'sm_clock_drop_pct'):.0f} % below their highest")
    if _value(metrics, "temp_peak_c") is not None:
        parts.append(f"peak {_value(metrics, 'temp_peak_c'):.0f} °C")
    counted = {name: _value(metrics, name) for name in FAULTS if _value(metrics, name) is not None}
    if counted:
        bad = {name: v for name, v in counted.items() if v}
        parts.append("no XID, ECC error or remap" if not bad else
                     ", ".join(f"{v:g} {name.replace('_', ' ')}" for name, v in bad.items()))
    failed = [name for name, m in metrics.items() if m.get("verdict") == "fail"]
    verdict = "FAILED (" + ", ".join(sorted(failed)) + ")" if failed else "passed"
    return f"GPU {gpu} {verdict}: " + "; ".join(parts) + "." if parts else f"GPU {gpu} {verdict}."


def time_series(check: dict) -> list[str]:
    """The burn-in over its minutes, one line per GPU: the TFLOP/s each phase kept (the GEMM
    alone, then beside the copy), then the SM clock, power and temperature over the same seconds
    — where a GPU's clock or power gives way under minutes of load, and which GPU."""
    monitor = check.get("monitor") or {}
    timeline = monitor.get("timeline") or {}
    t, series = timeline.get("t_s") or [], timeline.get("series") or {}
    work = {name.removesuffix(" TFLOP/s"): list(zip(o["t_s"], o["values"]))
            for name, o in (monitor.get("overlays") or {}).items() if name.endswith(" TFLOP/s")}
    out = [charts.line_chart("burn-in: TFLOP/s per GPU", "s from the check's start", "TFLOP/s", work, log2_x=False)]
    for _, suffix in PER_GPU_SERIES:  # the monitor's per-GPU series the burn-in asks for ("SM clock MHz")
        title, unit = suffix.rsplit(" ", 1)
        lines = {name.removesuffix(f" {suffix}"): list(zip(t, values)) for name, values in series.items()
                 if name.startswith("GPU ") and name.endswith(f" {suffix}")}
        out.append(charts.line_chart(f"burn-in: {title} per GPU", "s from the check's start", unit, lines,
                                     log2_x=False))
    return [c for c in out if c]


def burnin_view(data: dict[str, Any]) -> dict[str, Any] | None:
    for check in data["checks"]:
        if check["check"] != "burnin" or check["outcome"] == "skipped":
            continue
        gpus = _by_gpu(check)
        rows = [{"gpu": gpu, **{name: _value(m, name) for name in (
            "sustained_tflops", "burst_tflops", "tflops_of_burst_pct", "sustained_gbps", "gbps_of_burst_pct",
            "together_tflops", "together_gbps", "together_work_pct", "allreduce_busbw_gbps", "thermal_slowdown_s", "power_slowdown_s",
            "sm_clock_drop_pct", "temp_peak_c", "vs_median_tflops_pct")},
                 "tflops_of_peak_pct": _of_peak(m, "sustained_tflops"),
                 "faults": sum(_value(m, name) or 0 for name in FAULTS)} for gpu, m in sorted(gpus.items())]
        notices = [row["notice"] for row in (check.get("findings") or {}).get("burnin", []) if row.get("notice")]
        return {"check": check, "rows": rows, "sentences": [sentence(gpu, m) for gpu, m in sorted(gpus.items())],
                "notices": notices, "charts": time_series(check)}
    return None
