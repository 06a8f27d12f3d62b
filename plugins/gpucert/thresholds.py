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


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses what safe_load lets through silently or crashes on: a key given
    twice in one mapping (YAML keeps the last, so a rule's first `max` would vanish unseen) and a
    date that matches YAML's timestamp pattern but does not exist (2025-13-40, 2025-02-30: the
    plain loader raises a bare ValueError from deep inside its constructor)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            # the keys written in this mapping; those a `<<: *anchor` merge brings in may be overridden
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: the base constructor says so with its mark
                    break
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {first})", key_node.start_mark)
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a valid date ({exc})", node.start_mark) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp)


def load(path: str | Path) -> Thresholds:
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ThresholdsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ThresholdsError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                              f"{exc.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
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
    _check_order(defaults, f"{name}: defaults")
    for i, rule in enumerate(rules):
        merged = {**defaults, **{k: v for k, v in rule.items() if k not in _MATCH_KEYS}}
        if merged.get("warn_rel", 0.02) > merged.get("rel_tol", 0.05):
            raise ThresholdsError(f"{name}: rules[{i}]: warn_rel {merged['warn_rel']} is wider than rel_tol {merged.get('rel_tol', 0.05)}")
        _check_order(merged, f"{name}: rules[{i}]")
    return thresholds


# (lower, upper, why): pairs of limits a rule (merged with the defaults) must keep in this order.
# min above max passes nothing, warn_min above warn_max warns on everything; a warning limit
# beyond its failure limit can never warn (a value past it has already failed): each is a typo
# that would silently change every verdict it touches.
_ORDERED_LIMITS = (
    ("min", "max", "no value can pass"),
    ("warn_min", "warn_max", "every value would warn"),
    ("min", "warn_min", "the warning minimum is below the failure minimum, so it can never warn"),
    ("warn_max", "max", "the warning maximum is above the failure maximum, so it can never warn"),
    ("min_fraction_of_peak", "warn_fraction_of_peak",
     "the warning fraction of peak is below the failing one, so it can never warn"),
)


def _check_order(merged: dict[str, Any], where: str) -> None:
    for low, high, why in _ORDERED_LIMITS:
        if merged.get(low) is not None and merged.get(high) is not None and merged[low] > merged[high]:
            raise ThresholdsError(f"{where}: {low} {merged[low]:g} is above {high} {merged[high]:g}: {why}")


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
