"""The card's fleet section, from metrics.json alone: one row per node of the Ray cluster — its
state, its own verdict line, its checks, its headline figures and their distance from the fleet
median — the slowest node of each figure named; then NCCL across the nodes: the all-reduce over
every GPU of the fleet, and the pairwise matrix with the suspect nodes and links."""

from __future__ import annotations

from typing import Any

FIGURES = ("nccl_busbw_gbps", "gemm_tflops", "hbm_gbps")


def fleet_view(data: dict[str, Any]) -> dict[str, Any] | None:
    nodes, pairs = node_rows(data), pair_matrix(data)
    if nodes is None and pairs is None:
        return None
    return {**(nodes or {"rows": []}), "pairs": pairs}


def node_rows(data: dict[str, Any]) -> dict[str, Any] | None:
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


def pair_matrix(data: dict[str, Any]) -> dict[str, Any] | None:
    """node × node: each pair's all-reduce bus bandwidth, its distance from the healthy-pair
    reference and its verdict; the suspects the diagnosis named; the whole fleet's all-reduce."""
    cells, suspects_nodes, suspects_links, reference = {}, set(), set(), None
    for check in data["checks"]:
        if check["check"] != "fleet_pair" or check["outcome"] == "skipped":
            continue
        found = next(iter((check.get("findings") or {}).get("pair", [])), None)
        if not found:
            continue
        values = {m["metric"]: m.get("value") for m in check.get("metrics", [])}
        cell = {"busbw": values.get("busbw_gbps"), "distance": values.get("vs_pair_reference_pct"),
                "verdict": check.get("verdict"), "suspect": found.get("suspect")}
        cells[(found["a"], found["b"])] = cells[(found["b"], found["a"])] = cell
        reference = found.get("reference_gbps", reference)
        suspects_nodes.update(n for n in str(found.get("suspect_nodes", "none")).split(", ") if n != "none")
        suspects_links.update(n for n in str(found.get("suspect_links", "none")).split(", ") if n != "none")
    across = next((m.get("value") for c in data["checks"] if c["check"] == "fleet_nccl_large_message_busbw"
                   for m in c.get("metrics", []) if m["metric"] == "busbw_gbps"), None)
    if not cells and across is None:
        return None
    names = sorted({a for a, _ in cells})
    return {"names": names, "cells": {f"{a}|{b}": cell for (a, b), cell in cells.items()}, "reference": reference,
            "suspect_nodes": sorted(suspects_nodes), "suspect_links": sorted(suspects_links), "across_busbw": across}
