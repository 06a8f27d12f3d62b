"""Batching: every point of studies.yaml's `batching` grid (max_num_seqs × max_num_batched_tokens ×
max_cudagraph_capture_size, then chunked prefill and async scheduling on and off) served at each
of its concurrency levels with the serving load: throughput against TTFT/TPOT p99, judged like a
serving level. With `batching.repeats` ≥ 2 each point's throughput is also stated against the
grid's first point (vLLM's defaults in the shipped plans) with a Welch interval over the repeats.
The card draws each level's points with their Pareto front and names the best point under the SLOs
(docs/METRICS.md, Studies)."""

from __future__ import annotations

import pytest

from ..inference.load import measure_level
from .conftest import state_change_against_first, study_load

pytestmark = pytest.mark.study


def test_batching(gpucert, plan, study_target, study_results, batching_point, concurrency, request, served_rates):
    load = study_load(request.config, repeats=plan.batching.repeats)
    point = plan.batching.point(batching_point)
    target = study_target(plan.batching.engine, point, load)
    gpucert.finding("point", point=point.id, **{k: str(v) for k, v in point.engine.items()})
    try:
        measure_level(gpucert, target, concurrency)
        if plan.batching.repeats > 1:
            state_change_against_first(gpucert, "batching", plan.batching.points, point, concurrency,
                                       plan.batching.repeats, served_rates)
    finally:  # what was recorded, also of a level that failed: the tuned study chooses from it
        measured = {m.metric: m.value for m in gpucert.metrics}
        study_results.append({"point": point.id, "engine": point.engine, "concurrency": concurrency,
                              **{k: measured.get(k) for k in ("output_tok_s", "tpot_ms_p99", "ttft_ms_p99",
                                                              "slo_attainment_pct")}})
