"""What users feel at each concurrency level: output tok/s, TTFT, TPOT and ITL, judged against the
profile's baselines and the SLOs in thresholds.yaml. Levels come from the load settings
(serving.yaml; `--load-opt concurrency=1,16,64`)."""

import pytest

from gpucert.serving.summary import (client_check, itl_gaps_s, measured_window, summarize, throughput_series,
                                     token_count_mismatches, tpot_s)

from load import run_level

pytestmark = pytest.mark.inference


def _ms(values):
    return [v * 1e3 for v in values if v is not None]


def test_serving_baseline(gpucert, serving, concurrency):
    if serving.crashed():
        pytest.fail(f"the engine is down before this level: {serving.crashed()}", pytrace=False)
    run = run_level(serving, concurrency, serving.load.requests_at(concurrency))
    records = run.measured
    summary = summarize(records, serving.load.slo)
    ok = [r for r in records if r.ok]

    gpucert.record("failed_requests", summary.failed, unit="requests", direction="lower",
                   note="; ".join(sorted({r.error for r in records if r.error}))[:500] or None)
    wrong = token_count_mismatches(records, exact=serving.load.ignore_eos)
    gpucert.record("token_count_mismatches", len(wrong), unit="requests", direction="lower")
    if ok:
        gpucert.record("output_tok_s", summary.output_tokens_per_s, unit="tok/s", direction="higher")
        gpucert.record("total_tok_s", summary.total_tokens_per_s, unit="tok/s", direction="higher")
        gpucert.record("requests_per_s", summary.requests_per_s, unit="req/s", direction="higher")
    if summary.slo_attainment_pct is not None:
        slo = ", ".join(f"{name.removesuffix('_ms').upper()} ≤ {limit:g} ms" for name, limit in summary.slos.items())
        gpucert.record("slo_attainment_pct", summary.slo_attainment_pct, unit="%", direction="higher",
                       note=f"requests meeting every SLO ({slo}) of all measured")
        gpucert.record("goodput_requests_per_s", summary.goodput_requests_per_s, unit="req/s", direction="higher")
        ttft = _ms(r.first_token_at - r.sent_at for r in ok)
        tpot = _ms(tpot_s(r) for r in ok)
        itl = _ms(g for r in ok for g in itl_gaps_s(r))
        for name, dist, samples in (("ttft_ms", summary.ttft_ms, ttft), ("tpot_ms", summary.tpot_ms, tpot)):
            if dist.get("count"):
                gpucert.record(f"{name}_p50", dist["p50"], unit="ms", direction="lower", samples=samples)
                gpucert.record(f"{name}_p99", dist["p99"], unit="ms", direction="lower", samples=samples)
        if summary.itl_ms.get("count"):
            gpucert.record("itl_ms_p99", summary.itl_ms["p99"], unit="ms", direction="lower", samples=itl)
    # for the resource monitor: its figures over the measured requests, joules per output token,
    # and the streamed tok/s drawn over its GPU charts
    gpucert.work(output_tokens=summary.total_output_tokens, window=measured_window(records))
    gpucert.timeline("output tok/s", *throughput_series(records))
    client = client_check(run)
    for notice in client.get("notices") or []:
        gpucert.finding("client", notice=notice)
    if client["loop_lag_ms"]["p99"] is not None:
        gpucert.record("client_loop_lag_ms_p99", client["loop_lag_ms"]["p99"], unit="ms", direction="lower",
                       note="the load generator's own event-loop lag: high means the client, not the server, limits")

    crashed = serving.crashed(grace_s=2.0 if summary.failed else 0.0)
    if crashed:
        pytest.fail(f"the engine died during this level ({summary.completed} of {len(records)} requests "
                    f"completed, kept on the card): {crashed}", pytrace=False)
