"""The card's fleet section, from metrics.json alone: one row per node of the Ray cluster — its
state, its own verdict line, its checks, its headline figures and their distance from the fleet
median — the slowest node of each figure named."""

from __future__ import annotations

from typing import Any

FIGURES = ("nccl_busbw_gbps", "gemm_tflops", "hbm_gbps")


def fleet_view(data: dict[str, Any]) -> dict[str, Any] | None:
    rows = []
    for check in data["checks"]:
        if check["check"] != "fleet_node" or check["outcome"] == "skipped":
            continue
        node = next(iter((check.get("findings") or {}).get("node", [])), {})
        values, distance = {}, {}
        for metric in check.get("metrics", []):
            if metric["metric"] == "vs_fleet_median_pct":
                distance[(metric.get("params") or {}).get("figure")] = metric.get("value")
            else:
                values[metric["metric"]] = metric.get("value")
        rows.append({"node": (check.get("params") or {}).get("node", check["check_id"]), "host": node.get("host"),
                     "state": node.get("state"), "verdict_line": node.get("verdict"), "check": check,
                     "checks_run": values.get("node_checks_run"), "checks_failed": values.get("node_checks_failed"),
                     "figures": {f: (values.get(f), distance.get(f)) for f in FIGURES}})
    if not rows:
        return None
    slowest = {}
    for figure in FIGURES:
        known = [(r["figures"][figure][1], r["node"]) for r in rows if r["figures"][figure][1] is not None]
        if known:
            slowest[figure] = min(known)
    return {"rows": rows, "figures": FIGURES, "slowest": slowest}
