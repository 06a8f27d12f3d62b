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


def _window_steps(check: dict) -> list[float]:
    """Each judged window's decode step p50 (the first rank's), where several were judged."""
    return next((list(m.get("samples") or []) for m in check.get("metrics", [])
                 if m["metric"] == "decode_step_ms_p50" and not (m.get("params") or {}).get("rank")), [])


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


def _beside(values: dict[str, float], window_steps: list[float] = ()) -> str | None:
    """The unprofiled figures next to the profiled ones: the profiler slows the engine."""
    def num(key, fmt):
        value = values.get(key)
        return None if value is None else format(value, fmt)
    parts = []
    bits = [f"the engine's mean step {num('unprofiled_engine_itl_ms', '.2f')} ms (vLLM's inter-token latency)"
            if num("unprofiled_engine_itl_ms", ".2f") else "",
            f"{num('unprofiled_step_ms_p50', '.2f')} ms between tokens at the client (p50)"
            if num("unprofiled_step_ms_p50", ".2f") else "",
            f"{num('unprofiled_output_tok_s', ',.0f')} output tok/s" if num("unprofiled_output_tok_s", ",.0f") else ""]
    if any(bits):
        parts.append("without the profiler " + ", ".join(b for b in bits if b))
    if num("decode_step_ms_p50", ".2f"):
        text = f"with it a decode step of {num('decode_step_ms_p50', '.2f')} ms (p50"
        if len(window_steps) > 1:
            text += (f"; the median of {len(window_steps)} profile windows: "
                     + ", ".join(f"{v:.2f}" for v in window_steps) + " ms")
        text += ")"
        if num("profiled_output_tok_s", ",.0f"):
            text += f" and {num('profiled_output_tok_s', ',.0f')} output tok/s"
        if num("profiler_step_cost_pct", ".0f"):  # served: on the step, against the engine's own
            text += f" (the profiler lengthened the step {num('profiler_step_cost_pct', '+.0f')} %)"
        elif num("profiler_overhead_pct", ".0f"):  # offline: the profiled generate's throughput
            text += f" (the profiler cost {num('profiler_overhead_pct', '.0f')} % of the throughput)"
        parts.append(text)
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:] if parts else None


def _mode_level(check: dict) -> tuple[str, int]:
    params = check.get("params") or {}
    if "prompts" in params:
        return "offline", int(params["prompts"])
    return "served", int(params.get("concurrency", 0))


def comparisons(rows: list[dict[str, Any]]) -> list[str]:
    """Sentences setting captures side by side: each capture against the first (vLLM's defaults)
    at the same mode and level (what CUDA graphs remove), and served against offline at the same
    level and capture (what the server adds)."""
    out = []
    by_key = {(r["capture"].get("capture"), *_mode_level(r["check"])): r for r in rows}

    def figures(row):
        v = row["values"]
        return v.get("decode_step_ms_p50"), v.get("host_bound_pct"), v.get("gpu_busy_pct")

    def sentence(label_a, a, label_b, b):
        (sa, ha, ga), (sb, hb, gb) = figures(a), figures(b)
        if None in (sa, sb, ha, hb):
            return None
        text = (f"{label_b} against {label_a}: decode step {sa:.2f} → {sb:.2f} ms ({(sb / sa - 1) * 100:+.0f} %), "
                f"host-bound share of decode {ha:.1f} → {hb:.1f} %")
        if ga is not None and gb is not None:
            text += f", GPU busy {ga:.0f} → {gb:.0f} %"
        return text + " (both profiled)."
    captures = list(dict.fromkeys(r["capture"].get("capture") for r in rows))
    for (capture, mode, level), row in by_key.items():
        if capture != captures[0] and (captures[0], mode, level) in by_key:
            line = sentence(f"{captures[0]}", by_key[(captures[0], mode, level)], f"{capture}", row)
            out.append(f"{mode} at {level}: {line}" if line else None)
        if mode == "served" and (capture, "offline", level) in by_key:
            offline = by_key[(capture, "offline", level)]
            line = sentence(f"offline ({level} prompts)", offline, f"served (concurrency {level})", row)
            out.append(f"{capture}: {line}{_between_steps(offline, row)}" if line else None)
    return [line for line in out if line]


def _between_steps(offline: dict, served: dict) -> str:
    """Where served trails offline outside the steps: both unprofiled rates and the served GPU's
    idle share between steps (forensics.level), where the monitor read it."""
    a, b = offline["values"].get("unprofiled_output_tok_s"), served["values"].get("unprofiled_output_tok_s")
    idle = served["values"].get("unprofiled_gpu_idle_pct")
    if not a or b is None or idle is None:
        return ""
    return (f" Unprofiled, served {b:,.0f} against offline {a:,.0f} output tok/s ({(b / a - 1) * 100:+.0f} %), "
            f"the served GPU running no kernel in {idle:.0f} % of the monitor's samples: time between its steps.")


def forensics_view(data: dict[str, Any]) -> dict[str, Any] | None:
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
                           "window_number": trace.get("window_number"), "windows": trace.get("windows") or 1,
                           "drawn": bool(trace.get("window")),
                           "findings": analysis.get("findings") or [],
                           "top_kernels": ((analysis.get("steps") or {}).get("top_kernels") or [])[:5],
                           "charts": [c for c in [_window(trace.get("window"))]
                                      + [_histogram(d, s) for d, s in devices.items()] if c]})
        values = _values(check)
        out.append({"check": check, "values": values, "capture": capture, "notices": notices,
                    "traces": traces, "ranked": len({t["rank"] for t in traces}) > 1,
                    "worst": findings.get("worst_step", []), "beside": _beside(values, _window_steps(check))})
    return {"rows": out, "comparisons": comparisons(out)} if out else None
