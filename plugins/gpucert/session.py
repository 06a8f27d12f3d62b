"""One certification run: snapshot, profile, baselines, thresholds, every check's record.

The pytest plugin drives this object; it holds no pytest objects itself, so the whole flow —
collect → measure → store → judge → report — can be followed in plain code.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__, certification, history, redaction, snapshot as snapshot_engine
from .baselines import BaselineStore, Change, Provenance, empty_family, git_revision, merge, runs_of, write_atomic
from .judge import judge
from .metrics import VERDICTS, Metric, worst
from .recorder import CheckResult
from .thresholds import Rule, Thresholds

METRICS_SCHEMA_VERSION = 1


@dataclass
class RunOptions:
    baselines_dir: Path
    report_dir: Path
    thresholds: Thresholds
    profile: str | None = None  # None: derived from the snapshot
    snapshot_from: str | None = None
    update_baselines: bool = False
    missing_baseline: str = "new"
    today: dt.date | None = None
    history_dir: Path | None = None  # nightly: past runs' records, this run's appended


class Run:
    def __init__(self, options: RunOptions):
        self.options = options
        self.started_at = _now()
        self._started = time.monotonic()
        self.duration_s: float | None = None  # set once, when the run ends: every output shows this figure
        self.checks: dict[str, CheckResult] = {}
        self.baseline_changes: list[Change] = []
        self.notes: list[str] = []
        self.monitor: dict[str, Any] = {}  # the session monitor's file, interval, ticks, notes
        self.trends: list[dict[str, Any]] = []  # headline metrics over the history's last runs
        self.history: list[dict[str, Any]] = []  # --history-dir: the profile's last run records, oldest first
        self.past_runs: dict[str, list[float]] = {}  # metric key → its values in the history's passing runs
        self.time_budget: dict[str, Any] = {}  # the run's wall-clock budget and what it skipped
        # family → (check, metric, rule) → baseline keys: the groups that pool between-run noise
        self._noise_index: dict[str, dict[tuple, list[str]]] = {}
        self._git_revision: str | None | bool = False  # False: not asked yet
        self._snapshot: dict[str, Any] | None = None
        self._store: BaselineStore | None = None
        self.profile = options.profile
        self.prepared = False  # snapshot taken and baselines opened
        self.profile_source = "option" if options.profile else "snapshot"

    # ---- collect: the stack, once per session -------------------------------------------
    def prepare(self) -> None:
        """Take the snapshot and open the baselines; raises on bad input before anything runs."""
        snap = self.snapshot
        derived = snapshot_engine.profile_name(snap)
        self.profile = self.options.profile or self._host_profile(derived)
        if self.options.profile and self.options.profile != derived:
            self.notes.append(f"profile set to {self.options.profile} by --profile; the snapshot says {derived}")
        self._store = BaselineStore(self.options.baselines_dir, self.profile)
        self._store.validate_all()
        for note in snap.get("notes") or []:
            if note not in self.notes:
                self.notes.append(note)
        if self.options.history_dir is not None:  # nightly: the trends, and the node's run-to-run noise
            try:
                self.history, notes = history.load(self.options.history_dir, self.profile)
                self.notes.extend(notes)
            except (OSError, ValueError) as exc:
                self.notes.append(f"history not read: {exc}")
            self.past_runs = history.past_values(self.history)
        self.prepared = True

    def _host_profile(self, derived: str) -> str:
        """The derived profile, unless it has no baselines and another profile's stack baseline
        is this host: then that one, so a node that lost a GPU fails its drift instead of
        starting a fresh profile where nothing is compared."""
        found = snapshot_engine.host_profile(self.options.baselines_dir, self.snapshot, derived)
        if found is None:
            return derived
        profile, why = found
        if self.options.update_baselines:  # an approved hardware change starts its own profile
            self.notes.append(f"this host's earlier baselines are under profile {profile} ({why}); "
                              f"--update-baselines writes the snapshot's profile {derived}")
            return derived
        self.profile_source = "host's baselines"
        self.notes.append(f"the snapshot says profile {derived}, which has no baselines, but this host's are under "
                          f"{profile} ({why}): judged against {profile}, where the stack drift shows what changed "
                          f"(--profile {derived} starts the new profile)")
        return profile

    @property
    def snapshot(self) -> dict[str, Any]:
        if self._snapshot is None:
            self._snapshot = snapshot_engine.collect(self.options.snapshot_from)
        return self._snapshot

    @property
    def store(self) -> BaselineStore:
        if self._store is None:
            self.prepare()
        return self._store

    # ---- judge: after each check's body -------------------------------------------------
    def _rule(self, metric: Metric) -> Rule:
        return self.options.thresholds.rule_for(metric.check, metric.metric, metric.params)

    def judge_check(self, result: CheckResult) -> None:
        th = self.options.thresholds
        for metric in result.metrics:
            rule = self._rule(metric)
            metric.direction = rule.direction or metric.direction
            metric.headline = rule.headline
            metric.judgement = judge(
                metric, rule, self.store.entry(metric.family, metric.key),
                missing_baseline=self.options.missing_baseline,
                quarantine=th.quarantine_for(metric.check, metric.metric, metric.params),
                today=self.options.today,
                update_mode=self.options.update_baselines,
                past_runs=self.past_runs.get(metric.key),
                noise_siblings=self._noise_siblings(metric, rule),
                work_change_pct=self._work_change_pct(result, metric, rule),
            )

    def _noise_siblings(self, metric: Metric, rule: Rule) -> list[list[list[float]]] | None:
        """The other entries whose runs this metric's between-run noise is pooled with: each entry
        of the same check and metric that thresholds.yaml gives the same rule (a check's levels,
        which share one relative spread; not nccl's latency-bound sizes with its bandwidth-bound
        ones), as [its baseline runs, its history's passing nights]. noise.run_noise judges this
        metric by its own runs instead where its spread is beyond theirs.

        A percentage is the exception — None: the judge takes its own entry's runs and history
        alone. How far a bounded share moves depends on where in its range it sits — SLO
        attainment is 100 % in every run at the light levels and swings 54–81 % between engine
        starts at an overloaded one (H200, session 8) — so one spread pooled over the levels is
        too narrow for the one and too wide for the others (a light level's fall from 100 % to
        80 % would pass as noise)."""
        if metric.unit == "%":
            return None
        cache = self._noise_index
        if metric.family not in cache:
            index: dict[tuple, list[str]] = {}
            for key, entry in self.store.family(metric.family)["metrics"].items():
                check, name = entry.get("check"), entry.get("metric")
                if isinstance(check, str) and isinstance(name, str):
                    entry_rule = self.options.thresholds.rule_for(check, name, entry.get("params") or {})
                    index.setdefault((check, name, entry_rule), []).append(key)
            cache[metric.family] = index
        metrics = self.store.family(metric.family)["metrics"]
        return [[[run["value"] for run in runs_of(metrics[key])], list(self.past_runs.get(key) or [])]
                for key in cache[metric.family].get((metric.check, metric.metric, rule), []) if key != metric.key]

    def _work_change_pct(self, result: CheckResult, metric: Metric, rule: Rule) -> float | None:
        """For a `same_work` rule: the % change of the check's work metric (same parameters) from
        its own baseline; None where either is missing."""
        if not rule.same_work:
            return None
        for other in result.metrics:
            if other.metric == rule.same_work and other.params == metric.params and other.status == "ok" \
                    and other.value is not None and math.isfinite(other.value):
                entry = self.store.entry(other.family, other.key) or {}
                base = entry.get("value")
                if isinstance(base, (int, float)) and base and math.isfinite(base):
                    return (other.value - base) / abs(base) * 100
        return None

    # ---- store: candidates every run, baselines in update mode --------------------------
    def baseline_refusal(self, result: CheckResult) -> str:
        """Why none of this check's numbers may become a baseline ('' if they may). Decided per
        check: one failed metric (a dead endpoint's failed requests, an absolute limit broken)
        says the others were measured on a sick node or a broken run — a 30 % error rate's
        tok/s is not the node's tok/s — and a baseline from them would let the next sick run pass."""
        if result.outcome == "interrupted":
            return "the check was interrupted; what it measured is partial"
        if result.body_raised:
            return "the check raised before finishing"
        if result.outcome == "pending":
            return "the check did not finish: the session ended before its report"
        if result.outcome in ("failed", "error"):
            first = (result.message or "").strip().splitlines()[:1]
            return f"the check {'failed' if result.outcome == 'failed' else 'errored'}" + (f": {first[0]}" if first else "")
        verdict = self.check_verdict(result)
        if verdict == "fail":
            quarantined = [m.judgement.quarantined for m in result.metrics if m.judgement and m.judgement.quarantined]
            return ("a quarantined failure is a known fault, not a baseline" + (f" ({quarantined[0]})" if quarantined else "")
                    if quarantined else "the check's verdict is fail")
        if verdict == "incomplete":
            return "the check is incomplete"
        return ""

    def store_baselines(self, notify=None) -> None:
        """Write the candidate baseline next to the card; in update mode also merge into baselines/.
        Only checks that ran to a verdict other than fail or incomplete are stored (candidates
        too: they are promoted by copying). The merge re-reads each family under the profile's
        lock, so a concurrent run's update is merged, never overwritten; `notify` hears a wait."""
        by_family: dict[str, tuple[list, dict]] = {}
        for result in self.checks.values():
            if result.outcome == "skipped":
                continue
            refusal = self.baseline_refusal(result)
            if refusal:
                for metric in result.metrics:
                    self.baseline_changes.append(Change(result.family, metric.key, "refused", None, metric.value,
                                                        refusal))
                continue
            metrics, artifacts = by_family.setdefault(result.family, ([], {}))
            # a skipped measurement has nothing to store; a drift metric is relative to the
            # baseline itself, so storing it would compare the next run with the last diff
            metrics.extend(m for m in result.metrics if m.status != "skipped" and not self._rule(m).drift)
            artifacts.update(result.artifacts)
        if not by_family:
            return
        provenance = Provenance(snapshot_engine.digest(self.snapshot), git_revision(self.options.baselines_dir))
        store = self.store if self._store else None
        with (store.locked(notify) if store is not None and self.options.update_baselines else nullcontext()):
            for family, (metrics, artifacts) in sorted(by_family.items()):
                min_samples = {m.key: self._rule(m).min_samples for m in metrics}
                existing = store.reread(family) if store is not None else empty_family(self.profile, family)
                doc, changes = merge(existing, metrics, artifacts, provenance, min_samples)
                doc = redaction.redact_obj(doc)  # an artifact (the configuration) may quote the endpoint
                write_atomic(self.options.report_dir / "candidate-baselines" / self.profile / f"{family}.json", doc)
                if self.options.update_baselines:
                    if any(c.action != "refused" for c in changes) or artifacts:
                        write_atomic(store.path(family), doc)
                    self.baseline_changes.extend(changes)

    # ---- report: the content of metrics.json (the card renders from it) -----------------
    def check_verdict(self, result: CheckResult) -> str:
        if result.outcome == "skipped":
            return "skipped"
        verdicts = [m.judgement.verdict for m in result.metrics if m.judgement]
        if result.outcome in ("failed", "error") and not any(m.judgement and m.judgement.quarantined for m in result.metrics):
            verdicts.append("fail")
        if result.outcome in ("pending", "interrupted"):  # never ran, or stopped inside
            verdicts.append("incomplete")
        return worst(verdicts)

    def to_dict(self, status: str) -> dict[str, Any]:
        checks = []
        for result in self.checks.values():
            checks.append({
                "nodeid": result.nodeid,
                "check": result.check,
                "check_id": result.check_id,
                "family": result.family,
                "params": {k: str(v) for k, v in result.params.items()},
                "markers": result.markers,
                "outcome": result.outcome,
                "verdict": self.check_verdict(result),
                "duration_s": round(result.duration_s, 3),
                "message": result.message,
                "metrics": [m.to_dict() for m in result.metrics],
                "findings": result.findings,
                "monitor": result.monitor,
            })
        check_counts = Counter(c["verdict"] for c in checks)
        metric_counts = Counter(m.get("verdict") or "pending" for c in checks for m in c["metrics"])
        snap = self._snapshot or {}
        data = {
            "schema_version": METRICS_SCHEMA_VERSION,
            "gpucert_version": __version__,
            "status": status,
            "started_at": self.started_at,
            "finished_at": _now() if status != "running" else None,
            # wall time from the session's start (configure) to its end: the terminal and card show it
            "duration_s": self.duration_s if self.duration_s is not None else round(time.monotonic() - self._started, 1),
            "profile": self.profile,
            "profile_source": self.profile_source,
            "git_revision": self.git_revision,
            "baselines_dir": str(self.options.baselines_dir),
            "thresholds": self.options.thresholds.path,
            "update_baselines": self.options.update_baselines,
            "missing_baseline": self.options.missing_baseline,
            "counts": {v: check_counts.get(v, 0) for v in VERDICTS},
            "metric_counts": {v: metric_counts.get(v, 0) for v in VERDICTS},
            "verdict": worst([c["verdict"] for c in checks if c["verdict"] != "skipped"]) if checks else "skipped",
            "notes": self.notes,
            "monitor": self.monitor,
            "stack": {
                "summary": [list(row) for row in snapshot_engine.summary(snap)] if snap else [],
                "digest": snapshot_engine.digest(snap) if snap else None,
                "source": snap.get("source"),
                "gpu_found": snap.get("gpu_found"),
            },
            "checks": checks,
            "skipped": [{"nodeid": c["nodeid"], "check_id": c["check_id"], "reason": c["message"]}
                        for c in checks if c["outcome"] == "skipped"],
            "baseline_changes": [c.__dict__ for c in self.baseline_changes],
            "trends": self.trends,
            "time_budget": self.time_budget,
        }
        data["certification"] = certification.decide(data)
        return data

    def finish(self) -> None:
        """The run's duration, fixed as it ends: metrics.json, the card and the terminal all read it."""
        if self.duration_s is None:
            self.duration_s = round(time.monotonic() - self._started, 1)

    @property
    def git_revision(self) -> str | None:
        """The suite checkout's revision (asked once): which code measured this run."""
        if self._git_revision is False:
            self._git_revision = git_revision(Path(__file__).parent)
        return self._git_revision

    def write_metrics(self, status: str) -> Path:
        """metrics.json is rewritten after every check, so a crash keeps what was measured. Redacted:
        request errors and notes may quote what a server echoed (the API key in a 401 body)."""
        path = self.options.report_dir / "metrics.json"
        write_atomic(path, self.final_dict(status))
        return path

    def final_dict(self, status: str, write_error: str | None = None) -> dict[str, Any]:
        data = json_safe(self.to_dict(status))
        if write_error:
            data["write_error"] = write_error
        # redacted: request errors and notes may quote what a server echoed (the key in a 401 body)
        return redaction.redact_obj(data)

    def write_failed(self, error: str) -> str:
        """The final write failed (a full disk). metrics.json must not stay as the last per-check
        write left it, saying `running`: write it whole with status `failed-to-write`; where there
        is no room for the new file beside the old one, remove the old one first (it is stale)
        and try again; failing that, leave none — no file is honest, a stale one is not.
        Returns what became of it, for the run's error line."""
        path = self.options.report_dir / "metrics.json"
        self.notes.append(f"report not fully written: {error}")
        doc = self.final_dict("failed-to-write", error)
        for attempt in ("as it was", "after removing the stale one"):
            if attempt != "as it was":
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    break
            try:
                write_atomic(path, doc)
                return "metrics.json keeps the measurements with status failed-to-write"
            except OSError:
                continue
        return ("metrics.json could not be written at all (none left behind)" if not path.exists()
                else "metrics.json could not be rewritten")


def json_safe(value: Any) -> Any:
    """Plain JSON: NaN and inf become strings (strict parsers reject them), objects become text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
