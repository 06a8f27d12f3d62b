"""Turn one metric into a verdict: baseline band (two-sided), absolute limits, quarantine.

Pure functions; the plugin calls `judge()` after a check's body ran and fails the check itself
with `failure_line()` so the JUnit report and the card attribute the failure to its owner.
"""

from __future__ import annotations

import datetime as dt
import math

from . import noise
from .baselines import runs_of
from .metrics import Judgement, Metric, worst
from .thresholds import Quarantine, Rule


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    if math.isinf(value) or math.isnan(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 1:
        return f"{value:.4g}"
    return f"{value:.3g}"


def _band(rel: float, abs_: float, baseline: float) -> float:
    return max(rel * abs(baseline), abs_)


def _band_text(rel: float, abs_: float) -> str:
    parts = []
    if rel:
        parts.append(f"{rel * 100:g}%")
    if abs_:
        parts.append(f"{_fmt(abs_)}" if not math.isinf(abs_) else "any")
    return " or ".join(parts) if parts else "0"


def _limits(metric: Metric, rule: Rule) -> list[tuple[str, str, str]]:
    """(verdict, why, threshold text) for every absolute limit the value breaks or meets."""
    value = metric.value
    out: list[tuple[str, str, str]] = []
    checks = [
        ("fail", "min", rule.min, value < rule.min if rule.min is not None else False, "below the minimum"),
        ("fail", "max", rule.max, value > rule.max if rule.max is not None else False, "above the maximum"),
        ("warn", "warn_min", rule.warn_min, value < rule.warn_min if rule.warn_min is not None else False, "below the warning minimum"),
        ("warn", "warn_max", rule.warn_max, value > rule.warn_max if rule.warn_max is not None else False, "above the warning maximum"),
    ]
    for verdict, name, limit, broken, why in checks:
        if limit is None:
            continue
        text = f"{name} {_fmt(limit)}"
        out.append((verdict if broken else "pass", f"{_fmt(value)} {metric.unit} is {why} {_fmt(limit)}" if broken else "", text))
    for verdict, fraction in (("fail", rule.min_fraction_of_peak), ("warn", rule.warn_fraction_of_peak)):
        if fraction is None or metric.peak is None:
            continue
        floor = fraction * metric.peak
        text = f"{'≥' if verdict == 'fail' else 'warn below'} {fraction:.0%} of peak {_fmt(metric.peak)}"
        broken = value < floor
        why = (f"{_fmt(value)} {metric.unit} is {value / metric.peak:.1%} of the datasheet peak "
               f"{_fmt(metric.peak)}, below {fraction:.0%}") if broken else ""
        out.append((verdict if broken else "pass", why, text))
    return out


def interval_text(ci: tuple[float, float] | None) -> str:
    """A change's 95 % interval as the card and the failure line show it: "[−3.1%, +0.4%]"."""
    return f"[{ci[0]:+.1f}%, {ci[1]:+.1f}%]" if ci else ""


def _against_baseline(metric: Metric, rule: Rule, baseline: float, baseline_ci: tuple[float, float] | None = None,
                      between: noise.RunNoise | None = None
                      ) -> tuple[str, str, float | None, bool, str, tuple[float, float] | None, bool]:
    """(verdict, why, delta %, rebaseline suggested, threshold text, delta's 95 % interval in %,
    within noise) against the baseline band. A change beyond the band whose interval still holds
    0 % is explained by noise — the two measurements' own and the between-run noise of an
    unchanged node: shown (warn), never a regression."""
    value = metric.value
    delta = value - baseline
    delta_pct = delta / abs(baseline) * 100 if baseline else None
    regression = -delta if rule.direction == "higher" else delta
    tol = _band(rule.rel_tol, rule.abs_tol, baseline)
    warn = _band(rule.warn_rel, rule.warn_abs, baseline)
    improve_rel = rule.rel_tol if rule.improve_rel is None else rule.improve_rel
    improve_abs = rule.abs_tol if rule.improve_abs is None else rule.improve_abs
    improve = _band(improve_rel, improve_abs, baseline)
    worse = "lower" if rule.direction == "higher" else "higher"
    threshold = f"±{_band_text(rule.rel_tol, rule.abs_tol)} ({rule.direction} is better)"
    change = f"{_fmt(value)} {metric.unit} vs baseline {_fmt(baseline)}"
    ci = noise.delta_interval_pct(value, metric.ci, baseline, baseline_ci, between)
    if delta_pct is not None:
        change += f" ({delta_pct:+.1f}%)"
    holds_zero = ci is not None and ci[0] <= 0 <= ci[1]
    if regression > tol:
        if holds_zero:
            return ("warn", f"{change}: {worse} than the baseline beyond tolerance {_band_text(rule.rel_tol, rule.abs_tol)}, "
                    "but within run-to-run noise (the interval holds no change): not a regression", delta_pct, False,
                    threshold, ci, True)
        return "fail", f"{change}: {worse} than the baseline beyond tolerance {_band_text(rule.rel_tol, rule.abs_tol)}", delta_pct, False, threshold, ci, False
    if regression > warn:
        return "warn", f"{change}: {worse} than the baseline, inside tolerance but beyond the warning band {_band_text(rule.warn_rel, rule.warn_abs)}", delta_pct, False, threshold, ci, False
    if -regression > improve:
        if holds_zero:
            return "pass", f"{change}: better than the baseline beyond {_band_text(improve_rel, improve_abs)}, within run-to-run noise", delta_pct, False, threshold, ci, True
        return "warn", f"{change}: better than the baseline beyond {_band_text(improve_rel, improve_abs)} — rebaseline suggested", delta_pct, True, threshold, ci, False
    return "pass", f"{change}: within tolerance", delta_pct, False, threshold, ci, False


def run_noise_for(rule: Rule, baseline: dict, noise_siblings: list[list[list[float]]] | None,
                  past_runs: list[float] | None, unit: str | None = None) -> noise.RunNoise | None:
    """The between-run noise a change from `baseline` is held against: estimated from this entry's
    own runs and its history, pooled with `noise_siblings` (the session's other levels of this
    check and metric: each one's runs and history) where their spreads agree (noise.run_noise);
    the rule's `run_noise_rel` where no group has two runs. A percentage's groups pinned at 100
    are left out of the estimate."""
    runs = runs_of(baseline)
    return noise.run_noise([[r["value"] for r in runs], list(past_runs or [])], rule.run_noise_rel,
                           max(len(runs), 1), ceiling=100.0 if unit == "%" else None,
                           siblings=noise_siblings or ())


def _work_differs(rule: Rule, work_change_pct: float | None) -> str:
    """Why a metric that follows the work done is not judged against its baseline, or ""."""
    if rule.informational:
        return "informational: shown beside its baseline, never judged by it"
    if not rule.same_work:
        return ""
    if work_change_pct is None:
        return (f"informational: the check's {rule.same_work} has no baseline to show the work was the same, "
                "and this metric follows the work done")
    if abs(work_change_pct) > rule.same_work_rel * 100:
        return (f"informational: the work differed ({rule.same_work} {work_change_pct:+.1f}% from its baseline, "
                f"beyond ±{rule.same_work_rel * 100:g}%), and this metric follows the work done")
    return ""


def judge(metric: Metric, rule: Rule, baseline: dict | None, *, missing_baseline: str = "new",
          quarantine: Quarantine | None = None, today: dt.date | None = None,
          update_mode: bool = False, past_runs: list[float] | None = None,
          noise_siblings: list[list[list[float]]] | None = None, work_change_pct: float | None = None) -> Judgement:
    """The verdict of one metric. `baseline` is the stored entry (value, spread, runs, …) or None;
    `past_runs`: this metric's values in the nightly history's passing runs; `noise_siblings`: the
    runs of the other levels of this check and metric (pooled between-run noise); `work_change_pct`: the
    change of the check's work rate (`same_work` rules) from its baseline."""
    today = today or dt.date.today()
    if metric.status == "skipped":
        return Judgement("skipped", metric.error or "not measured")
    if metric.status != "ok":
        return _quarantined(Judgement("fail", f"measurement failed: {metric.error or metric.status}"), quarantine, today)
    if metric.value is None or not math.isfinite(metric.value):
        return _quarantined(Judgement("fail", f"measured value is {metric.value!r}, not a finite number"), quarantine, today)

    direction = rule.direction or metric.direction
    if direction is None:
        return Judgement("fail", "no direction: give one in thresholds.yaml (direction: higher|lower) or when recording")
    if rule.direction != direction:
        rule = Rule(**{**rule.__dict__, "direction": direction})

    findings: list[tuple[str, str]] = []  # (verdict, why) of every rule that applied
    thresholds: list[str] = []
    base_value = baseline.get("value") if baseline and not rule.drift else None
    # a baseline measured another way (a burst against a sustained figure) is not this metric's
    other_method = bool(baseline) and base_value is not None and baseline.get("method") != metric.method
    if other_method:
        base_value = None
    delta_pct = None
    delta_ci = None
    within_noise = False
    suggested = False
    changed = False
    informational = _work_differs(rule, work_change_pct) if base_value is not None else ""
    if rule.drift:
        pass  # the value is itself a difference from the baseline: only absolute limits apply
    elif base_value is None:
        method = (f"measured {metric.method or 'as a burst'}, its baseline {baseline.get('method') or 'as a burst'}: "
                  "no baseline of this method yet") if other_method else None
        findings.append(("fail", f"{method or 'no baseline for this metric'} (--missing-baseline=fail)")
                        if missing_baseline == "fail" else ("new", method or "no baseline yet"))
    elif informational:
        delta_pct = (metric.value - float(base_value)) / abs(float(base_value)) * 100 if base_value else None
        change = f"{_fmt(metric.value)} {metric.unit} vs baseline {_fmt(float(base_value))}"
        findings.append(("pass", f"{change}" + (f" ({delta_pct:+.1f}%)" if delta_pct is not None else "")
                         + f" — {informational}"))
    else:
        base_ci = baseline.get("ci")
        base_ci = (float(base_ci[0]), float(base_ci[1])) if isinstance(base_ci, (list, tuple)) and len(base_ci) == 2 else None
        between = run_noise_for(rule, baseline, noise_siblings, past_runs, metric.unit)
        verdict, why, delta_pct, suggested, text, delta_ci, within_noise = _against_baseline(
            metric, rule, float(base_value), base_ci, between)
        changed = verdict == "fail" or suggested
        if delta_ci:
            why += f"; change 95% interval {interval_text(delta_ci)}"
            parts = [f"this run: {metric.ci_method}" if metric.ci_method else "",
                     f"{between.text()}, baseline of {between.baseline_runs} run(s)" if between else ""]
            why += f" ({'; '.join(p for p in parts if p)})"
        if update_mode and verdict == "fail":
            verdict, why = "warn", why + " (baseline being updated)"
        findings.append((verdict, why))
        thresholds.append(text)
    for verdict, why, text in _limits(metric, rule):
        if rule.drift and update_mode and verdict == "fail":
            verdict, why = "warn", why + " (accepted by --update-baselines)"
        findings.append((verdict, why))
        thresholds.append(text)

    final = worst([verdict for verdict, _ in findings])
    # the reasons of the rules that decided the verdict, not those it outranks
    reasons = [why for verdict, why in findings if verdict == final and why]
    if not findings:
        reasons = ["informational: no limit applies"]
    elif final == "new" and len(findings) > 1:  # "no baseline" plus limits that held
        reasons = ["no baseline yet: judged on absolute limits"]
    elif not reasons:
        reasons = [f"{_fmt(metric.value)} {metric.unit}: within absolute limits"]
    judgement = Judgement(final, "; ".join(reasons), base_value, delta_pct, "; ".join(thresholds), suggested,
                          delta_ci_pct=delta_ci, within_noise=within_noise, informational=bool(informational),
                          changed=changed)
    if metric.note:
        judgement.reason += f" — {metric.note}"
    return _quarantined(judgement, quarantine, today)


def _quarantined(judgement: Judgement, quarantine: Quarantine | None, today: dt.date) -> Judgement:
    if quarantine is None:
        return judgement
    if not quarantine.active(today):
        judgement.reason += f" (quarantine expired {quarantine.expires.isoformat()}: {quarantine.reason})"
        return judgement
    if judgement.verdict in ("fail", "warn"):
        judgement.quarantined = quarantine.reason
        judgement.reason += f" (quarantined until {quarantine.expires.isoformat()}: {quarantine.reason})"
    return judgement


def failure_line(metric: Metric) -> str:
    """One readable line: which metric, what value, against what, and why."""
    j = metric.judgement
    assert j is not None
    return f"{metric.key}: {j.verdict.upper()}: {j.reason}" + (f" [threshold {j.threshold}]" if j.threshold else "")


def blocks(metric: Metric) -> bool:
    """Does this metric fail its check? A quarantined failure is reported, not blocking."""
    j = metric.judgement
    return j is not None and j.verdict == "fail" and not j.quarantined
