"""Capacity under SLO: the highest Poisson request rate and the highest concurrency at which the
serving load's SLOs (load.slo) hold for ≥ target_pct of requests — a goodput search
(gpucert.studies.capacity_search) whose interval says how sure the answer is. Each probe sends at
least probe_requests requests, more where its load needs them (requests_for_probe: 4 a stream,
30 s of arrivals); a probe that kills the engine is a probe that failed, and the engine restarts
for the next."""

from __future__ import annotations

import pytest

from gpucert.serving.summary import summarize
from gpucert.studies import capacity_search
from gpucert.studies.plan import Point

from ..inference.load import run_level
from .conftest import study_load

pytestmark = pytest.mark.study


def test_slo_capacity(gpucert, plan, study_target, study_loads, capacity_kind, request):
    slo = plan.slo_capacity
    load = study_load(request.config, warmup=0, repeats=1)
    if not load.slo:
        pytest.fail("capacity under SLO needs SLOs (load.slo in serving.yaml, or --load-opt slo=…)", pytrace=False)
    point = Point(f"slo-{capacity_kind}", {})
    state = {"target": study_target(slo.engine, point, load)}
    requests = slo.probe_requests or capacity_search.default_probe_requests(slo.target, max_probes=slo.max_probes)

    def measure(x: float) -> tuple[int, int]:
        if state["target"].crashed():
            state["target"] = study_target(slo.engine, point, load)
        target = state["target"]
        n = capacity_search.requests_for_probe(capacity_kind, x, requests, requests_at=load.requests_at,
                                               min_seconds=slo.probe_seconds)
        if capacity_kind == "rate":
            records = run_level(target, None, n, rate=float(x))
        else:
            records = run_level(target, int(x), n)
        met, total = capacity_search.slo_counts(records.measured, load.slo)
        served = summarize(records.measured)
        study_loads.add_records(records.measured, served.total_output_tokens)
        # kept if the search stops half-way; the misses per SLO and the probe's latency say which
        # SLO bounds the capacity
        gpucert.finding("measured", x=x, met=met, total=total,
                        missed=capacity_search.slo_misses(records.measured, load.slo),
                        output_tok_s=served.output_tokens_per_s if served.completed else None,
                        ttft_ms_p99=served.ttft_ms.get("p99"), tpot_ms_p99=served.tpot_ms.get("p99"))
        return met, total

    low, high = slo.bounds[capacity_kind]
    try:
        result = capacity_search.search_capacity(
            measure, kind=capacity_kind, probe_requests=requests, start=slo.start[capacity_kind], low=low, high=high,
            target=slo.target, max_probes=slo.max_probes, resolution=slo.resolution)
    except ValueError as exc:
        pytest.fail(f"capacity under SLO: {exc}", pytrace=False)
    for probe in result.probes:
        gpucert.finding("probe", **probe.to_dict())
    for notice in result.notices:
        gpucert.finding("search", notice=notice)
    figures = result.metrics()
    name = capacity_search.METRIC_NAMES[capacity_kind]
    slos = ", ".join(f"{k.removesuffix('_ms').upper()} ≤ {v:g} ms" for k, v in load.slo.items())
    if result.capacity is None:
        gpucert.record_error(name, f"{result.label} ({slos})", unit=result.unit)
        return
    bounds = (figures[f"{name}_low"], figures[f"{name}_high"])
    closed = None not in bounds and bounds[0] <= result.capacity <= bounds[1]
    gpucert.record(name, float(result.capacity), unit=result.unit, direction="higher",
                   ci=tuple(float(b) for b in bounds) if closed else None,
                   ci_method=("search interval [surely holds, surely fails), Clopper-Pearson simultaneous over "
                              f"{len(result.probes)} probes, {100 * result.confidence:g}%") if closed else
                   "none: the search left an end of its interval open",
                   note=f"{result.label}; SLOs {slos}; ≥ {requests:,} requests a probe ({load.requests_per_level} a stream, "
                        f"{slo.probe_seconds:g} s of arrivals); {result.stopped}"[:600])
