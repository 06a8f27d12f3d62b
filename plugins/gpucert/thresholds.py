"""thresholds.yaml: the rules that turn a measured value into a verdict.

A rule matches a metric by check name, metric name and optionally parameter values (all
fnmatch globs, e.g. `params: {size: "*KiB"}`). Every matching rule applies in file order, later keys overriding earlier ones,
on top of `defaults` — so a file reads from general to specific. The file is validated as a whole
when the run starts: a bad key or value stops the run with one line naming it.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .metrics import param_text

SCHEMA_VERSION = 1
DIRECTIONS = ("higher", "lower")


class ThresholdsError(ValueError):
    """thresholds.yaml is missing, unreadable or invalid; the message names the place."""


@dataclass(frozen=True)
class Rule:
    """Everything the judge needs for one metric, after all matching rules are merged."""

    direction: str | None = None
    # band around the baseline: regression beyond max(rel_tol*|baseline|, abs_tol) fails,
    # beyond max(warn_rel*|baseline|, warn_abs) warns
    rel_tol: float = 0.05
    abs_tol: float = 0.0
    warn_rel: float = 0.02
    warn_abs: float = 0.0
    # an improvement beyond this band is not silently passed: "rebaseline suggested";
    # None means "same as the failure band"
    improve_rel: float | None = None
    improve_abs: float | None = None
    # absolute limits judged with or without a baseline (datasheet floors, SLOs)
    min: float | None = None
    max: float | None = None
    warn_min: float | None = None
    warn_max: float | None = None
    # datasheet rule: value >= fraction × the peak the check recorded with the metric
    min_fraction_of_peak: float | None = None
    warn_fraction_of_peak: float | None = None
    # --update-baselines refuses a metric measured from fewer raw samples
    min_samples: int = 1
    # the metric is itself a difference from the baseline (stack drift counts): it is never
    # stored, only absolute limits judge it, and an --update-baselines run accepts a breach
    drift: bool = False
    # a headline metric: its trend over the last nightly runs is drawn on the card, and it goes
    # into the Prometheus textfile's short list
    headline: bool = False
    # between-run noise: the relative standard deviation of one run's value across separate runs
    # of an unchanged node (engine starts, boots), the documented default where there are not two
    # runs to estimate it from (noise.run_noise); 0: not subject to it (counts, settings)
    run_noise_rel: float = 0.0
    # judged by meaning: an `informational` metric is shown against its baseline but never judged
    # by it; `same_work: METRIC` judges it only when the check's METRIC (its work rate) is within
    # `same_work_rel` of that metric's own baseline — mean power and utilization follow the work
    informational: bool = False
    same_work: str | None = None
    same_work_rel: float = 0.05
    note: str | None = None


@dataclass(frozen=True)
class Quarantine:
    check: str
    metric: str
    reason: str
    expires: dt.date
    params: dict[str, str] = field(default_factory=dict)

    def matches(self, check: str, metric: str, params: dict[str, Any]) -> bool:
        return _matches(self.check, self.metric, self.params, check, metric, params)

    def active(self, today: dt.date) -> bool:
        return today <= self.expires


_RULE_FIELDS = {f.name: f for f in fields(Rule)}
_NUMBER_KEYS = {name for name in _RULE_FIELDS
                if name not in ("direction", "note", "min_samples", "drift", "headline", "informational", "same_work")}
_MATCH_KEYS = {"check", "metric", "params"}
_TOP_KEYS = {"schema_version", "defaults", "rules", "quarantine"}
_QUARANTINE_KEYS = {"check", "metric", "params", "reason", "expires"}


def _matches(check_glob: str, metric_glob: str, params: dict[str, str],
             check: str, metric: str, actual: dict[str, Any]) -> bool:
    if not fnmatch.fnmatchcase(check, check_glob) or not fnmatch.fnmatchcase(metric, metric_glob):
        return False
    return all(k in actual and fnmatch.fnmatchcase(param_text(actual[k]), v) for k, v in params.items())


@dataclass
class Thresholds:
    path: str
    defaults: dict[str, Any]
    rules: list[dict[str, Any]]
    quarantine: list[Quarantine]

    def rule_for(self, check: str, metric: str, params: dict[str, Any]) -> Rule:
        merged = dict(self.defaults)
        for rule in self.rules:
            if _matches(rule.get("check", "*"), rule.get("metric", "*"), rule.get("params", {}),
                        check, metric, params):
                merged.update({k: v for k, v in rule.items() if k not in _MATCH_KEYS})
        return Rule(**merged)

    def quarantine_for(self, check: str, metric: str, params: dict[str, Any]) -> Quarantine | None:
        for entry in self.quarantine:
            if entry.matches(check, metric, params):
                return entry
        return None


def load(path: str | Path) -> Thresholds:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ThresholdsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ThresholdsError(f"{path}:{where}: {problem}") from None
    return parse(data, str(path))


def parse(data: Any, name: str = "thresholds.yaml") -> Thresholds:
    if not isinstance(data, dict):
        raise ThresholdsError(f"{name}: expected a mapping at the top level")
    _reject_unknown(data, _TOP_KEYS, name)
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ThresholdsError(f"{name}: schema_version {version!r} is not supported (expected {SCHEMA_VERSION})")
    defaults = _rule_values(data.get("defaults") or {}, f"{name}: defaults", allow_match=False)
    raw_rules = data.get("rules") or []
    if not isinstance(raw_rules, list):
        raise ThresholdsError(f"{name}: rules: expected a list")
    rules = [_rule_values(r, f"{name}: rules[{i}]", allow_match=True) for i, r in enumerate(raw_rules)]
    raw_q = data.get("quarantine") or []
    if not isinstance(raw_q, list):
        raise ThresholdsError(f"{name}: quarantine: expected a list")
    quarantine = [_quarantine(q, f"{name}: quarantine[{i}]") for i, q in enumerate(raw_q)]
    thresholds = Thresholds(name, defaults, rules, quarantine)
    # merged bands must still be ordered: a warn band wider than the failure band would never warn
    for i, rule in enumerate(rules):
        merged = {**defaults, **{k: v for k, v in rule.items() if k not in _MATCH_KEYS}}
        if merged.get("warn_rel", 0.02) > merged.get("rel_tol", 0.05):
            raise ThresholdsError(f"{name}: rules[{i}]: warn_rel {merged['warn_rel']} is wider than rel_tol {merged.get('rel_tol', 0.05)}")
    return thresholds


def _reject_unknown(mapping: dict, allowed: set[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise ThresholdsError(f"{where}: unknown key {key!r} (valid: {', '.join(sorted(allowed))})")


def _rule_values(raw: Any, where: str, allow_match: bool) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ThresholdsError(f"{where}: expected a mapping")
    allowed = set(_RULE_FIELDS) | (_MATCH_KEYS if allow_match else set())
    _reject_unknown(raw, allowed, where)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        at = f"{where}.{key}"
        if key in ("check", "metric"):
            if not isinstance(value, str) or not value:
                raise ThresholdsError(f"{at}: expected a non-empty name or glob, got {value!r}")
        elif key == "params":
            out[key] = _params(value, at)
            continue
        elif key == "direction":
            if value not in DIRECTIONS:
                raise ThresholdsError(f"{at}: expected one of {', '.join(DIRECTIONS)}, got {value!r}")
        elif key in ("drift", "headline", "informational"):
            if not isinstance(value, bool):
                raise ThresholdsError(f"{at}: expected true or false, got {value!r}")
        elif key in ("note", "same_work"):
            if not isinstance(value, str) or (key == "same_work" and not value):
                raise ThresholdsError(f"{at}: expected text, got {value!r}")
        elif key == "min_samples":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ThresholdsError(f"{at}: expected an integer >= 1, got {value!r}")
        elif key in _NUMBER_KEYS:
            value = _number(value, at, non_negative=key not in ("min", "max", "warn_min", "warn_max"))
            if key == "run_noise_rel" and not math.isfinite(value):  # infinite noise would hide every regression
                raise ThresholdsError(f"{at}: expected a finite number, got {value!r}")
        out[key] = value
    return out


def _number(value: Any, at: str, non_negative: bool) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ThresholdsError(f"{at}: expected a number, got {value!r}")
    if non_negative and value < 0:
        raise ThresholdsError(f"{at}: expected a number >= 0, got {value!r}")
    return float(value)


def _params(value: Any, at: str) -> dict[str, str]:
    if not isinstance(value, dict):
        raise ThresholdsError(f"{at}: expected a mapping of parameter name to value")
    return {str(k): str(v) for k, v in value.items()}


def _quarantine(raw: Any, where: str) -> Quarantine:
    if not isinstance(raw, dict):
        raise ThresholdsError(f"{where}: expected a mapping")
    _reject_unknown(raw, _QUARANTINE_KEYS, where)
    for key in ("reason", "expires"):
        if key not in raw:
            raise ThresholdsError(f"{where}: missing {key!r} (a quarantine needs a reason and an expiry date)")
    reason = raw["reason"]
    if not isinstance(reason, str) or not reason.strip():
        raise ThresholdsError(f"{where}.reason: expected text, got {reason!r}")
    expires = raw["expires"]
    if isinstance(expires, str):
        try:
            expires = dt.date.fromisoformat(expires)
        except ValueError:
            raise ThresholdsError(f"{where}.expires: expected a date YYYY-MM-DD, got {raw['expires']!r}") from None
    if not isinstance(expires, dt.date) or isinstance(expires, dt.datetime):
        raise ThresholdsError(f"{where}.expires: expected a date YYYY-MM-DD, got {expires!r}")
    return Quarantine(
        check=str(raw.get("check", "*")),
        metric=str(raw.get("metric", "*")),
        reason=reason.strip(),
        expires=expires,
        params=_params(raw.get("params", {}), f"{where}.params"),
    )
