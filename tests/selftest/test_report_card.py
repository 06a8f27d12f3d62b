"""The card's serving view: the concurrency table and its curves, from metrics.json alone."""

import math
import re

import pytest

from gpucert.report import card, charts


def check(name, concurrency, **values):
    return {"check": name, "check_id": f"{name}[concurrency={concurrency}]", "family": name,
            "params": {"concurrency": str(concurrency)}, "verdict": "new", "outcome": "passed",
            "metrics": [{"metric": k, "value": v} for k, v in values.items()]}


def test_serving_rows_pair_served_and_offline_by_level():
    data = {"checks": [check("serving_baseline", 16, output_tok_s=15000.0, ttft_ms_p99=80.0, tpot_ms_p99=9.0,
                             gpu_util_mean_pct=91.0, energy_j_per_output_token=0.05),
                       check("serving_baseline", 1, output_tok_s=260.0, ttft_ms_p99=20.0, tpot_ms_p99=3.5),
                       check("offline_throughput", 16, output_tok_s=17100.0),
                       check("stack_like_other", 1)]}
    view = card.serving_view(data)
    assert [(r["concurrency"], r["output_tok_s"], r["offline_tok_s"]) for r in view["rows"]] == [
        (1, 260.0, None), (16, 15000.0, 17100.0)]
    assert [r["served_share"] for r in view["rows"]] == [None, 15000.0 / 17100.0]
    assert [(r["gpu_util_mean_pct"], r["energy_j_per_output_token"]) for r in view["rows"]] == [(None, None), (91.0, 0.05)]
    assert len(view["charts"]) == 2 and all(c.startswith("<svg") for c in view["charts"])
    assert card.serving_view({"checks": [check("other", 1)]}) is None


def test_chart_labels_are_escaped_and_points_placed():
    svg = charts.line_chart("<b>t</b>", "x", "y", {"a&b": [(1, 10.0), (2, 20.0), (4, None)]})
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "a&amp;b" in svg
    assert svg.count("<circle") == 2
    assert charts.line_chart("t", "x", "y", {"empty": []}) == ""


def test_a_log_y_chart_has_decades_and_keeps_small_values_apart():
    """TPOT of 2.5 ms beside a TTFT of 117 s (2× H100, 4,096 streams): on a linear axis every TPOT
    sits on the zero line; on the log axis each decade gets a line and 2.5 and 25 ms are as far
    apart as 1 s and 10 s."""
    svg = charts.line_chart("lat", "c", "ms", {"TTFT": [(1, 15.0), (4096, 117256.0)],
                                               "TPOT": [(1, 2.5), (2, 0.0), (4096, 25.0)]}, log_y=True)
    for decade in ("1", "10", "100", "1k", "10k", "100k", "1M"):
        assert f'text-anchor="end">{decade}</text>' in svg
    assert svg.count("<circle") == 4  # the 0 ms point is left out on a log axis
    ys = {float(cy) for cy in re.findall(r'<circle cx="[0-9.]+" cy="([0-9.]+)"', svg)}
    assert len(ys) == 4  # 2.5, 15, 25 and 117k ms at four heights
    y = sorted(ys)  # screen y grows downwards: 117k ms on top, 2.5 ms lowest
    step = (y[3] - y[0]) / (math.log10(117256.0) - math.log10(2.5))
    assert y[3] - y[2] == pytest.approx(step * math.log10(15.0 / 2.5), abs=0.2)  # 15 above 2.5 by log
    assert y[3] - y[1] == pytest.approx(step, abs=0.2)  # 25 ms one decade above 2.5 ms


def test_time_series_charts_label_round_seconds_and_draw_no_markers():
    points = [(i * 0.1, 50.0 + i % 7) for i in range(300)]
    svg = charts.line_chart("util", "s", "%", {"GPU util": points}, log2_x=False)
    assert svg.count("<circle") == 0  # 300 points: a line, not 300 markers
    x_labels = [t for t in ("0", "10", "20", "30") if f'text-anchor="middle">{t}</text>' in svg]
    assert x_labels and 'text-anchor="middle">0.1</text>' not in svg  # round ticks, not every sample


def test_a_right_axis_series_is_dashed_and_scaled_on_its_own():
    svg = charts.line_chart("util", "s", "%", {"GPU util": [(0, 50.0), (10, 100.0)]}, log2_x=False,
                            right={"tok/s <x>": [(0, 20000.0), (10, 40000.0)]}, right_label="tok/s")
    assert 'stroke-dasharray="5,3"' in svg and "tok/s &lt;x&gt; (right axis)" in svg
    # both series peak at the same height: each is scaled to its own axis (max × 1.1)
    lines = [part.split('points="')[1].split('"')[0] for part in svg.split("<polyline")[1:]]
    left_peak, right_peak = (line.split()[-1].split(",")[1] for line in lines)
    assert left_peak == right_peak
    assert ">40k<" in svg or ">44k<" in svg or ">30k<" in svg  # right-axis tick labels in tok/s


def test_physics_section_sets_the_node_against_its_datasheet_peaks():
    """A real `make certify` on 2× H100 (session 6): the best GEMM per dtype, HBM and host copies,
    P2P and NCCL's largest all_reduce against the peaks, with their verdicts."""
    from . import device_runs
    data = device_runs.load(device_runs.CERTIFY)
    rows = {(r["check_id"], r["metric"]): r for r in card.physics_view(data)}
    bf16 = rows[("gemm_max_achievable[dtype=bf16]", "tflops")]
    assert bf16["peak"] == 989.5 and 0.8 < bf16["fraction"] < 0.9 and bf16["verdict"] == "pass"
    assert rows[("nccl_large_message_busbw[op=all_reduce,size=8GiB]", "busbw_gbps")]["peak"] == 450.0
    assert rows[("memory[gpu=0,kind=d2h_pageable]", "gbps")]["verdict"] == "warn"
    assert not any(key[0].startswith(("gemm_square", "nccl[")) for key in rows)  # sweeps stay in the table
    html = card.render(data)
    assert html.index('id="physics"') < html.index('id="checks"') and "82.7%" in html


def test_failures_lead_the_regressions_table():
    data = {"checks": [
        {"check": "a", "check_id": "a", "family": "a", "params": {}, "verdict": "warn", "outcome": "passed",
         "markers": [], "duration_s": 0.1, "message": "", "findings": {}, "monitor": None,
         "metrics": [{"metric": "w1", "verdict": "warn", "value": 1.0, "unit": "x", "reason": "warned"}]},
        {"check": "b", "check_id": "b", "family": "b", "params": {}, "verdict": "fail", "outcome": "failed",
         "markers": [], "duration_s": 0.1, "message": "", "findings": {}, "monitor": None,
         "metrics": [{"metric": "f1", "verdict": "fail", "value": 2.0, "unit": "x", "reason": "failed hard"}]}]}
    table = card._ENV.from_string(
        "{% for c, m in regressions %}{{ m.metric }} {% endfor %}").render(regressions=card.regressions_of(data))
    assert table.split() == ["f1", "w1"]
