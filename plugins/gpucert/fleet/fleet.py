"""What the driver makes of the nodes' metrics.json: per node, its checks' outcomes, its own
verdict line and a few headline figures; per figure, each node's distance from the fleet median.

A node is judged against its own profile's baselines by its own run; what one node cannot see is
that it is slower than its peers. The headline figures are those where a sick node shows first:
NCCL bus bandwidth at the sweep's largest message, the best GEMM TFLOP/s, HBM device-copy GB/s.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# figure → (check, metric, unit): the checks of tests/hardware that measure it
FIGURES = {
    "nccl_busbw_gbps": ("nccl_large_message_busbw", "busbw_gbps", "GB/s"),
    "gemm_tflops": ("gemm_max_achievable", "tflops", "TFLOP/s"),
    "hbm_gbps": ("memory", "gbps", "GB/s"),
}
# the served model's dtype first: nodes compared on the same dtype when they all measured it
GEMM_DTYPES = ("bf16", "fp16", "fp8", "tf32", "fp32")
OUTLIER_PCT = 10.0  # as thresholds.yaml's fleet rule: 10 % below the median fails
FAILED_OUTCOMES = ("failed", "error", "interrupted")


@dataclass
class NodeSummary:
    checks_run: int = 0
    failed: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    verdict_line: str = ""
    status: str = "absent"


def summarize(metrics: dict[str, Any] | None, log_tail: str = "") -> NodeSummary:
    """One node's run from its metrics.json (None: it wrote none) and its log's last lines."""
    doc = metrics or {}
    checks = doc.get("checks") or []
    ran = [c for c in checks if c.get("outcome") not in (None, "pending", "skipped")]
    failed = [c.get("check_id", "?") for c in ran if c.get("outcome") in FAILED_OUTCOMES or c.get("verdict") == "fail"]
    return NodeSummary(checks_run=len(ran), failed=failed, figures=headline_figures(checks),
                       verdict_line=verdict_line(log_tail, doc), status=doc.get("status", "absent"))


def verdict_line(log_tail: str, doc: dict[str, Any]) -> str:
    """The last `gpucert: …` line the node's run printed; else its metrics.json's certification line."""
    for line in reversed(log_tail.splitlines()):
        # the verdict line: CERTIFIED / NOT CERTIFIED, or a study's, a capture's, a burn-in's words
        if line.startswith("gpucert: ") and line[len("gpucert: "):][:1].isupper():
            return line.strip()
    line = (doc.get("certification") or {}).get("line")
    return f"gpucert: {line} (metrics.json{', run unfinished' if doc.get('status') != 'complete' else ''})" \
        if line else ""


def headline_figures(checks: list[dict[str, Any]]) -> dict[str, float]:
    found: dict[str, float] = {}
    for figure, (check, metric, _) in FIGURES.items():
        values = [(m.get("params") or {}, m["value"]) for c in checks if c.get("check") == check
                  for m in c.get("metrics") or [] if m.get("metric") == metric and _measured(m)]
        value = _pick(figure, values)
        if value is not None:
            found[figure] = value
    return found


def _measured(metric: dict[str, Any]) -> bool:
    value = metric.get("value")
    return metric.get("status") == "ok" and isinstance(value, (int, float)) and math.isfinite(value)


def _pick(figure: str, values: list[tuple[dict, float]]) -> float | None:
    if figure == "gemm_tflops":
        for dtype in GEMM_DTYPES:
            of_dtype = [v for params, v in values if params.get("dtype") == dtype]
            if of_dtype:
                return max(of_dtype)
        return None
    if figure == "hbm_gbps":
        copies = [v for params, v in values if params.get("kind") == "device_copy"]
        # the node's slowest GPU: one bad HBM stack is what makes the node the outlier
        return min(copies) if copies else None
    return max(v for _, v in values) if values else None


def medians(summaries: dict[str, NodeSummary], counted: set[str] | None = None) -> dict[str, float]:
    """Per figure, the median over the nodes in `counted` (default all) that measured it."""
    out = {}
    for figure in FIGURES:
        values = [s.figures[figure] for name, s in summaries.items()
                  if figure in s.figures and (counted is None or name in counted)]
        if values:
            out[figure] = statistics.median(values)
    return out


def distance_pct(value: float, median: float) -> float | None:
    """How far `value` is from the median, in % of it (negative: below)."""
    return (value - median) / abs(median) * 100 if median else None


def outliers(summaries: dict[str, NodeSummary], fleet_medians: dict[str, float],
             limit_pct: float = OUTLIER_PCT) -> list[str]:
    """One line per node and figure more than `limit_pct` below the fleet median."""
    lines = []
    for name, summary in sorted(summaries.items()):
        for figure, value in summary.figures.items():
            pct = distance_pct(value, fleet_medians.get(figure, 0.0))
            if pct is not None and pct < -limit_pct:
                lines.append(f"fleet outlier: {name} {figure} {value:.4g} {FIGURES[figure][2]} is {pct:+.1f}% "
                             f"from the fleet median {fleet_medians[figure]:.4g}")
    return lines


def table(rows: list[dict[str, Any]], summaries: dict[str, NodeSummary], fleet_medians: dict[str, float]) -> str:
    """The per-node table (Markdown): state, checks, each figure with its distance from the median."""
    figures = [f for f in FIGURES if f in fleet_medians]
    head = ["node", "host", "IP", "state", "checks run", "failed"] + figures + ["verdict / reason"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in rows:
        summary = summaries[row["name"]]
        cells = [row["name"], row["host"], row["ip"], row["state"], str(summary.checks_run), str(len(summary.failed))]
        for figure in figures:
            value = summary.figures.get(figure)
            pct = distance_pct(value, fleet_medians[figure]) if value is not None else None
            cells.append("—" if value is None else f"{value:.4g}" + (f" ({pct:+.1f}%)" if pct is not None else ""))
        cells.append(summary.verdict_line if row["state"] == "completed" else row["reason"])
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_state(report_dir: Path, rows: list[dict[str, Any]], metrics_by_node: dict[str, dict | None]) -> None:
    """fleet.json (every node's state) and nodes/<name>/metrics.json (the last one it showed), rewritten
    at each poll, so a driver that dies keeps what the nodes measured."""
    for name, metrics in metrics_by_node.items():
        if metrics is not None:
            _write_json(report_dir / "nodes" / name / "metrics.json", metrics)
    _write_json(report_dir / "fleet.json", {"nodes": rows})


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=1))
    partial.replace(path)  # readers (the self-test, a person) never see half a file
