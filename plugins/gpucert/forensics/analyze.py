"""One trace in, one JSON-able result out: per GPU the busy share and its idle gaps by cause
(gaps.py), per engine step GPU time against wall time (steps.py), and findings in plain words.

The result (the shape `gpucert analyze --json` prints; consumers rely on each device's `busy_pct`
and `idle_gaps` {count, total_ms, p50_us, p99_us} and on `steps`):

    {"trace": {path, source, events_read, skipped, span_ms, wall_start_unix_s},
     "gap_us": float,
     "devices": {"<id>": {busy_pct, busy_ms, span_ms, first_op_us, ops {kernel, memcpy, memset, total},
                          streams, idle_gaps {count, total_ms, p50_us, p99_us, max_us, span_pct},
                          by_cause {cause: {count, total_ms, share_pct, reasons {reason: {count, total_ms}}}},
                          histogram {edges_us, counts {cause: [..]}},
                          host_bound_by_range [{range, total_ms, share_pct}],
                          worst_gaps [{start_us, dur_us, wall_unix_s, cause, reason, before, after, host,
                                       host_range, sync_call}]}},
     "steps": {count, note} without step annotations, else {count, pattern, thread,
               other_threads_with_steps, device, device_note, kinds {kind: n}, decode {..}, all {..},
               scope, top_kernels [..], worst [..]} (steps.py),
     "findings": [sentence, ...]}

Every number comes from the trace; a figure the trace cannot give is null (JSON), never a guess.
Times in a result are on the trace's own clock (µs) unless the key says unix; `wall_*_unix_s` are
null where the trace does not say how its clock maps to Unix time.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from .gaps import CAUSES, DEFAULT_GAP_US, HostIndex, find_gaps, summarize_device
from .steps import DEFAULT_STEP_PATTERN, summarize_steps
from .timeline import Timeline

NO_GPU_FINDING = "no GPU activity in the trace (a CPU-only profile?)"
LAUNCH_MISSING = "launch not in the trace"


def analyze(timeline: Timeline, gap_us: float = DEFAULT_GAP_US, step_pattern: str | None = None,
            top: int = 10) -> dict:
    """`top`: entries in each device's worst-gap list and in the top-kernel list; the worst-step
    list gets half as many (at least one). A bad `step_pattern` raises re.error."""
    if not gap_us > 0:
        raise ValueError(f"gap_us must be > 0, not {gap_us}")
    if top < 1:
        raise ValueError(f"top must be >= 1, not {top}")
    host = HostIndex(timeline)
    gaps = {device: find_gaps(device, ops, host, gap_us) for device, ops in timeline.devices.items() if len(ops)}
    result = {
        "trace": _trace_summary(timeline),
        "gap_us": float(gap_us),
        "devices": {str(device): summarize_device(g, host, gap_us, timeline.wall_offset_us, top)
                    for device, g in gaps.items()},
        "steps": summarize_steps(timeline, gaps, host, step_pattern, top),
    }
    result["findings"] = findings(result)
    return result


def _trace_summary(timeline: Timeline) -> dict:
    span = timeline.span_us()
    offset = timeline.wall_offset_us
    return {"path": timeline.path, "source": timeline.source, "events_read": timeline.events_read,
            "skipped": dict(timeline.skipped),
            "span_ms": None if span is None else round((span[1] - span[0]) / 1e3, 4),
            "start_us": None if span is None else round(span[0], 3),
            "wall_start_unix_s": None if span is None or offset is None else round((offset + span[0]) / 1e6, 6)}


# ---- findings: the result in sentences ----------------------------------------------------------

def findings(result: dict) -> list[str]:
    """Plain-English sentences with the result's own numbers (from the result alone, so a saved
    --json can be re-told)."""
    out: list[str] = []
    if not result["devices"]:
        out.append(NO_GPU_FINDING)
    gap_us = result["gap_us"]
    # "the host was in <the step's own annotation>" says nothing: only a finer range is named
    step_regex = re.compile(result["steps"].get("pattern") or DEFAULT_STEP_PATTERN)
    for device, summary in result["devices"].items():
        out += _device_findings(device, summary, gap_us, step_regex)
    out += _step_findings(result["steps"], step_regex)
    return out


def _device_findings(device: str, d: dict, gap_us: float, step_regex: re.Pattern) -> list[str]:
    gaps = d["idle_gaps"]
    busy = "busy" if d["busy_pct"] is None else f"busy {d['busy_pct']:.0f} %"
    head = f"GPU {device} {busy} of {fmt_ms(d['span_ms'])}"
    if not gaps["count"]:
        return [f"{head}; no idle gap ≥ {gap_us:g} µs"]
    shares = sorted(((c["share_pct"] or 0.0, cause) for cause, c in d["by_cause"].items() if c["count"]),
                    reverse=True)
    causes = ", ".join(f"{cause} {share:.0f} %" for share, cause in shares)
    out = [f"{head}; {gaps['count']:,} idle gaps ≥ {gap_us:g} µs total {fmt_ms(gaps['total_ms'])}: {causes}"]
    missing = d["by_cause"]["other"]["reasons"].get(LAUNCH_MISSING)
    if missing and gaps["total_ms"] and missing["total_ms"] / gaps["total_ms"] >= 0.25:
        share = missing["total_ms"] / gaps["total_ms"] * 100
        out.append(f"GPU {device}: {share:.0f} % of the idle time follows an op whose launch call is not in the "
                   "trace; capture the CUDA runtime calls (nsys -t cuda, or the PyTorch profiler's CPU and CUDA "
                   "activities) to tell host-bound from queued gaps")
    rows = d["host_bound_by_range"]
    if rows and rows[0]["range"] and not step_regex.search(rows[0]["range"]):
        row = rows[0]
        out.append(f"GPU {device}: while it waited on the host, the host was mostly in '{row['range']}' "
                   f"({row['share_pct']:.0f} % of the host-bound time)")
    return out


def _step_findings(steps: dict, step_regex: re.Pattern) -> list[str]:
    if not steps["count"]:
        return [steps["note"]]
    kinds = ", ".join(f"{n:,} {kind}" for kind, n in steps["kinds"].items())
    out = [f"{steps['count']:,} engine steps ({kinds})"]
    scope = steps["decode"] if steps["decode"]["count"] else steps["all"]
    label = "decode step" if steps["decode"]["count"] else "step"
    if steps["device"] is None:
        return out + [f"{label} {fmt_ms(scope['step_ms']['p50'])} (p50); no GPU activity in the steps"]
    batch = scope.get("batch")
    at = ""
    if batch:
        spread = f", {batch['min']:,}–{batch['max']:,}" if batch["min"] != batch["max"] else ""
        at = f" at a batch of {batch['p50']:,.0f} requests (p50{spread})"
    sentence = (f"{label} {fmt_ms(scope['step_ms']['p50'])} (p50, mean {fmt_ms(scope['step_ms']['mean'])}){at}, "
                f"of which the GPU waited {fmt_ms(scope['host_wait_ms']['mean'])} on the host on average "
                f"({_pct_text(scope['host_wait_pct'])} of {label} time) and was busy "
                f"{_pct_text(scope['gpu_busy_pct'])} of it")
    top_host = _commonest_top_host(steps["worst"], step_regex)
    if top_host:
        sentence += f"; worst steps while the host was in '{top_host}'"
    out.append(sentence)
    out += _graph_findings(steps.get("cuda_graphs"), label)
    worst = steps["worst"][0] if steps["worst"] else None
    p50 = scope["step_ms"]["p50"]
    if worst and p50 and worst["step_ms"] >= 10 * p50:
        out.append(f"the longest {label} (#{worst['index']}) took {fmt_ms(worst['step_ms'])}, "
                   f"{worst['step_ms'] / p50:.0f}× the p50, with the GPU busy {fmt_ms(worst['gpu_ms'])} of it: "
                   "a step lasts until the next one starts, so an engine idle between requests shows here")
    return out


def _graph_findings(graphs: dict | None, label: str) -> list[str]:
    """CUDA graphs replayed in some steps and not in others: which batches, and what it cost."""
    if not graphs or not graphs["eager"]["steps"] or not graphs["replayed"]["steps"]:
        return []
    replayed, eager = graphs["replayed"], graphs["eager"]

    def batches(side: dict) -> str:
        low, high = side["batch_min"], side["batch_max"]
        if low is None:
            return ""
        return f" (batch {low})" if low == high else f" (batches {low}–{high})"
    text = (f"CUDA graphs replayed in {replayed['steps']:,} {label}s{batches(replayed)}; "
            f"{eager['steps']:,} {label}s{batches(eager)} launched every kernel from the host")
    if replayed["step_ms_p50"] is not None and eager["step_ms_p50"] is not None:
        text += (f": {fmt_ms(eager['step_ms_p50'])} against {fmt_ms(replayed['step_ms_p50'])} a step (p50), "
                 f"the GPU waiting on the host {_pct_text(eager['host_wait_pct'])} of the time against "
                 f"{_pct_text(replayed['host_wait_pct'])}")
    return [text]


def _commonest_top_host(worst_steps: list[dict], step_regex: re.Pattern) -> str | None:
    weight: dict[str, float] = {}
    for step in worst_steps:
        if step["top_host"] and not step_regex.search(step["top_host"]):
            weight[step["top_host"]] = weight.get(step["top_host"], 0.0) + step["top_host_ms"]
    return max(weight, key=weight.get) if weight else None


# ---- the terminal summary -------------------------------------------------------------------------

def render_text(result: dict) -> str:
    lines = _trace_lines(result["trace"])
    for device, d in result["devices"].items():
        lines += [""] + _device_lines(device, d, result["gap_us"], result["trace"]["start_us"] or 0.0)
    lines += [""] + _steps_lines(result["steps"])
    lines += ["", "findings:"] + [f"  - {sentence}" for sentence in result["findings"]]
    return "\n".join(lines) + "\n"


def _trace_lines(trace: dict) -> list[str]:
    skipped = ", ".join(f"{why} {n:,}" for why, n in sorted(trace["skipped"].items()))
    line = f"trace {trace['path']} ({trace['source']}): {trace['events_read']:,} events read"
    line += f", skipped: {skipped}" if skipped else ""
    if trace["span_ms"] is not None:
        line += f"; GPU activity over {fmt_ms(trace['span_ms'])}"
    if trace["wall_start_unix_s"] is not None:
        started = datetime.fromtimestamp(trace["wall_start_unix_s"], tz=timezone.utc)
        line += f" from {started.isoformat(timespec='milliseconds')}"
    return [line]


def _device_lines(device: str, d: dict, gap_us: float, origin_us: float) -> list[str]:
    ops = d["ops"]
    busy = "?" if d["busy_pct"] is None else f"{d['busy_pct']:.1f} %"
    lines = [f"GPU {device}: busy {busy} of {fmt_ms(d['span_ms'])} ({fmt_ms(d['busy_ms'])} busy); "
             f"{ops['total']:,} ops (kernel {ops['kernel']:,}, memcpy {ops['memcpy']:,}, memset {ops['memset']:,}) "
             f"on {d['streams']} stream{'s' if d['streams'] != 1 else ''}"]
    gaps = d["idle_gaps"]
    if not gaps["count"]:
        return lines + [f"  no idle gap ≥ {gap_us:g} µs"]
    lines.append(f"  idle gaps ≥ {gap_us:g} µs: {gaps['count']:,}, total {fmt_ms(gaps['total_ms'])} "
                 f"({gaps['span_pct']:.1f} % of the span); p50 {fmt_us(gaps['p50_us'])}, p99 {fmt_us(gaps['p99_us'])}, "
                 f"max {fmt_us(gaps['max_us'])}")
    rows = []
    for cause in CAUSES:
        c = d["by_cause"][cause]
        if not c["count"]:
            continue
        rows.append([cause, f"{c['count']:,}", fmt_ms(c["total_ms"]), _pct_text(c["share_pct"])])
        rows += [[f"  {reason}", f"{r['count']:,}", fmt_ms(r["total_ms"]), ""] for reason, r in c["reasons"].items()]
    lines += _table(["cause", "gaps", "time", "share"], rows, indent=2)
    hist = d["histogram"]
    edges = hist["edges_us"]
    hist_rows = []
    for k in range(len(edges) - 1):
        counts = [hist["counts"][cause][k] for cause in CAUSES]
        if any(counts):
            hist_rows.append([f"{fmt_us(edges[k])} – {fmt_us(edges[k + 1])}"] + [f"{n:,}" for n in counts])
    lines += [""] + _table(["gap length"] + list(CAUSES), hist_rows, indent=2)
    if d["host_bound_by_range"]:
        where = ", ".join(f"'{row['range']}' {row['share_pct']:.0f} %" if row["range"]
                          else f"outside any range {row['share_pct']:.0f} %" for row in d["host_bound_by_range"])
        lines += ["", f"  host during host-bound gaps: {where}"]
    # times from the trace's first GPU op: the trace's own clock reads 13 digits of µs
    worst = [[f"{(g['start_us'] - origin_us) / 1e3:.3f}", fmt_us(g["dur_us"]), g["cause"], _short(g["reason"], 48),
              _short(g["before"], 28) + " → " + _short(g["after"], 28), _short(g["host"] or "", 44)]
             for g in d["worst_gaps"]]
    lines += ["", "  worst gaps:"] + _table(["at ms", "length", "cause", "reason", "before → after", "host"],
                                            worst, indent=4)
    return lines


def _steps_lines(steps: dict) -> list[str]:
    if not steps["count"]:
        return [f"steps: {steps['note']}"]
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in steps["kinds"].items())
    lines = [f"steps: {steps['count']:,} ({kinds})" + (f"; {steps['device_note']}" if steps["device_note"] else "")]
    rows = []
    for scope in ("decode", "all"):
        s = steps[scope]
        if not s["count"]:
            continue
        rows.append([scope, f"{s['count']:,}", fmt_ms(s["step_ms"]["p50"]), fmt_ms(s["step_ms"]["p99"]),
                     fmt_ms(s["step_ms"]["mean"]), fmt_ms(s["gpu_ms"]["p50"]), fmt_ms(s["host_wait_ms"]["mean"]),
                     _pct_text(s["host_wait_pct"]), _pct_text(s["gpu_busy_pct"])])
    lines += _table(["steps", "n", "p50", "p99", "mean", "GPU p50", "wait mean", "host wait", "GPU busy"],
                    rows, indent=2)
    scope_name = "decode steps" if steps["scope"] == "decode" else "all steps"
    if steps["top_kernels"]:
        rows = [[_short(k["name"], 64), k["kind"], fmt_ms(k["total_ms"]), _pct_text(k["share_pct"]),
                 f"{k['count']:,}", f"{k['per_step']:g}"] for k in steps["top_kernels"]]
        lines += ["", f"  top kernels over {scope_name}:"]
        lines += _table(["name", "kind", "time", "share", "count", "per step"], rows, indent=4)
    if steps["worst"]:
        rows = [[f"#{s['index']}", fmt_ms(s["step_ms"]), fmt_ms(s["gpu_ms"]), fmt_ms(s["host_wait_ms"]),
                 _short(s["label"], 44), _short(s["top_host"] or "", 36)] for s in steps["worst"]]
        lines += ["", f"  worst {scope_name}:"]
        lines += _table(["step", "wall", "GPU", "host wait", "annotation", "host while waiting"], rows, indent=4)
    return lines


def _table(headers: list[str], rows: list[list[str]], indent: int = 0) -> list[str]:
    """Columns padded to their widest cell: the first left-aligned, numbers right-aligned."""
    if not rows:
        return []
    widths = [max(len(str(row[k])) for row in [headers, *rows]) for k in range(len(headers))]

    def line(cells):
        out = []
        for k, cell in enumerate(cells):
            cell = str(cell)
            numeric = k > 0 and cell[:1].isdigit()
            out.append(cell.rjust(widths[k]) if numeric else cell.ljust(widths[k]))
        return " " * indent + "  ".join(out).rstrip()

    return [line(headers)] + [line(row) for row in rows]


def fmt_ms(ms: float | None) -> str:
    """A duration in ms, in the unit that reads best, to 3 significant digits."""
    if ms is None:
        return "?"
    if abs(ms) >= 1e3:
        return f"{_sig3(ms / 1e3)} s"
    if abs(ms) >= 1:
        return f"{_sig3(ms)} ms"
    return f"{_sig3(ms * 1e3)} µs"


def fmt_us(us: float | None) -> str:
    return "?" if us is None else fmt_ms(us / 1e3)


def _sig3(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:#.3g}"


def _pct_text(pct: float | None) -> str:
    return "?" if pct is None else f"{pct:.1f} %"


def _short(text: str | None, width: int) -> str:
    text = text or ""
    return text if len(text) <= width else text[:width - 1] + "…"
