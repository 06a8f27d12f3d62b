"""The card's study sections, from metrics.json alone: per KV-capacity configuration what vLLM
reported against what the probes measured, with the latency curves; per batching level the points'
throughput against TPOT p99, their Pareto front and the best point under the SLOs; per precision
variant its served throughput against the first variant and its accuracy against the reference,
each change with its interval drawn as a whisker."""

from __future__ import annotations

import math
import re
from typing import Any

from gpucert.studies.analysis import best_under_slo, onset_bracket, pareto_front

from . import charts


def _metrics(check: dict) -> dict[str, dict]:
    """A check's metrics that have a number, by name."""
    return {m["metric"]: m for m in check.get("metrics", []) if isinstance(m.get("value"), (int, float))}


def _values(check: dict) -> dict[str, float]:
    return {name: m["value"] for name, m in _metrics(check).items()}


def _whisker(label: str, metric: dict | None) -> tuple[str, float | None, float | None, float | None]:
    ci = (metric or {}).get("ci") or (None, None)
    return label, (metric or {}).get("value"), ci[0], ci[1]


def kv_capacity_view(data: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for check in data["checks"]:
        if check["check"] != "kv_capacity" or check["outcome"] == "skipped":
            continue
        values = _values(check)
        probes = [row for row in (check.get("findings") or {}).get("probe", []) if row.get("phase") == "onset"]
        marks = [(values[key], label) for key, label in (("predicted_onset_concurrency", "predicted"),
                                                         ("preemption_onset_concurrency", "measured"))
                 if values.get(key)]
        chart = charts.line_chart(
            f"{check['check_id']}: latency and preemptions by concurrency", "concurrent requests (one wave)", "ms",
            {"TTFT p99": [(r["concurrency"], r.get("ttft_ms_p99")) for r in probes],
             "TPOT p99": [(r["concurrency"], r.get("tpot_ms_p99")) for r in probes]},
            right={"preemptions": [(r["concurrency"], r.get("preemptions")) for r in probes]},
            # linear x: the probes crowd around the onset (bisected to 2 %), which a log2 axis squeezes
            right_label="preemptions", log_y=True, marks=marks, log2_x=False)
        # the onset lies in (last clean level, measured onset]: the search's resolution, shown
        out.append({"check": check, "values": values, "probes": probes, "chart": chart,
                    "last_clean": onset_bracket(probes)[0] if values.get("preemption_onset_concurrency") else None})
    return out


def batching_view(data: dict[str, Any]) -> list[dict[str, Any]]:
    levels: dict[int, list[dict]] = {}
    for check in data["checks"]:
        if check["check"] != "batching" or check["outcome"] == "skipped":
            continue
        values = _values(check)
        point = next(iter((check.get("findings") or {}).get("point", [])), {}).get("point") or check["check_id"]
        # with batching.repeats ≥ 2: the point's throughput against the grid's first, with its interval
        change = _metrics(check).get("output_tok_s_delta_pct")
        levels.setdefault(int(check["params"].get("concurrency", 0)), []).append(
            {"point": point, "verdict": check["verdict"], **values, "change": change})
    out = []
    for level, rows in sorted(levels.items()):
        scored = [r for r in rows if r.get("output_tok_s") is not None and r.get("tpot_ms_p99") is not None]
        front = {id(scored[i]) for i in pareto_front([(r["output_tok_s"], r["tpot_ms_p99"]) for r in scored])}
        best = best_under_slo(scored)
        for r in rows:
            r["on_front"], r["best"] = id(r) in front, r is best
        changed = [r for r in rows if r["change"]]
        reference = next((r["point"] for r in rows if not r["change"]), None) if changed else None
        method = next((r["change"].get("ci_method") for r in changed if r["change"].get("ci_method")), None)
        caveat = None
        ci = (best or {}).get("change") and best["change"].get("ci")
        if ci:
            lead = f"{best['change']['value']:+.1f} % [{ci[0]:+.1f} %, {ci[1]:+.1f} %]"
            if ci[0] <= 0 <= ci[1]:
                # the most tok/s by one mean is not a proven gain: say so where the interval holds no change
                caveat = f"{best['point']}'s lead over {reference} is within its interval ({lead}): not shown to serve more"
            else:
                # each point's repeats share one engine start, so the interval leaves out how much a
                # fresh start moves throughput: on session 30's and 31's H100s chunked prefill off
                # measured -7.1 % (one run) and then +16.1 % [+1.5, +32.8] against the same defaults
                caveat = (f"{best['point']}'s lead over {reference} ({lead}) is from repeats on one engine start "
                          "a point, without the start-to-start spread: a candidate until the tuned study reruns "
                          "both on fresh engine starts")
        chart = charts.scatter_chart(
            f"concurrency {level}: output tok/s against TPOT p99", "TPOT p99 (ms)", "output tok/s",
            [(r["tpot_ms_p99"], r["output_tok_s"], r["point"]) for r in scored],
            front=[(r["tpot_ms_p99"], r["output_tok_s"]) for r in scored if r["on_front"]],
            best=(best["tpot_ms_p99"], best["output_tok_s"]) if best else None)
        # the same points against TTFT p99, with that pairing's own front
        timed = [r for r in scored if r.get("ttft_ms_p99") is not None]
        ttft_front = [timed[i] for i in pareto_front([(r["output_tok_s"], r["ttft_ms_p99"]) for r in timed])]
        ttft_chart = charts.scatter_chart(
            f"concurrency {level}: output tok/s against TTFT p99", "TTFT p99 (ms)", "output tok/s",
            [(r["ttft_ms_p99"], r["output_tok_s"], r["point"]) for r in timed],
            front=[(r["ttft_ms_p99"], r["output_tok_s"]) for r in ttft_front],
            best=(best["ttft_ms_p99"], best["output_tok_s"]) if best and best.get("ttft_ms_p99") is not None else None)
        out.append({"concurrency": level, "rows": sorted(rows, key=lambda r: -(r.get("output_tok_s") or 0)),
                    "best": best, "chart": chart + ttft_chart, "reference": reference, "method": method,
                    "caveat": caveat})
    return out


def tuned_view(data: dict[str, Any]) -> dict[str, Any] | None:
    """The tuned configuration's story: the gain with its interval, the settings and the `vllm
    serve` line, why in words, default against tuned side by side."""
    for check in data["checks"]:
        if check["check"] != "tuned" or check["outcome"] == "skipped":
            continue
        rows = (check.get("findings") or {}).get("tuned", [])
        story = next((r for r in rows if "point" in r), None)
        notices = [r["notice"] for r in rows if "notice" in r]
        metrics = _metrics(check)
        # each side's mean over the engine starts and the gains, every one with its interval
        chart = (charts.interval_chart("output tok/s, mean over engine starts", "tok/s, 95% interval",
                                       [_whisker(label, metrics.get(name)) for label, name in (
                                           ("served default", "default_output_tok_s"),
                                           ("served tuned", "tuned_output_tok_s"),
                                           ("offline default", "offline_default_output_tok_s"),
                                           ("offline tuned", "offline_tuned_output_tok_s"))], reference=None)
                 + charts.interval_chart("tuned over the defaults", "gain (%), 95% interval",
                                         [_whisker(label, metrics.get(name)) for label, name in (
                                             ("served", "served_gain_pct"), ("offline", "offline_gain_pct"))]))
        return {"check": check, "story": story, "notices": notices, "values": _values(check), "chart": chart}
    return None


def slo_capacity_view(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per search (rate, concurrency): the capacity, its interval in words, and each probe's share
    of requests within the SLOs against the target."""
    out = []
    for check in data["checks"]:
        if check["check"] != "slo_capacity" or check["outcome"] == "skipped":
            continue
        probes = sorted((check.get("findings") or {}).get("probe", []), key=lambda p: p["x"])
        metric = next((m for m in check["metrics"] if m["metric"].startswith("slo_capacity_")), None)
        marks = [(metric["value"], "capacity")] if metric and isinstance(metric.get("value"), (int, float)) else []
        chart = charts.line_chart(
            f"{check['check_id']}: requests within the SLOs", "request rate (req/s)" if "rate" in check["check_id"]
            else "concurrency (streams)", "%",
            {"within SLO": [(p["x"], 100 * p["attainment"]) for p in probes if p.get("attainment") is not None],
             "95% interval, low": [(p["x"], 100 * p["ci_low"]) for p in probes],
             "95% interval, high": [(p["x"], 100 * p["ci_high"]) for p in probes]}, marks=marks,
            **_near_the_target(probes))
        rows = _probe_rows(probes, (check.get("findings") or {}).get("measured", []))
        out.append({"check": check, "metric": metric, "probes": probes, "chart": chart, "rows": rows,
                    # each SLO's key in a probe's misses with the words the card heads its column with
                    "slos": [(name, _SLO_WORDS.get(name, name)) for name in (rows[0]["missed"] if rows else {})
                             if name != "failed"],
                    "bound_by": _bound_by(rows),
                    "notices": [f["notice"] for f in (check.get("findings") or {}).get("search", [])]})
    return out


def _near_the_target(probes: list[dict]) -> dict[str, Any]:
    """The attainment chart's y axis from just below its lowest point (or the target) to 100 %,
    the target drawn across it: on 0-100 % a probe at 98.1 % against a 99 % target looks like one
    at 100 %. The points run along the top, so the legend goes bottom left. A run from before
    probes kept their target draws no target line."""
    targets = {p["target"] for p in probes if isinstance(p.get("target"), (int, float))}
    lows = [100 * p["ci_low"] for p in probes if isinstance(p.get("ci_low"), (int, float))]
    lows += [100 * t for t in targets]
    if not lows:
        return {}
    lowest = min(lows)
    low = max(0.0, math.floor(lowest - max(0.5, 0.15 * (100 - lowest))))
    return {"y_range": (low, 100.0), "legend": "bottom left",
            "levels": [(100 * t, f"target {100 * t:g} %") for t in sorted(targets)]}


def _probe_rows(probes: list[dict], measured: list[dict]) -> list[dict]:
    """Each probe in x order with what its load measured (misses per SLO, throughput, latency);
    a run from before those were kept has its probes alone."""
    by_x = {m["x"]: m for m in measured}
    rows = []
    for probe in probes:
        load = by_x.get(probe["x"], {})
        rows.append({**probe, "missed": load.get("missed") or {},
                     **{k: load.get(k) for k in ("output_tok_s", "ttft_ms_p99", "tpot_ms_p99")}})
    return rows


_SLO_WORDS = {"ttft_ms": "TTFT", "tpot_ms": "TPOT", "e2e_ms": "end-to-end latency", "failed": "failed requests"}


def _bound_by(rows: list[dict]) -> str | None:
    """Which SLO the capacity ran into: at the lowest probe that failed, the miss that most
    requests had (with the counts), or None where no probe failed or none kept its misses."""
    failed = next((r for r in rows if r.get("verdict") == "fails" and any(r["missed"].values())), None)
    if failed is None:
        return None
    counts = sorted(((n, k) for k, n in failed["missed"].items() if n), reverse=True)
    parts = ", ".join(f"{n:,} missed {_SLO_WORDS.get(k, k)}" if k != "failed" else f"{n:,} failed" for n, k in counts)
    return (f"{_SLO_WORDS.get(counts[0][1], counts[0][1])} bounds it: at {failed['x']:,.4g}, the lowest probe that "
            f"failed, {parts} of {failed['total']:,} requests")


# below this mean GPU utilization over the served levels, the serving path (API server, scheduling)
# rather than the GPU set the pace: the variants' throughputs then say little about the precision
# (session 23, H100: 25-28 % at concurrency 1,024 with one API server, all four within 9 %)
FRONT_END_BOUND_UTIL_PCT = 50.0


def precision_view(data: dict[str, Any]) -> dict[str, Any] | None:
    """Per served level the variants' throughput (each against the plan's first variant, with its
    Welch interval over the repeats) and latency; per variant its accuracy against the reference
    (perplexity change and greedy agreement with their intervals over documents); a notice where
    the GPU sat mostly idle during the served levels."""
    levels: dict[int, list[dict]] = {}
    accuracy: list[dict] = []
    for check in data["checks"]:
        if check["outcome"] == "skipped" or check["check"] not in ("precision", "precision_accuracy"):
            continue
        row = {"point": check["params"].get("precision_point") or check["check_id"], "verdict": check["verdict"],
               "metrics": _metrics(check)}
        if check["check"] == "precision":
            levels.setdefault(int(check["params"].get("concurrency", 0)), []).append(row)
        else:
            accuracy.append(row)
    if not levels and not accuracy:
        return None
    served = []
    for level, rows in sorted(levels.items()):
        changes = [_whisker(r["point"], r["metrics"].get("output_tok_s_delta_pct")) for r in rows]
        reference = next((r["point"] for r in rows if "output_tok_s_delta_pct" not in r["metrics"]), None)
        chart = charts.interval_chart(f"concurrency {level}: output tok/s against {reference or 'the first variant'}",
                                      "change (%), 95% interval", changes)  # the reference: no value, no row
        method = next((r["metrics"]["output_tok_s_delta_pct"].get("ci_method") for r in rows
                       if "output_tok_s_delta_pct" in r["metrics"]), None)
        served.append({"concurrency": level, "rows": rows, "reference": reference, "chart": chart, "method": method})
    utils = [r["metrics"]["gpu_util_mean_pct"]["value"] for level in served for r in level["rows"]
             if "gpu_util_mean_pct" in r["metrics"]]
    notice = None
    if utils and max(utils) < FRONT_END_BOUND_UTIL_PCT:
        busy = f"{min(utils):.0f}" + (f"-{max(utils):.0f}" if round(max(utils)) != round(min(utils)) else "")
        notice = (f"The GPU was busy {busy} % (mean over each level): the serving path, "
                  "not the GPU, set the pace, so these throughputs say little about the precision. Serve the "
                  "variants on a configuration that keeps the GPU busy (precision.engine: e.g. the tuned "
                  "configuration's API servers and CUDA graphs).")
    charts_acc = ""
    if accuracy:
        charts_acc = (charts.interval_chart("perplexity against the reference", "change (%), 95% interval",
                                            [_whisker(r["point"], r["metrics"].get("delta_ppl_pct")) for r in accuracy])
                      + charts.interval_chart("greedy-token agreement with the reference", "% of positions, 95% interval",
                                              [_whisker(r["point"], r["metrics"].get("greedy_agreement_pct"))
                                               for r in accuracy], reference=100.0))
    # one line per method: a variant's design effect (how clustered its flips are) stays in metrics.json
    methods = sorted({re.sub(r" \(design effect [^)]*\)", "", m["ci_method"]) for r in accuracy
                      for name, m in r["metrics"].items()
                      if name in ("delta_ppl_pct", "greedy_agreement_pct") and m.get("ci_method")})
    note = next((m.get("note") for r in accuracy for m in r["metrics"].values() if m.get("note")), None)
    return {"served": served, "accuracy": accuracy, "accuracy_chart": charts_acc, "notice": notice,
            "accuracy_methods": methods, "accuracy_note": note}
