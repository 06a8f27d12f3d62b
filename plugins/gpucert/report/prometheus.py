"""The run as a Prometheus textfile (node_exporter's textfile collector): metrics.prom beside
metrics.json, built from metrics.json's dict alone, so it can be rebuilt from a stored run.

Alerting reads one-hot verdicts, e.g. `gpucert_run_verdict{verdict="fail"} == 1`, and staleness
from `time() - gpucert_run_finished_timestamp_seconds`. Labels stay bounded: a check or a metric
carries only its own verdict, never one series per possible verdict.

prometheus_client writes the exposition format (it escapes backslashes, quotes and newlines in
label values) and replaces the file atomically (a temporary file in the same folder, renamed:
the collector never reads half a file, and ignores the temporary, which does not end in .prom).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from .. import redaction
from ..metrics import VERDICTS, finite_number, metric_check_id

FILENAME = "metrics.prom"


def write(report_dir: Path, data: dict[str, Any]) -> Path:
    """Write <report_dir>/metrics.prom from a metrics.json dict; returns its path."""
    path = Path(report_dir) / FILENAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), build_registry(redaction.redact_obj(data)))  # labels quote check ids, messages
    return path


def build_registry(data: dict[str, Any]) -> CollectorRegistry:
    """A registry holding the run's gauges (its own, never the process-wide default one)."""
    registry = CollectorRegistry()
    _run_gauges(registry, data)
    checks = data.get("checks") or []
    _check_gauges(registry, checks)
    _metric_gauges(registry, checks)
    return registry


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _timestamp(text: Any) -> float | None:
    """Unix seconds of an ISO time (session._now writes UTC with its offset); None if absent or unreadable."""
    if not isinstance(text, str) or not text:
        return None
    try:
        # fromisoformat reads a trailing "Z" only from Python 3.11 on
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


def _by_verdict(counts: Any) -> dict[str, float]:
    """Every known verdict (zero when absent, so a rate or a `== 0` holds), plus any unknown one."""
    counts = counts if isinstance(counts, dict) else {}
    out = {v: 0.0 for v in VERDICTS}
    out.update({str(k): n for k, v in counts.items() if (n := finite_number(v)) is not None})
    return out


def _run_gauges(registry: CollectorRegistry, data: dict[str, Any]) -> None:
    info = Gauge("gpucert_run_info", "The gpucert run: hardware profile, gpucert version and run status "
                 "(running, complete, interrupted); always 1", ["profile", "gpucert_version", "status"],
                 registry=registry)
    info.labels(_text(data.get("profile")), _text(data.get("gpucert_version")), _text(data.get("status"))).set(1)

    verdict = _text(data.get("verdict"))
    one_hot = Gauge("gpucert_run_verdict", "The run's verdict, the worst of its checks: 1 for the run's "
                    "verdict, 0 for every other (fail, incomplete, warn, new, pass, skipped)", ["verdict"],
                    registry=registry)
    for name in dict.fromkeys([*VERDICTS, verdict] if verdict else VERDICTS):
        one_hot.labels(name).set(1 if name == verdict else 0)

    checks = Gauge("gpucert_run_checks", "Checks of the run by verdict", ["verdict"], registry=registry)
    for name, count in _by_verdict(data.get("counts")).items():
        checks.labels(name).set(count)
    metrics = Gauge("gpucert_run_metrics", "Metrics of the run by verdict", ["verdict"], registry=registry)
    for name, count in _by_verdict(data.get("metric_counts")).items():
        metrics.labels(name).set(count)

    started, finished = _timestamp(data.get("started_at")), _timestamp(data.get("finished_at"))
    # a gauge without labels exposes 0 as soon as it exists: create these only with a value
    if started is not None:
        Gauge("gpucert_run_started_timestamp_seconds", "When the run started (Unix time)",
              registry=registry).set(started)
    if finished is not None:  # absent while the run is still running
        Gauge("gpucert_run_finished_timestamp_seconds", "When the run finished (Unix time); absent while it runs",
              registry=registry).set(finished)
    if started is not None and finished is not None:
        Gauge("gpucert_run_duration_seconds", "Wall time of the run from start to finish",
              registry=registry).set(finished - started)


def _check_gauges(registry: CollectorRegistry, checks: list[dict[str, Any]]) -> None:
    labels = ["check_id", "check", "family"]
    verdict = Gauge("gpucert_check_verdict", "A check's verdict (the worst of its metrics and its outcome); "
                    "one series per check, labelled with its own verdict, always 1", [*labels, "verdict"],
                    registry=registry)
    duration = Gauge("gpucert_check_duration_seconds", "Time pytest spent in a check (setup, call, teardown)",
                     labels, registry=registry)
    for check in checks:
        values = [_text(check.get(k)) for k in labels]
        if check.get("verdict"):
            verdict.labels(*values, _text(check["verdict"])).set(1)
        if (seconds := finite_number(check.get("duration_s"))) is not None:
            duration.labels(*values).set(seconds)


def _metric_gauges(registry: CollectorRegistry, checks: list[dict[str, Any]]) -> None:
    labels = ["check_id", "metric", "unit"]
    value = Gauge("gpucert_metric_value", "A measured metric's value, in the unit of its label", labels,
                  registry=registry)
    baseline = Gauge("gpucert_metric_baseline", "The profile's baseline of a metric, in the unit of its label",
                     labels, registry=registry)
    delta = Gauge("gpucert_metric_delta_percent", "A metric's change from its baseline, in percent", labels,
                  registry=registry)
    ci_low = Gauge("gpucert_metric_delta_ci_low_percent", "Lower bound of the 95 % interval of a metric's change "
                   "from its baseline (both runs' own noise and the between-run noise), in percent", labels,
                   registry=registry)
    ci_high = Gauge("gpucert_metric_delta_ci_high_percent", "Upper bound of the 95 % interval of a metric's change "
                    "from its baseline (both runs' own noise and the between-run noise), in percent", labels,
                    registry=registry)
    verdict = Gauge("gpucert_metric_verdict", "A metric's verdict against its baseline and thresholds; "
                    "one series per metric, labelled with its own verdict, always 1",
                    ["check_id", "metric", "verdict"], registry=registry)
    # the short list a dashboard starts from: thresholds.yaml's `headline: true` metrics
    headline = Gauge("gpucert_headline_value", "A headline metric's value (thresholds.yaml headline: true), "
                     "in the unit of its label", labels, registry=registry)
    for check in checks:
        for metric in check.get("metrics") or []:
            # a finite number that was judged on something other than skipping
            number = finite_number(metric.get("value"))
            if number is None or metric.get("verdict") == "skipped":
                continue
            cid, name = metric_check_id(metric), _text(metric.get("metric"))
            series = (cid, name, _text(metric.get("unit")))
            value.labels(*series).set(number)
            if metric.get("headline"):
                headline.labels(*series).set(number)
            for gauge, field in ((baseline, "baseline"), (delta, "delta_pct")):
                if (number := finite_number(metric.get(field))) is not None:
                    gauge.labels(*series).set(number)
            interval = metric.get("delta_ci_pct")
            if isinstance(interval, (list, tuple)) and len(interval) == 2:
                for gauge, bound in zip((ci_low, ci_high), interval):
                    if (number := finite_number(bound)) is not None:
                        gauge.labels(*series).set(number)
            if metric.get("verdict"):
                verdict.labels(cid, name, _text(metric["verdict"])).set(1)
