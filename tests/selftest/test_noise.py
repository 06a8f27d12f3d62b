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


def test_interval_narrows_with_more_samples_and_is_deterministic():
    wide = noise.interval(rates(100, 10, n=8), "median")
    narrow = noise.interval(rates(100, 10, n=400), "median")
    assert wide[0] < 100 < wide[1] and narrow[0] < 100 < narrow[1]
    assert (narrow[1] - narrow[0]) < (wide[1] - wide[0]) / 3
    assert noise.interval([1.0, 2.0], "median") is None  # too few samples for a median's interval
    assert noise.interval(rates(100, 10), "median") == noise.interval(rates(100, 10), "median")


def test_percentile_statistics_and_large_sample_sets():
    data = list(np.random.default_rng(2).exponential(10.0, 200_000))  # ~2e5 ITL gaps
    lo, hi = noise.interval(data, "p99")
    true_p99 = 10.0 * np.log(100)
    assert lo < true_p99 < hi and (hi - lo) / true_p99 < 0.05
    assert noise.infer_stat("ttft_ms_p99", True) == "p99" and noise.infer_stat("tflops", True) == "median"
    assert noise.infer_stat("tflops", False) is None
    with pytest.raises(ValueError):
        noise.validate_stat("p999x")


def test_metric_interval_is_relative_to_its_samples_statistic():
    # busbw at the mean time while the samples are per-iteration rates: the same relative width
    m = metric(200.0, samples=[100.0, 101.0, 99.0, 100.5, 99.5, 100.0, 100.2])
    lo, hi = m.ci
    assert lo < 200.0 < hi and hi - lo <= 4.0 and m.ci_method.startswith("order statistics 98.4%, median of n=7")
    assert metric(200.0).ci is None and metric(200.0).ci_method is None
    assert metric(200.0, samples=[1.0, 2.0]).ci is None


def test_delta_interval_combines_both_sides():
    # one side: exactly its own interval
    assert noise.delta_interval_pct(90.0, (88.0, 92.0), 100.0, None) == pytest.approx((-12.0, -8.0))
    both = noise.delta_interval_pct(90.0, (88.0, 92.0), 100.0, (97.0, 103.0))
    # in quadrature on the log scale of the ratio
    assert both[0] == pytest.approx((0.9 * np.exp(-np.hypot(np.log(90 / 88), np.log(103 / 100))) - 1) * 100)
    assert both[1] == pytest.approx((0.9 * np.exp(np.hypot(np.log(92 / 90), np.log(100 / 97))) - 1) * 100)
    assert noise.delta_interval_pct(90.0, None, 100.0, None) is None
    # non-positive values: linear
    assert noise.delta_interval_pct(-1.0, (-2.0, 0.0), 1.0, None) == pytest.approx((-300.0, -100.0))


def test_a_drop_beyond_tolerance_inside_the_noise_is_not_a_regression():
    # 3 repeats that swing ±15 %: their mean is 12 % down, but no change is as likely
    m = metric(88.0, samples=[72.0, 88.0, 104.0], stat="mean")
    j = judge(m, HIGHER, {"value": 100.0, "ci": [95.0, 105.0]})
    m.judgement = j
    assert j.verdict == "warn" and j.within_noise and not blocks(m) and not j.changed
    assert j.delta_ci_pct[0] < 0 < j.delta_ci_pct[1]
    assert "within run-to-run noise" in j.reason and "change 95% interval [" in j.reason
    assert "this run: Student t 95%, mean of n=3" in j.reason


def test_a_drop_beyond_tolerance_outside_the_noise_fails():
    m = metric(88.0, samples=[87.5, 88.0, 88.4, 87.9, 88.2], stat="mean")
    j = judge(m, HIGHER, {"value": 100.0, "ci": [99.5, 100.5]})
    m.judgement = j
    assert j.verdict == "fail" and not j.within_noise and blocks(m) and j.changed
    assert j.delta_ci_pct[1] < -10  # the whole interval lies beyond the band


def test_without_samples_or_run_noise_the_point_estimate_decides_as_before():
    j = judge(metric(88.0), HIGHER, {"value": 100.0})
    assert j.verdict == "fail" and j.delta_ci_pct is None


def test_an_improvement_inside_the_noise_suggests_no_rebaseline():
    m = metric(115.0, samples=[95.0, 115.0, 135.0], stat="mean")
    j = judge(m, HIGHER, {"value": 100.0})
    assert j.verdict == "pass" and j.within_noise and not j.rebaseline_suggested


INFERENCE = Rule(direction="higher", rel_tol=0.10, warn_rel=0.05, run_noise_rel=0.12)


def test_between_run_noise_default_applies_to_a_baseline_of_one_run():
    # no samples at all (mean power, energy): the between-run noise alone gives the interval
    j = judge(metric(78.0), INFERENCE, {"value": 100.0, "runs": [{"value": 100.0}]})
    assert j.verdict == "warn" and j.within_noise
    assert "between-run σ 12.0% (default run_noise_rel of thresholds.yaml), baseline of 1 run(s)" in j.reason
    assert judge(metric(55.0), INFERENCE, {"value": 100.0}).verdict == "fail"  # −45 %: beyond it
    assert judge(metric(200.0, name="tpot_ms_p99"), Rule(direction="lower", rel_tol=0.2, warn_rel=0.1,
                                                         run_noise_rel=0.12), {"value": 100.0}).verdict == "fail"


def test_history_nights_are_one_source_of_the_between_run_noise():
    past = [100.0, 114.0, 112.0, 102.0, 96.0, 108.0]
    between = noise.run_noise([[100.0], past], 0.0, 1)
    assert between.df == 5 and "estimated from 6 runs" in between.source
    j = judge(metric(85.0), HIGHER, {"value": 100.0}, past_runs=past)
    assert j.delta_ci_pct is not None and j.delta_ci_pct[0] < 0 < j.delta_ci_pct[1] and j.within_noise
    assert "estimated from 6 runs in 1 group(s), 5 df" in j.reason


def test_pooled_noise_and_the_baseline_runs_share():
    groups = [[100.0, 110.0], [1000.0, 1100.0], [5.0, 5.5]]  # three levels, each 10 % apart
    between = noise.run_noise(groups, 0.5, baseline_runs=2)
    assert between.df == 3 and between.rel_sd == pytest.approx(np.log(1.1) / np.sqrt(2))
    assert between.baseline_share == 0.5 and noise.RunNoise(0.1, None, 5, "").baseline_share == pytest.approx(np.pi / 10)
    assert noise.run_noise([[1.0]], 0.0, 1) is None  # counts and settings: no between-run noise


def test_a_persistent_regression_is_not_hidden_by_the_history(tmp_path):
    """Failed nights never enter the noise: five nights at −20 % leave the interval as narrow as
    the passing nights before them, so the sixth still fails."""
    from gpucert import history
    records = [{"metrics": {"k": {"value": v, "verdict": "pass"}}} for v in (100.0, 101.0, 99.0, 100.5, 99.5)]
    records += [{"metrics": {"k": {"value": 80.0, "verdict": "fail"}}} for _ in range(5)]
    past = history.past_values(records)["k"]
    assert past == [100.0, 101.0, 99.0, 100.5, 99.5]
    m = metric(80.0, samples=[79.8, 80.0, 80.2, 80.1, 79.9], stat="mean")
    j = judge(m, INFERENCE, {"value": 100.0}, past_runs=past)
    assert j.verdict == "fail" and not j.within_noise and j.delta_ci_pct[1] < -10


def test_informational_and_same_work_rules():
    power = Rule(direction="lower", rel_tol=0.15, warn_rel=0.07, run_noise_rel=0.05, same_work="output_tok_s")
    m = metric(125.0, name="gpu_power_mean_w")
    j = judge(m, power, {"value": 100.0}, work_change_pct=23.0)
    assert j.verdict == "pass" and j.informational and j.delta_pct == pytest.approx(25.0)
    assert "the work differed (output_tok_s +23.0%" in j.reason
    assert judge(m, power, {"value": 100.0}).informational  # no work figure to compare: information
    same = judge(metric(140.0, name="gpu_power_mean_w"), power, {"value": 100.0}, work_change_pct=1.0)
    assert same.verdict == "fail" and not same.informational
    info = judge(metric(300.0), Rule(direction="higher", informational=True, max=200.0), {"value": 100.0})
    assert info.verdict == "fail" and "above the maximum" in info.reason  # absolute limits still apply
