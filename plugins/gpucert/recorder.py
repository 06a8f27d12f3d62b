"""What a check holds while it runs: the `gpucert` fixture's object.

A check measures through an engine and records here; it never judges. Recording keeps
everything — a failed measurement is recorded with its error, never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import noise
from .metrics import STATUSES, Metric, check_id

if TYPE_CHECKING:
    from .session import Run


@dataclass
class CheckResult:
    """One check (one parametrized test) as it appears on the card."""

    nodeid: str
    check: str
    family: str
    params: dict[str, Any]
    markers: list[str]
    outcome: str = "pending"  # passed | failed | error | skipped | pending
    duration_s: float = 0.0
    message: str = ""
    metrics: list[Metric] = field(default_factory=list)
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    body_raised: bool = False
    # what the check did, for the monitor: {"output_tokens": N, "windows": [(t0, t1), …] monotonic}
    work: dict[str, Any] = field(default_factory=dict)
    # name → (monotonic times, values): series the card overlays on the monitor's charts
    timelines: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    monitor: dict[str, Any] | None = None  # the monitor's window of this check (attach.py)

    @property
    def check_id(self) -> str:
        return check_id(self.check, self.params)


class CheckRecorder:
    """The `gpucert` fixture: record metrics, findings and baseline artifacts of one check."""

    def __init__(self, run: Run, result: CheckResult):
        self._run = run
        self._result = result

    @property
    def check(self) -> str:
        return self._result.check

    @property
    def params(self) -> dict[str, Any]:
        return dict(self._result.params)

    @property
    def snapshot(self) -> dict[str, Any]:
        """The run's stack snapshot (taken once per session)."""
        return self._run.snapshot

    @property
    def profile(self) -> str:
        return self._run.profile

    @property
    def metrics(self) -> list[Metric]:
        """What this check recorded so far (a study hands its figures to a later study)."""
        return list(self._result.metrics)

    def rule(self, metric: str, params: dict[str, Any] | None = None):
        """The thresholds.yaml rule that will judge `metric` of this check: where one check's
        finding depends on its peers' figures (the fleet's pairs), it takes its limit from there."""
        return self._run.options.thresholds.rule_for(self.check, metric, {**self.params, **(params or {})})

    def record(self, metric: str, value: float | None, *, unit: str, samples: list[float] | None = None,
               params: dict[str, Any] | None = None, direction: str | None = None, peak: float | None = None,
               status: str = "ok", error: str | None = None, note: str | None = None,
               stat: str | None = None, ci: tuple[float, float] | None = None,
               ci_method: str | None = None, method: str | None = None) -> Metric:
        """Record one metric. `params` add to the test's own parameters (e.g. one size of a sweep).
        `stat`: which statistic of `samples` the value is (median, mean, pNN) when its name does
        not say (`…_p99` is the p99; otherwise the median): its confidence interval is of that.
        `ci` and `ci_method`: an interval the measurement computed itself, with what it is (or,
        `ci` None, why there is none), used instead of one from `samples`. `method`: how it was
        measured where a check can measure it more than one way ("sustained"); a baseline of
        another method is neither compared with nor merged into."""
        if ci is not None and (ci_method is None or len(ci) != 2 or not all(math.isfinite(b) for b in ci)):
            raise ValueError(f"{metric}: ci must be two finite bounds with its ci_method")
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if direction not in (None, "higher", "lower"):
            raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
        if stat is not None:
            noise.validate_stat(stat)
        if value is not None and not isinstance(value, (int, float)):
            raise TypeError(f"{metric}: value must be a number, got {type(value).__name__}")
        record = Metric(
            check=self._result.check,
            family=self._result.family,
            metric=metric,
            unit=unit,
            value=float(value) if value is not None else None,
            params={**self._result.params, **(params or {})},
            samples=[float(s) for s in (samples or [])],
            direction=direction,
            peak=float(peak) if peak is not None and math.isfinite(peak) else None,
            status=status,
            error=error,
            note=note,
            nodeid=self._result.nodeid,
            stat=stat,
            given_ci=(min(ci), max(ci)) if ci is not None else None,
            given_ci_method=ci_method,
            method=method,
        )
        self._result.metrics.append(record)
        return record

    def record_result(self, metric: str, result: Any, value: float | None, *, unit: str, direction: str,
                      samples: list[float] | None = None, peak: float | None = None, note: str | None = None,
                      params: dict[str, Any] | None = None) -> Metric:
        """Record what a benchmark Result (physics.core.Result: status, error, note) measured, or,
        when it did not measure, its status and error with no value. The Result's own note is
        kept beside `note`."""
        note = "; ".join(n for n in (note, getattr(result, "note", None)) if n) or None
        if result.status != "ok":
            return self.record(metric, None, unit=unit, direction=direction, peak=peak, params=params,
                               status="skipped" if result.status == "skipped" else "error",
                               error=result.error, note=note)
        return self.record(metric, value, unit=unit, direction=direction, samples=samples, peak=peak,
                           params=params, note=note, method=getattr(result, "method", None))

    def record_error(self, metric: str, error: str, *, unit: str, params: dict[str, Any] | None = None) -> Metric:
        """A measurement that could not be taken: kept on the card with its error, and it fails."""
        return self.record(metric, None, unit=unit, params=params, status="error", error=error)

    def finding(self, kind: str, **fields: Any) -> None:
        """A row for the card that is not a number, e.g. one drift change {path, old, new, severity}."""
        self._result.findings.setdefault(kind, []).append(fields)

    def work(self, *, output_tokens: float | list[float] | None = None, window: tuple[float, float] | None = None,
             windows: list[tuple[float, float]] | None = None, repeats: bool = True,
             per_gpu: bool = False) -> None:
        """What the check measured, for the resource monitor: the output tokens (→ joules per
        token) and the time.monotonic() window they were produced in (the monitor's figures then
        cover that window, not the check's set-up and warm-up). `windows`: one per repeat of the
        same workload — the pauses between them are left out, and energy_j is a repeat's (their
        median), so it does not grow with the number of repeats; `output_tokens` may then be one
        count per window, which gives joules per token an interval too. `repeats=False`: the
        windows are different loads (a study's probes around its engine starts): the figures
        cover them alone, `energy_j` is their sum. `per_gpu`: the card's charts of this check get
        each GPU's SM clock, power and temperature too (the burn-in's time series), not only the
        node's sums and means."""
        if per_gpu:
            self._result.work["per_gpu"] = True
        if window is not None:
            windows = [window]
        if isinstance(output_tokens, (list, tuple)):
            if windows is None or len(output_tokens) != len(windows):
                raise ValueError("output_tokens per window needs one count for each of `windows`")
            self._result.work["output_tokens"] = [float(n) for n in output_tokens]
        elif output_tokens is not None:
            self._result.work["output_tokens"] = output_tokens
        if windows:
            self._result.work["windows"] = [(float(a), float(b)) for a, b in windows]
            self._result.work["repeats"] = repeats

    def timeline(self, name: str, times: list[float], values: list[float]) -> None:
        """A series on time.monotonic() (e.g. output tok/s per second) drawn over the monitor's."""
        self._result.timelines[name] = ([float(t) for t in times], [float(v) for v in values])

    def artifact(self, name: str, data: Any) -> None:
        """A JSON document this check baselines beside its metrics (e.g. the stack snapshot)."""
        self._result.artifacts[f"{self._result.check_id}::{name}"] = data

    def baseline_artifact(self, name: str) -> Any:
        """The profile's baselined artifact of this check, or None if there is none yet."""
        return self._run.store.artifact(self._result.family, f"{self._result.check_id}::{name}")
