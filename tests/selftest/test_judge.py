"""Verdict rules: the baseline band (two-sided), absolute limits, datasheet floors, quarantine."""

import datetime as dt

import pytest

from gpucert.judge import blocks, failure_line, judge
from gpucert.metrics import Metric
from gpucert.thresholds import Quarantine, Rule

HIGHER = Rule(direction="higher", rel_tol=0.05, warn_rel=0.02)
LOWER = Rule(direction="lower", rel_tol=0.10, warn_rel=0.05)


def metric(value, **kw):
    return Metric(check="gemm", family="gemm", metric="tflops", unit="TFLOP/s", value=value,
                  params={"dtype": "bf16"}, **kw)


@pytest.mark.parametrize("value, verdict", [
    (100.0, "pass"), (98.5, "pass"), (97.0, "warn"), (94.0, "fail"), (104.0, "pass"), (106.0, "warn"),
])
def test_higher_is_better_bands(value, verdict):
    assert judge(metric(value), HIGHER, {"value": 100.0}).verdict == verdict


@pytest.mark.parametrize("value, verdict", [(100.0, "pass"), (106.0, "warn"), (111.0, "fail"), (85.0, "warn")])
def test_lower_is_better_bands(value, verdict):
    assert judge(metric(value), LOWER, {"value": 100.0}).verdict == verdict


def test_failure_line_is_one_readable_line():
    m = metric(90.0)
    m.judgement = judge(m, HIGHER, {"value": 100.0})
    line = failure_line(m)
    assert line.startswith("gemm[dtype=bf16]::tflops: FAIL: 90 TFLOP/s vs baseline 100 (-10.0%)")
    assert "beyond tolerance 5%" in line and "higher is better" in line and "\n" not in line
    assert blocks(m)


def test_improvement_says_rebaseline_suggested():
    j = judge(metric(120.0), HIGHER, {"value": 100.0})
    assert j.verdict == "warn" and j.rebaseline_suggested and "rebaseline suggested" in j.reason
    assert j.delta_pct == pytest.approx(20.0)


def test_absolute_tolerance_and_zero_baseline():
    rule = Rule(direction="lower", rel_tol=0.0, abs_tol=0.5, warn_rel=0.0, warn_abs=0.45)
    assert judge(metric(0.4), rule, {"value": 0.0}).verdict == "pass"
    assert judge(metric(0.47), rule, {"value": 0.0}).verdict == "warn"
    j = judge(metric(1.0), rule, {"value": 0.0})
    assert j.verdict == "fail" and j.delta_pct is None


def test_no_baseline_is_new_or_fail():
    assert judge(metric(50.0), HIGHER, None).verdict == "new"
    j = judge(metric(50.0), HIGHER, None, missing_baseline="fail")
    assert j.verdict == "fail" and "--missing-baseline=fail" in j.reason


def test_datasheet_floor_applies_without_baseline():
    rule = Rule(direction="higher", min_fraction_of_peak=0.75)
    j = judge(metric(600.0, peak=989.0), rule, None)
    assert j.verdict == "fail" and "60.7% of the datasheet peak" in j.reason
    assert judge(metric(800.0, peak=989.0), rule, None).verdict == "new"
    # no datasheet entry for this GPU: judged on baselines only
    assert judge(metric(10.0), rule, None).verdict == "new"


def test_a_failure_gives_only_the_failing_reason():
    rule = Rule(direction="higher", min_fraction_of_peak=0.70, warn_fraction_of_peak=0.75)
    j = judge(metric(690.0, peak=1000.0), rule, None)
    assert j.verdict == "fail"
    assert j.reason == "690 TFLOP/s is 69.0% of the datasheet peak 1,000, below 70%"
    assert j.threshold == "≥ 70% of peak 1,000; warn below 75% of peak 1,000"


def test_slo_limits():
    rule = Rule(direction="lower", max=500.0, warn_max=300.0)
    assert judge(metric(200.0), rule, None).verdict == "new"
    assert judge(metric(400.0), rule, None).verdict == "warn"
    j = judge(metric(600.0), rule, {"value": 590.0})
    assert j.verdict == "fail" and "above the maximum 500" in j.reason


def test_direction_from_record_when_rule_has_none():
    assert judge(metric(90.0, direction="higher"), Rule(), {"value": 100.0}).verdict == "fail"
    j = judge(metric(90.0), Rule(), {"value": 100.0})
    assert j.verdict == "fail" and "no direction" in j.reason


def test_failed_measurement_and_non_finite_value():
    assert judge(metric(None, status="error", error="CUDA OOM"), HIGHER, None).reason == "measurement failed: CUDA OOM"
    assert judge(metric(float("nan")), HIGHER, {"value": 1.0}).verdict == "fail"
    assert judge(metric(None, status="skipped", error="no GPU"), HIGHER, None).verdict == "skipped"


def test_quarantine_reports_without_blocking_until_expiry():
    q = Quarantine("gemm", "tflops", "driver bug 4711", dt.date(2026, 12, 31))
    m = metric(80.0)
    m.judgement = judge(m, HIGHER, {"value": 100.0}, quarantine=q, today=dt.date(2026, 12, 1))
    assert m.judgement.verdict == "fail" and m.judgement.quarantined == "driver bug 4711" and not blocks(m)
    m.judgement = judge(m, HIGHER, {"value": 100.0}, quarantine=q, today=dt.date(2027, 1, 1))
    assert blocks(m) and "quarantine expired 2026-12-31" in m.judgement.reason


def test_update_mode_does_not_fail_on_the_old_baseline():
    j = judge(metric(80.0), HIGHER, {"value": 100.0}, update_mode=True)
    assert j.verdict == "warn" and "baseline being updated" in j.reason


def test_drift_metrics_use_absolute_limits_only_and_update_accepts_them():
    rule = Rule(direction="lower", drift=True, max=0.0)
    j = judge(metric(2.0), rule, {"value": 2.0})
    assert j.verdict == "fail" and j.baseline is None and "above the maximum 0" in j.reason
    assert judge(metric(0.0), rule, None).verdict == "pass"
    accepted = judge(metric(2.0), rule, None, update_mode=True)
    assert accepted.verdict == "warn" and "accepted by --update-baselines" in accepted.reason
    listed = judge(metric(5.0), Rule(direction="lower", drift=True), None)
    assert listed.verdict == "pass" and "informational" in listed.reason


def test_metrics_json_keeps_a_bounded_sketch_of_many_samples():
    """A 4,096-stream level has ~2 million ITL gaps: metrics.json keeps 1,000 of them (the sorted
    samples at even ranks, min and max included) while statistics and the count use all."""
    from gpucert.metrics import MAX_STORED_SAMPLES
    many = [float((i * 7919) % 5000) for i in range(5000)]  # 0 … 4999, shuffled
    data = Metric("serving_baseline", "serving_baseline", "itl_ms_p99", "ms", 4950.0, samples=many).to_dict()
    assert data["samples_reduced"] is True and len(data["samples"]) == MAX_STORED_SAMPLES
    assert data["samples"] == sorted(data["samples"]) and data["samples"][0] == 0.0 and data["samples"][-1] == 4999.0
    assert abs(data["samples"][500] - 2501) <= 3  # the sketch's middle is the median
    assert data["sample_count"] == 5000 and data["stats"]["n"] == 5000 and data["stats"]["median"] == 2499.5
    few = Metric("c", "f", "m", "ms", 1.0, samples=[3.0, 1.0, 2.0]).to_dict()
    assert few["samples"] == [3.0, 1.0, 2.0] and few["samples_reduced"] is False  # kept in order
