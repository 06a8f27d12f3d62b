"""The card's workloads section, from metrics.json alone: one row per workload point — its workload
and level, the prefix cache on or off, throughput, TTFT p50/p99, the hit rate vLLM counted beside
what the prompts imply, the TTFT the cache saved, a replay's schedule lag."""

from __future__ import annotations

from typing import Any

COLUMNS = ("output_tok_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "prefix_cache_hit_pct",
           "expected_prefix_hit_pct", "ttft_cache_saving_pct", "schedule_lag_ms_p99")


def workloads_view(data: dict[str, Any]) -> dict[str, Any] | None:
    rows = []
    for check in data["checks"]:
        if check["check"] != "serving_workloads" or check["outcome"] == "skipped":
            continue
        found = next(iter((check.get("findings") or {}).get("workload", [])), {})
        values = {m["metric"]: m.get("value") for m in check.get("metrics", [])}
        rows.append({"point": (check.get("params") or {}).get("workload_point", check["check_id"]),
                     "workload": found.get("workload"), "dataset": found.get("dataset"),
                     "level": found.get("level"), "cache": found.get("prefix_cache"), "check": check,
                     "values": {c: values.get(c) for c in COLUMNS}})
    return {"rows": rows, "columns": COLUMNS} if rows else None
