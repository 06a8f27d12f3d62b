"""The card's forensics section, from metrics.json alone: per capture (engine configuration and
level) the decode step with and without the profiler, the GPU's busy share and the host-bound share
of decode time, the findings in words, the idle-gap histogram by cause, the worst window drawn, and
the worst steps with the requests that felt them."""

from __future__ import annotations

from typing import Any

from . import charts

CHECKS = ("trace_served", "trace_offline")
OP_COLORS = {"kernel": "#0969da", "memcpy": "#1a7f37", "memset": "#1a7f37"}


def _values(check: dict) -> dict[str, float]:
    return {m["metric"]: m["value"] for m in check.get("metrics", [])
            if isinstance(m.get("value"), (int, float)) and not m.get("params", {}).get("gpu")}


def _gap_label(low: float, high: float) -> str:
    def text(us: float) -> str:
        return f"{us / 1000:g} ms" if us >= 1000 else f"{us:g} µs"
    return f"≥{text(low)}"


def _histogram(device: str, summary: dict) -> str:
    hist = summary.get("histogram") or {}
    edges, counts = hist.get("edges_us") or [], hist.get("counts") or {}
    if len(edges) < 2:
        return ""
    labels = [_gap_label(edges[i], edges[i + 1]) for i in range(len(edges) - 1)]
    return charts.stacked_bars(f"GPU {device}: idle gaps by length and cause", "gap length", "gaps", labels,
                               {cause: [float(c) for c in values] for cause, values in counts.items() if any(values)},
                               colors=charts.CAUSE_COLORS)


def _window(view: dict | None) -> str:
    if not view:
        return ""
    host = [(s, d, "#bf8700", f"host: {name} ({d / 1000:.3f} ms)") for s, d, name in view["ranges"]]
    ops = [(s, d, OP_COLORS.get(kind, "#0969da"), f"{kind} {name} ({d:.1f} µs)") for s, d, kind, name in view["ops"]]
    gaps = [(s, d, charts.CAUSE_COLORS.get(cause, "#6e7781"), f"idle {d:.1f} µs: {cause}") for s, d, cause in view["gaps"]]
    return charts.timeline_chart(f"GPU {view['device']}: {view['label']}", view["span_us"],
                                 [("host ranges", host), ("GPU ops", ops), ("GPU idle", gaps)])


def forensics_view(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for check in data["checks"]:
        if check["check"] not in CHECKS or check["outcome"] == "skipped":
            continue
        findings = check.get("findings") or {}
        capture = next(iter(findings.get("capture", [])), {})
        notices = [row["notice"] for row in findings.get("capture", []) if row.get("notice")]
        traces = []
        for trace in findings.get("trace", []):
            analysis = trace.get("analysis") or {}
            devices = analysis.get("devices") or {}
            traces.append({"path": trace.get("path"), "rank": trace.get("rank"),
                           "findings": analysis.get("findings") or [],
                           "top_kernels": ((analysis.get("steps") or {}).get("top_kernels") or [])[:5],
                           "charts": [c for c in [_window(trace.get("window"))]
                                      + [_histogram(d, s) for d, s in devices.items()] if c]})
        out.append({"check": check, "values": _values(check), "capture": capture, "notices": notices,
                    "traces": traces, "worst": findings.get("worst_step", [])})
    return out
