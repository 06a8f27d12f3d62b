"""The metric record: what a check measured, with its raw samples, and later its verdict.

A metric is keyed by a stable id — check name plus sorted parameters plus metric name — never by
pytest's node id, so renaming a test file does not orphan its baseline.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from . import noise

# verdicts, worst first; "incomplete" is a check the session stopped in (or never reached):
# nothing about it is certified; "skipped" is a check that could not measure here
VERDICTS = ("fail", "incomplete", "warn", "new", "pass", "skipped")
STATUSES = ("ok", "error", "skipped")


def param_text(value: Any) -> str:
    """Parameters become text in keys and files: stable across runs and platforms."""
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def finite_number(value: Any) -> float | None:
    """A finite number, else None: metrics.json holds NaN and inf as strings (json_safe), and a
    bool measures nothing."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def check_id(check: str, params: dict[str, Any]) -> str:
    if not params:
        return check
    inner = ",".join(f"{k}={param_text(params[k])}" for k in sorted(params))
    return f"{check}[{inner}]"


def metric_key(check: str, params: dict[str, Any], metric: str) -> str:
    return f"{check_id(check, params)}::{metric}"


def metric_check_id(metric: dict[str, Any]) -> str:
    """The check id of one metric as metrics.json holds it: its key without the metric's name. A
    check's record(params=...) adds to its parameters (one size of a sweep), so this can differ
    from the id of the check it sits in."""
    key, name = str(metric.get("key") or ""), str(metric.get("metric") or "")
    if name and key.endswith(f"::{name}"):
        return key[: -len(name) - 2]
    return check_id(str(metric.get("check") or ""), metric.get("params") or {})


def worst(verdicts: list[str]) -> str:
    """The worst verdict of a list; an empty list passes."""
    present = [v for v in VERDICTS if v in verdicts]
    return present[0] if present else "pass"


# metrics.json keeps at most this many samples per metric: the ITL gaps of one 4,096-stream level
# are ~2 million (60 MB of JSON per run on the GPU node). Past it, the stored list is the sorted
# samples at evenly spaced ranks (the distribution, min and max kept); statistics and the sample
# count always come from all of them.
MAX_STORED_SAMPLES = 1000


def stored_samples(samples: list[float]) -> tuple[list[float], bool]:
    """(what metrics.json keeps, whether it is a reduction of the samples)."""
    if len(samples) <= MAX_STORED_SAMPLES:
        return list(samples), False
    ordered = sorted(samples)
    last = len(ordered) - 1
    return [ordered[round(i * last / (MAX_STORED_SAMPLES - 1))] for i in range(MAX_STORED_SAMPLES)], True


def sample_stats(samples: list[float]) -> dict[str, float | int] | None:
    """Statistics of the raw samples, computed on demand (median, p90, p99, IQR, spread)."""
    finite = [s for s in samples if isinstance(s, (int, float)) and math.isfinite(s)]
    if not finite:
        return None
    arr = np.asarray(finite, dtype=float)
    q25, q50, q75, q90, q99 = np.percentile(arr, [25, 50, 75, 90, 99])
    mean = float(arr.mean())
    return {
        "n": int(arr.size),
        "mean": mean,
        "median": float(q50),
        "p90": float(q90),
        "p99": float(q99),
        "min": float(arr.min()),
        "max": float(arr.max()),
        "iqr": float(q75 - q25),
        "stdev": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        # coefficient of variation: > 5 % is called noisy on the card
        "cv": float(arr.std(ddof=1) / abs(mean)) if arr.size > 1 and mean else 0.0,
    }


@dataclass
class Judgement:
    verdict: str
    reason: str
    baseline: float | None = None
    delta_pct: float | None = None
    threshold: str = ""
    rebaseline_suggested: bool = False
    quarantined: str | None = None  # the quarantine reason, when one applies
    # 95 % interval of delta_pct from the two measurements' own noise and the between-run noise
    # (noise.py); None: nothing to build one from
    delta_ci_pct: tuple[float, float] | None = None
    within_noise: bool = False  # beyond the band, but the noise explains the change: not a regression
    # shown, not judged against its baseline: what it measures follows the work done, and the work
    # differed from the baseline's (a rule's `informational` / `same_work`)
    informational: bool = False
    # beyond the band and outside the noise (a fail, or an improvement suggesting a rebaseline),
    # before --update-baselines softens it: a new level, whose update starts the baseline's runs afresh
    changed: bool = False


@dataclass
class Metric:
    check: str
    family: str
    metric: str
    unit: str
    value: float | None
    params: dict[str, Any] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)
    direction: str | None = None
    peak: float | None = None  # datasheet reference for min_fraction_of_peak rules
    status: str = "ok"
    error: str | None = None
    note: str | None = None
    nodeid: str = ""
    judgement: Judgement | None = None
    # which statistic of the samples `value` is (median, mean, pNN); None: from the metric's name
    stat: str | None = None
    headline: bool = False  # thresholds.yaml marks it: its trend is drawn from the history
    # an interval the measurement computed itself (e.g. token-weighted over documents), with what
    # it is: used instead of one from `samples`, which would be of another estimand
    given_ci: tuple[float, float] | None = None
    given_ci_method: str | None = None
    # how it was measured where a check can measure one metric more than one way ("sustained": over
    # seconds of back-to-back work after a warm-up); None: the check's one (burst) way. A baseline
    # measured another way is not compared with (judge.py), nor merged into (baselines.py)
    method: str | None = None

    @property
    def key(self) -> str:
        return metric_key(self.check, self.params, self.metric)

    @property
    def sample_count(self) -> int:
        return len(self.samples) if self.samples else (1 if self.value is not None else 0)

    @property
    def stats(self) -> dict[str, float | int] | None:
        return sample_stats(self.samples)

    @property
    def statistic(self) -> str | None:
        return self.stat or noise.infer_stat(self.metric, bool(self.samples))

    def _confidence(self) -> tuple[tuple[float, float] | None, str | None]:
        """(interval of the value, what it is): noise.confidence of the samples' statistic, taken
        relative to that statistic and applied to the value, so a value in other units than its
        samples (busbw at the mean time, samples per iteration) gets the same relative width."""
        if "_ci" not in self.__dict__ and self.given_ci_method is not None:
            self.__dict__["_ci"] = (tuple(self.given_ci) if self.given_ci else None, self.given_ci_method)
        if "_ci" not in self.__dict__:
            found, method = None, None
            stat = self.statistic
            if stat and self.value is not None and math.isfinite(self.value) and self.samples:
                interval = noise.confidence(self.samples, stat)
                method = interval.method
                centre = interval.centre
                if interval.bounds is not None and centre and math.isfinite(centre):
                    lo, hi = self.value * interval.low / centre, self.value * interval.high / centre
                    found = (min(lo, hi), max(lo, hi))
            self.__dict__["_ci"] = (found, method)
        return self.__dict__["_ci"]

    @property
    def ci(self) -> tuple[float, float] | None:
        """The value's confidence interval from its raw samples (None where no honest one exists:
        too few samples for that statistic, an extreme, no samples)."""
        return self._confidence()[0]

    @property
    def ci_method(self) -> str | None:
        """What the interval is ("Student t 95%, mean of n=3", "order statistics 95.9%, median of
        n=20"), or why there is none ("none: p99 of n=20 … (needs n ≥ 368)"); None without samples."""
        return self._confidence()[1]

    def to_dict(self) -> dict[str, Any]:
        # field by field, not asdict(): asdict deep-copies millions of raw samples
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("samples", "judgement", "given_ci", "given_ci_method")}
        data["samples"], data["samples_reduced"] = stored_samples(self.samples)
        data["key"] = self.key
        data["params"] = {k: param_text(v) for k, v in self.params.items()}
        data["stats"] = self.stats
        data["sample_count"] = self.sample_count
        data["stat"] = self.statistic
        data["ci"] = list(self.ci) if self.ci else None
        data["ci_method"] = self.ci_method
        data.update(asdict(self.judgement) if self.judgement else {})
        return data
