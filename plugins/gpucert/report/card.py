"""Render report.html from metrics.json with jinja2 (autoescaped, self-contained: inline CSS, no
scripts or assets fetched from anywhere)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from .. import __version__, redaction
from ..certification import NOT_APPLICABLE, decide
from ..judge import interval_text
from ..progress import duration_text
from ..metrics import metric_check_id
from . import charts
from .burnin_view import burnin_view
from .fleet_view import fleet_view
from .workloads_view import workloads_view
from .forensics_view import forensics_view
from .studies_view import batching_view, kv_capacity_view, precision_view, slo_capacity_view, tuned_view

_TEMPLATES = Path(__file__).parent / "templates"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
    autoescape=True,  # every string on the card is escaped: check ids, errors, versions, paths
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def number(value: Any) -> str:
    """Numbers as an engineer reads them: 4 significant digits, thousands separated."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude == 0 or magnitude >= 1:
        return f"{value:.4g}"
    return f"{value:.3g}"


def percent(value: Any) -> str:
    return "—" if value is None or isinstance(value, str) else f"{value:+.1f}%"


def interval(ci: Any) -> str:
    """A delta's 95 % interval beside it, as the failure line writes it; nothing without one."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or not all(isinstance(v, (int, float)) for v in ci):
        return ""
    return interval_text((ci[0], ci[1]))


def breakable(check_id: str) -> Markup:
    """A check id escaped, with line-break chances after its brackets and commas: a long id
    (`gemm_square[dtype=fp8,shape=square-16384]`) wraps between its parameters instead of
    widening the checks table; <wbr> is not text, so a copied id still selects the same test."""
    return Markup(str(escape(check_id)).replace(",", ",<wbr>").replace("[", "[<wbr>"))


def finding_cell(value: Any) -> Any:
    """A findings table's cell: a float to 6 significant digits (a probe's 0.996513 against its
    0.99 target stays readable, 116.25508799988893 ms does not need its 17), anything else as is."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.6g}"
    return value


def finding_columns(rows: list[dict]) -> list[str]:
    """The columns of a findings table: every key any row has, in first-seen order (rows of one
    kind may differ: a notice beside the settings), except those holding nested data — a
    trace's analysis, drawn in its own section, is not a table cell."""
    columns: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if not isinstance(value, (dict, list)):
                columns.setdefault(key)
    return list(columns)


_ENV.filters["finding_columns"] = finding_columns
_ENV.filters["finding_cell"] = finding_cell
_ENV.filters["breakable"] = breakable
_ENV.filters["number"] = number
_ENV.filters["percent"] = percent
_ENV.filters["interval"] = interval
_ENV.filters["duration"] = duration_text


def skipped_groups(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per skip reason, most checks first: {reason, ids, not_applicable} — 114 NCCL sizes
    skipped for one reason are one row, their ids folded."""
    groups: dict[str, list[str]] = {}
    for entry in data.get("skipped") or []:
        groups.setdefault(str(entry.get("reason") or "no reason given"), []).append(entry["check_id"])
    return [{"reason": reason.removeprefix(NOT_APPLICABLE), "ids": ids, "not_applicable": reason.startswith(NOT_APPLICABLE)}
            for reason, ids in sorted(groups.items(), key=lambda item: -len(item[1]))]


SERVING_COLUMNS = ("output_tok_s", "total_tok_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99",
                   "itl_ms_p99", "failed_requests", "slo_attainment_pct", "goodput_requests_per_s",
                   # from the resource monitor, when it ran: is the GPU busy, and at what energy cost
                   "gpu_util_mean_pct", "energy_j_per_output_token")


def serving_view(data: dict[str, Any]) -> dict[str, Any] | None:
    """The concurrency table and curves: one row per level of serving_baseline, with the offline
    figure of the same level beside the served one."""
    def by_level(check_name: str) -> dict[int, dict]:
        levels = {}
        for check in data["checks"]:
            if check["check"] == check_name and "concurrency" in check["params"]:
                levels[int(check["params"]["concurrency"])] = check
        return levels

    served, offline = by_level("serving_baseline"), by_level("offline_throughput")
    if all(check["outcome"] == "skipped" for check in [*served.values(), *offline.values()]):
        return None  # no level ran (or none exists): no table of dashes

    def value(check: dict | None, metric: str) -> float | None:
        for m in (check or {}).get("metrics", []):
            if m["metric"] == metric and isinstance(m.get("value"), (int, float)):
                return m["value"]
        return None

    rows = []
    for level in sorted(set(served) | set(offline)):
        row = {"concurrency": level, "verdict": (served.get(level) or offline.get(level))["verdict"],
               "offline_tok_s": value(offline.get(level), "output_tok_s")}
        row.update({column: value(served.get(level), column) for column in SERVING_COLUMNS})
        # what the server front end keeps of what the engine can do (0.23 at 256 streams with one
        # API server on 2× H100: docs/evidence/issue-4-inference)
        row["served_share"] = (row["output_tok_s"] / row["offline_tok_s"]
                               if row["output_tok_s"] and row["offline_tok_s"] else None)
        rows.append(row)
    throughput = charts.line_chart(
        "Output tokens/s by concurrency", "concurrency (streams; offline: prompts)", "tok/s",
        {"served": [(r["concurrency"], r["output_tok_s"]) for r in rows],
         "offline (LLM.generate)": [(r["concurrency"], r["offline_tok_s"]) for r in rows]})
    latency = charts.line_chart(
        "Latency by concurrency (log scale)", "concurrency (streams)", "ms",
        {"TTFT p99": [(r["concurrency"], r["ttft_ms_p99"]) for r in rows],
         "TPOT p99": [(r["concurrency"], r["tpot_ms_p99"]) for r in rows]},
        log_y=True)  # TPOT of a few ms and a queued TTFT of minutes on one chart
    return {"rows": rows, "charts": [c for c in (throughput, latency) if c]}


def monitor_view(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per monitored check: GPU utilization and KV cache %, power and memory, and the check's own
    series (e.g. streamed output tok/s) against the same seconds, so a spike lines up."""
    views = []
    for check in data["checks"]:
        mon = check.get("monitor") or {}
        timeline = mon.get("timeline") or {}
        if not timeline.get("t_s"):
            continue
        t, series = timeline["t_s"], timeline["series"]

        def pick(*names):
            return {name: list(zip(t, series[name])) for name in names if name in series}  # noqa: B023 -- this check's only
        overlays = {name: list(zip(o["t_s"], o["values"])) for name, o in (mon.get("overlays") or {}).items()}
        right = {"output tok/s": overlays.pop("output tok/s")} if "output tok/s" in overlays else None
        charts_ = [charts.line_chart(f"{check['check_id']}: utilization", "s from the check's start", "%",
                                     pick("GPU util % (mean)", "KV cache %"), log2_x=False,
                                     right=right, right_label="tok/s"),
                   charts.line_chart(f"{check['check_id']}: power", "s from the check's start", "W",
                                     pick("power W (sum)"), log2_x=False, right=right, right_label="tok/s"),
                   charts.line_chart(f"{check['check_id']}: memory", "s from the check's start", "GiB",
                                     pick("GPU memory GiB (sum)"), log2_x=False),
                   charts.line_chart(f"{check['check_id']}: engine queue", "s from the check's start", "requests",
                                     pick("vLLM running", "vLLM waiting"), log2_x=False,
                                     # a remote --endpoint has no local GPU charts: tok/s here too
                                     right=right, right_label="tok/s"),
                   charts.line_chart(f"{check['check_id']}: the check's own series", "s from the check's start",
                                     "per s", overlays, log2_x=False) if overlays else ""]
        views.append({"check_id": check["check_id"], "samples": mon.get("samples"), "file": mon.get("file"),
                      "jitter_ms": mon.get("jitter_ms") or {}, "window_s": mon.get("window_s"), "loads": mon.get("loads"),
                      "charts": [c for c in charts_ if c]})
    return views


# the checks whose figures say "this node reaches its physics": the best GEMM, HBM and host
# copies, GPU-to-GPU copies, the NCCL bus bandwidth at the largest size (the sweeps' every size
# stays in the checks table)
PHYSICS_CHECKS = ("gemm_max_achievable", "memory", "p2p", "nccl_large_message_busbw")


def physics_view(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Measured against the datasheet peak of this GPU model, with the verdict."""
    rows = []
    for check in data["checks"]:
        if check["check"] not in PHYSICS_CHECKS:
            continue
        for m in check["metrics"]:
            if isinstance(m.get("peak"), (int, float)) and isinstance(m.get("value"), (int, float)) and m["peak"]:
                rows.append({"check_id": metric_check_id(m), "metric": m["metric"], "value": m["value"],
                             "unit": m["unit"], "peak": m["peak"], "fraction": m["value"] / m["peak"],
                             "verdict": m.get("verdict"), "threshold": m.get("threshold") or "",
                             # which figure is which: seconds of back-to-back work, or a burst of repetitions
                             "timing": m.get("method") or "burst"})
    return rows


def trend_view(data: dict[str, Any]) -> dict[str, Any] | None:
    """Each headline metric over the history's last runs and this one (the last point), with a
    dashed line where the stack changed between two runs, lettered, and the changes listed."""
    trends = data.get("trends") or []
    if not trends:
        return None
    drift = trends[0]["drift"]  # the same runs for every metric
    letters = {d["after"]: chr(ord("A") + i % 26) for i, d in enumerate(drift)}
    charts_ = []
    for trend in trends:
        points = [(p["run"] + 1, p["value"]) for p in trend["points"]]
        if len(points) < 2:
            continue
        marks = [(d["after"] + 0.5, letters[d["after"]]) for d in drift]
        runs = sorted({x for x, _ in points})
        charts_.append(charts.line_chart(f"{trend['check_id']} {trend['metric']}", "run (the last is this one)",
                                         trend["unit"] or "", {trend["metric"]: points}, log2_x=False,
                                         marks=marks, x_ticks=runs if len(runs) <= 12 else None))
    runs = max((p["run"] for t in trends for p in t["points"]), default=0) + 1
    return {"charts": [c for c in charts_ if c], "runs": runs, "metrics": len(trends),
            "drift": [{"letter": letters[d["after"]], "between": (d["after"], d["after"] + 1), "when": d["when"],
                       "changes": d["changes"]} for d in drift]}


def regressions_of(data: dict[str, Any]) -> list[tuple[dict, dict]]:
    """(check, metric) of every failed or warned metric: failures first (in check order), then
    warnings — the card's first table is what blocks."""
    return sorted(((check, metric) for check in data["checks"] for metric in check["metrics"]
                   if metric.get("verdict") in ("fail", "warn")),
                  key=lambda pair: pair[1]["verdict"] != "fail")


def render(data: dict[str, Any]) -> str:
    cert = data.get("certification")
    if cert and "badge" not in cert:  # a metrics.json from before the badge was kept: its words again
        data = {**data, "certification": {**cert, "badge": decide(data)["badge"]}}
    regressions = regressions_of(data)
    failed_without_metric = [c for c in data["checks"] if c["outcome"] in ("failed", "error", "interrupted", "pending")
                             and not any(m.get("verdict") == "fail" for m in c["metrics"])]
    return _ENV.get_template("card.html.j2").render(
        run=data, regressions=regressions, failed_without_metric=failed_without_metric, version=__version__,
        serving=serving_view(data), monitored=monitor_view(data), trends=trend_view(data),
        physics=physics_view(data), skipped_groups=skipped_groups(data),
        kv_capacity=kv_capacity_view(data), batching=batching_view(data), tuned=tuned_view(data),
        slo_capacity=slo_capacity_view(data), precision=precision_view(data),
        forensics=forensics_view(data), burnin=burnin_view(data), fleet=fleet_view(data),
        workloads=workloads_view(data),
    )


def write(report_dir: str | Path) -> dict[str, Any]:
    """report.html from the folder's metrics.json; returns that data (the other outputs use it).
    Redacted twice: the data (a metrics.json from elsewhere may carry a secret of this process),
    and the page itself (in case a chart or view quotes something the data did not)."""
    report_dir = Path(report_dir)
    data = redaction.redact_obj(json.loads((report_dir / "metrics.json").read_text()))
    (report_dir / "report.html").write_text(redaction.redact(render(data)))
    return data
