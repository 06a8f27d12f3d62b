"""Serving metric formulas on hand-built records (DESIGN.md, "Serving")."""

from __future__ import annotations

import numpy as np
import pytest

from gpucert.serving.loadgen import SSEParser, arrival_offsets
from gpucert.serving.records import RequestRecord, RunRecords
from gpucert.serving.summary import (client_check, distribution, error_breakdown, itl_gaps_s,
                                     summarize, throughput_series)


def record(sent, times, output_tokens, prompt_tokens=10, request_id=0):
    return RequestRecord(request_id=request_id, scheduled_at=sent, sent_at=sent,
                         first_token_at=times[0], token_times=list(times), ended_at=times[-1],
                         output_tokens=output_tokens, prompt_tokens=prompt_tokens, status="ok",
                         http_status=200)


def test_chunk_of_k_tokens_gives_one_gap_then_zeros():
    # 3 chunks of 4 tokens at 0.05, 0.06, 0.07
    r = record(0.0, [0.05] * 4 + [0.06] * 4 + [0.07] * 4, 12)
    gaps = np.round(np.array(itl_gaps_s(r)) * 1000, 9)
    assert list(gaps) == [10, 0, 0, 0, 10, 0, 0, 0]


def test_ttft_tpot_e2e_and_rates():
    a = record(0.0, [0.1, 0.2, 0.3], 3)
    b = record(1.0, [1.2], 1, request_id=1)  # one token: no TPOT
    failed = RequestRecord(request_id=2, scheduled_at=0.5, sent_at=0.5, ended_at=2.0,
                           error="HTTP 500: boom", http_status=500)
    s = summarize([a, b, failed], slos={"ttft_ms": 150})
    assert s.ttft_ms["p50"] == pytest.approx(150.0)
    assert s.tpot_ms["count"] == 1 and s.tpot_ms["mean"] == pytest.approx(100.0)
    assert s.e2e_ms["max"] == pytest.approx(300.0)
    assert s.completed == 2 and s.failed == 1
    assert s.duration_s == pytest.approx(2.0)  # first send → last end, failures included
    assert s.output_tokens_per_s == pytest.approx(4 / 2.0)
    assert s.total_tokens_per_s == pytest.approx((4 + 20) / 2.0)
    assert s.goodput_requests_per_s == pytest.approx(1 / 2.0)  # only `a` meets TTFT ≤ 150 ms
    assert s.slo_attainment_pct == pytest.approx(100 / 3)  # of all three measured: the failed one misses
    assert s.peak_in_flight == 2  # `failed` (0.5–2.0 s) and `b` (1.0–1.2 s)
    # one bin: b's token at 1.2 s is a sliver after the first second, so 4 tokens over 1.2 s
    assert s.peak_output_tokens_per_s == pytest.approx(4 / 1.2)
    assert error_breakdown([a, failed, failed]) == {"HTTP 500: boom": 2}


def test_misses_are_counted_per_slo():
    """Which SLO each request missed (a request can miss both), failures apart: what tells the
    capacity-under-SLO study which SLO bounds it."""
    from gpucert.studies.capacity_search import slo_counts, slo_misses

    slos = {"ttft_ms": 150, "tpot_ms": 50}
    fine = record(0.0, [0.1, 0.14, 0.18], 3)  # TTFT 100 ms, TPOT 40 ms
    late = record(0.0, [0.2, 0.24], 2, request_id=1)  # TTFT 200 ms
    slow = record(0.0, [0.1, 0.2, 0.3], 3, request_id=2)  # TPOT 100 ms
    both = record(0.0, [0.3, 0.5], 2, request_id=3)
    one_token = record(0.0, [0.2], 1, request_id=4)  # no TPOT: meets a TPOT SLO, misses TTFT
    failed = RequestRecord(request_id=5, scheduled_at=0.0, sent_at=0.0, ended_at=1.0, error="HTTP 500: boom")
    records = [fine, late, slow, both, one_token, failed]
    assert slo_misses(records, slos) == {"ttft_ms": 3, "tpot_ms": 2, "failed": 1}
    assert slo_counts(records, slos) == (1, 6)
    assert summarize(records, slos).slo_attainment_pct == pytest.approx(100 / 6)


def test_unknown_slo_is_rejected():
    with pytest.raises(ValueError, match="valid: ttft_ms"):
        summarize([], {"latency": 1})


def test_distribution_uses_linear_percentiles():
    values = list(range(1, 101))
    d = distribution(values)
    assert d["p99"] == pytest.approx(np.percentile(values, 99))
    assert (d["min"], d["max"], d["count"]) == (1, 100, 100)
    assert distribution([])["p50"] is None


def test_client_check_flags_lag():
    run = RunRecords(records=[], started_monotonic=0.0, started_wall=0.0,
                     loop_lag_s=[0.001] * 90 + [0.02] * 10, cpu_fraction=0.3)
    check = client_check(run)
    assert check["client_may_be_bottleneck"] and "lag p99" in check["notices"][0]


def test_sse_parser_split_reads_crlf_and_plain_close():
    parser = SSEParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.feed(b': 1}\r\n\r\n: comment\n\ndata: [DONE]\n\n') == [b'{"a": 1}', b"[DONE]"]
    assert parser.feed(b'data: {"b": 2}') == []
    assert parser.close() == [b'{"b": 2}']
    # multi-line data joins with newlines; a field without the space after the colon counts too
    assert parser.feed(b'data: {"c":\ndata:3}\n\nevent: x\ndata: 4\n\n') == [b'{"c":\n3}', b"4"]


def test_arrivals_are_seeded_and_inf_sends_at_once():
    a = arrival_offsets(100, 10.0, 1.0, seed=1)
    assert np.array_equal(a, arrival_offsets(100, 10.0, 1.0, seed=1))
    assert a[0] == 0 and np.all(np.diff(a) >= 0)
    assert not np.any(arrival_offsets(5, float("inf"), 1.0, seed=1))


def test_throughput_series_rates_the_last_partial_bin_over_its_own_time():
    """100 tok/s steady for 2.5 s: every bin reads 100, the half-bin at the end too (dividing it by
    a whole second would draw a collapse that never happened); a sliver after the last full bin
    joins it."""
    steady = record(0.0, [(i - 0.5) / 100 for i in range(1, 251)], 250)  # a token every 10 ms
    times, rates = throughput_series([steady])
    assert times == [0.0, 1.0, 2.0] and rates == pytest.approx([100, 100, 100], rel=0.02)
    sliver = record(0.0, [(i - 0.5) / 100 for i in range(1, 206)], 205)
    times, rates = throughput_series([sliver])
    assert times == [0.0, 1.0] and rates == pytest.approx([100, 100], rel=0.02)
    assert throughput_series([]) == ([], [])
