"""Noise-aware verdicts: the bootstrap interval of a metric's statistic, the interval of its change
against a baseline, and the judge's rule — beyond tolerance *and* outside the noise to regress."""

import numpy as np
import pytest

from gpucert import noise
from gpucert.judge import blocks, judge
from gpucert.metrics import Metric
from gpucert.thresholds import Rule

HIGHER = Rule(direction="higher", rel_tol=0.10, warn_rel=0.05)


def rates(centre, spread, n=9, seed=1):
    return list(np.random.default_rng(seed).normal(centre, spread, n))


def metric(value, samples=(), **kw):
    return Metric(check="serving_baseline", family="serving_baseline", metric=kw.pop("name", "output_tok_s"),
                  unit="tok/s", value=value, samples=list(samples), **kw)


def test_interval_covers_the_statistic_and_narrows_with_more_samples():
    wide = noise.interval(rates(100, 10, n=5), "median")
    narrow = noise.interval(rates(100, 10, n=400), "median")
    assert wide[0] < 100 < wide[1] and narrow[0] < 100 < narrow[1]
    assert (narrow[1] - narrow[0]) < (wide[1] - wide[0]) / 3
    assert noise.interval([1.0, 2.0], "median") is None  # too few samples for an interval
    assert noise.interval(rates(100, 10), "median") == noise.interval(rates(100, 10), "median")  # seeded


def test_percentile_statistics_and_large_sample_sets():
    data = list(np.random.default_rng(2).exponential(10.0, 200_000))  # ~2e5 ITL gaps
    lo, hi = noise.interval(data, "p99")
    true_p99 = float(np.percentile(data, 99))
    assert lo < true_p99 < hi and (hi - lo) / true_p99 < 0.05
    assert noise.infer_stat("ttft_ms_p99", True) == "p99" and noise.infer_stat("tflops", True) == "median"
    assert noise.infer_stat("tflops", False) is None
    with pytest.raises(ValueError):
        noise.validate_stat("p999x")


def test_metric_interval_is_relative_to_its_samples_statistic():
    # busbw at the mean time while the samples are per-iteration rates: the same relative width
    m = metric(200.0, samples=[100.0, 101.0, 99.0, 100.5, 99.5, 100.0, 100.2])
    lo, hi = m.ci
    assert lo < 200.0 < hi and hi - lo < 4.0
    assert metric(200.0).ci is None and metric(200.0, samples=[1.0, 2.0]).ci is None


def test_delta_interval_combines_both_sides():
    assert noise.delta_interval_pct(90.0, (88.0, 92.0), 100.0, None) == pytest.approx((-12.0, -8.0))
    both = noise.delta_interval_pct(90.0, (88.0, 92.0), 100.0, (97.0, 103.0))
    assert both[0] == pytest.approx(-10 - np.hypot(2, 3)) and both[1] == pytest.approx(-10 + np.hypot(2, 3))
    assert noise.delta_interval_pct(90.0, None, 100.0, None) is None


def test_a_drop_beyond_tolerance_inside_the_noise_is_not_a_regression():
    # 3 repeats that swing ±15 %: the median is 12 % down, but no change is as likely
    m = metric(88.0, samples=[72.0, 88.0, 104.0], stat="median")
    j = judge(m, HIGHER, {"value": 100.0, "ci": [95.0, 105.0]})
    m.judgement = j
    assert j.verdict == "warn" and j.within_noise and not blocks(m)
    assert j.delta_ci_pct[0] < 0 < j.delta_ci_pct[1]
    assert "within run-to-run noise" in j.reason and "change 95% CI [" in j.reason


def test_a_drop_beyond_tolerance_outside_the_noise_fails():
    m = metric(88.0, samples=[87.5, 88.0, 88.4, 87.9, 88.2], stat="median")
    j = judge(m, HIGHER, {"value": 100.0, "ci": [99.5, 100.5]})
    m.judgement = j
    assert j.verdict == "fail" and not j.within_noise and blocks(m)
    assert j.delta_ci_pct[1] < -10  # the whole interval lies beyond the band


def test_without_samples_the_point_estimate_decides_as_before():
    j = judge(metric(88.0), HIGHER, {"value": 100.0})
    assert j.verdict == "fail" and j.delta_ci_pct is None


def test_an_improvement_inside_the_noise_suggests_no_rebaseline():
    m = metric(115.0, samples=[95.0, 115.0, 135.0], stat="median")
    j = judge(m, HIGHER, {"value": 100.0})
    assert j.verdict == "pass" and j.within_noise and not j.rebaseline_suggested


def test_run_to_run_noise_from_past_runs_widens_the_baseline_interval():
    past = [100.0, 114.0, 112.0, 102.0, 96.0, 108.0]
    lo, hi = noise.run_to_run_interval(past, 100.0)
    assert lo < 100.0 < hi and hi - 100.0 > 100.0 - lo  # the node's runs spread upwards here
    assert noise.run_to_run_interval(past[:4], 100.0) is None  # too few runs to say
    assert noise.widest((99.0, 101.0), None, (95.0, 100.5)) == (95.0, 101.0)
    # a value with no samples gets an interval from the history alone
    j = judge(metric(93.0), HIGHER, {"value": 100.0}, past_runs=past)
    assert j.delta_ci_pct is not None and "run-to-run noise of 6 past runs" in j.reason
    assert j.delta_ci_pct[0] < -7.0 < j.delta_ci_pct[1]


def test_a_persistent_regression_is_not_hidden_by_the_history(tmp_path):
    """Failed nights never enter the noise: five nights at −20 % leave the interval as narrow as
    the passing nights before them, so the sixth still fails."""
    from gpucert import history
    records = [{"metrics": {"k": {"value": v, "verdict": "pass"}}} for v in (100.0, 101.0, 99.0, 100.5, 99.5)]
    records += [{"metrics": {"k": {"value": 80.0, "verdict": "fail"}}} for _ in range(5)]
    past = history.past_values(records)["k"]
    assert past == [100.0, 101.0, 99.0, 100.5, 99.5]
    m = metric(80.0, samples=[79.8, 80.0, 80.2, 80.1, 79.9])
    j = judge(m, HIGHER, {"value": 100.0}, past_runs=past)
    assert j.verdict == "fail" and not j.within_noise and j.delta_ci_pct[1] < -10
