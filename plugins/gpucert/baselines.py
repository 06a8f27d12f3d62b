"""Versioned baselines: baselines/<profile>/<family>.json.

Reading is strict (a file measured on another profile is an error, not a warning). Writing only
ever merges: it touches the metrics this run measured, keeps every other entry, refuses values
that are not finite or rest on too few samples, and replaces the file atomically. The git diff of
baselines/ is the review of an update.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import math
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .metrics import Metric

SCHEMA_VERSION = 1
_PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
# one per profile folder: runs updating the same baselines take turns (fcntl.flock, released
# when its holder exits, however it exits); it holds the holder's pid for the waiting run's message
LOCK_NAME = ".gpucert-baselines.lock"
LOCK_WAIT_S = 600.0  # an update holds the lock for a merge and a few file writes: seconds


class BaselineError(ValueError):
    """A baseline file is unreadable, of another schema, or of another profile."""


@dataclass
class Change:
    family: str
    key: str
    action: str  # added | updated | unchanged | refused
    old: float | None = None
    new: float | None = None
    reason: str = ""
    runs: int = 1  # the separate runs the written value is the median of

    def line(self) -> str:
        rests = f" (median of {self.runs} runs)" if self.runs > 1 else ""
        if self.action == "added":
            return f"+ {self.key} = {self.new:g}{rests}"
        if self.action == "refused":
            return f"! {self.key} not written: {self.reason}"
        delta = f" ({(self.new - self.old) / abs(self.old) * 100:+.1f}%)" if self.old else ""
        return f"~ {self.key}: {self.old:g} -> {self.new:g}{delta}{rests}"


@dataclass
class Provenance:
    """What a baseline write records about where its numbers came from."""

    snapshot_digest: str | None
    git_revision: str | None
    when: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))


def validate_profile(profile: str) -> str:
    if not _PROFILE_RE.match(profile or ""):
        raise BaselineError(f"profile {profile!r} is not a valid name (letters, digits, '.', '_', '-')")
    return profile


def git_revision(cwd: str | Path | None = None) -> str | None:
    """The checkout's HEAD (with '-dirty' when it has changes); None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


class BaselineStore:
    """The baselines of one profile; families are loaded lazily and checked on load."""

    def __init__(self, root: str | Path, profile: str):
        self.root = Path(root)
        self.profile = validate_profile(profile)
        self.dir = self.root / profile
        self._families: dict[str, dict[str, Any]] = {}

    def validate_all(self) -> None:
        """Load every family file now, so a profile mismatch stops the run before it measures."""
        if self.dir.is_dir():
            for path in sorted(self.dir.glob("*.json")):
                self.family(path.stem)

    def family(self, family: str) -> dict[str, Any]:
        if family not in self._families:
            self._families[family] = self._read(family)
        return self._families[family]

    def path(self, family: str) -> Path:
        return self.dir / f"{family}.json"

    def _read(self, family: str) -> dict[str, Any]:
        path = self.path(family)
        if not path.exists():
            return empty_family(self.profile, family)
        try:
            data = loads_strict(path.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as exc:
            raise BaselineError(f"{path}: cannot read baseline ({_one_line(exc)})") from None
        if not isinstance(data, dict):
            raise BaselineError(f"{path}: expected a JSON object at the top level, got {_kind(data)}")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise BaselineError(f"{path}: schema_version {data.get('schema_version')!r} "
                                f"is not supported (expected {SCHEMA_VERSION})")
        if data.get("profile") != self.profile:
            raise BaselineError(f"{path}: measured on profile {data.get('profile')!r}, this run is profile "
                                f"{self.profile!r}; comparing across hardware is refused (use the right --profile "
                                "or --baselines-dir)")
        for section in ("metrics", "artifacts"):
            if not isinstance(data.get(section, {}), dict):
                raise BaselineError(f"{path}: {section!r} must be an object keyed by metric, got {_kind(data[section])}")
        data.setdefault("artifacts", {})
        if "metrics" not in data:
            raise BaselineError(f"{path}: no 'metrics' object")
        for key, entry in data["metrics"].items():
            problem = entry_problem(entry)
            if problem:
                raise BaselineError(f"{path}: metric {key!r}: {problem}; a baseline that is not a finite "
                                    "measurement is never judged against (fix or remove the entry)")
        check_run_fields(path, data["metrics"])
        return data

    def reread(self, family: str) -> dict[str, Any]:
        """The family as it is on disk now (under the lock: another run may have merged into it
        since this run started), replacing what this run loaded when it began."""
        self._families[family] = self._read(family)
        return self._families[family]

    @contextlib.contextmanager
    def locked(self, notify=None, wait_s: float = LOCK_WAIT_S):
        """Hold the profile folder's update lock: read-merge-write of two runs never interleave,
        so neither silently drops the other's update. `notify(text)` hears once that this run
        waits, and for whom."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            if not _try_flock(fd):
                holder = _lock_holder(fd)
                if notify:
                    notify(f"waiting for the baselines lock held by pid {holder} ({path}); "
                           f"up to {wait_s:g} s")
                deadline = time.monotonic() + wait_s
                while not _try_flock(fd):
                    if time.monotonic() > deadline:
                        raise BaselineError(f"{path}: still held by pid {_lock_holder(fd)} after {wait_s:g} s; "
                                            "nothing written to the baselines")
                    time.sleep(0.1)
                if notify:
                    notify(f"baselines lock taken after pid {holder} released it")
            try:  # who holds it, for a run that comes to wait; a full disk must not stop the update
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:
                pass
            yield path
        finally:
            os.close(fd)  # releases the flock

    def entry(self, family: str, key: str) -> dict[str, Any] | None:
        return self.family(family)["metrics"].get(key)

    def artifact(self, family: str, key: str) -> Any:
        return self.family(family)["artifacts"].get(key)


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _lock_holder(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", type(None): "null", bool: "a boolean"}.get(
        type(value), f"a {type(value).__name__}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows (a baseline value must be finite)")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice in one object")
        out[key] = value
    return out


def loads_strict(text: str) -> Any:
    """JSON as the standard says: NaN/Infinity (which Python's json accepts) and a key given
    twice (Python keeps the last silently) are errors."""
    return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def entry_problem(entry: Any) -> str:
    """Why a stored metric entry cannot be judged against ('' if it can): the value must be a
    finite number, its spread a finite number >= 0, its interval two finite numbers holding the
    value, its sample count a whole number. (Other fields are kept as they are: newer versions
    may add some.)"""
    if not isinstance(entry, dict):
        return f"expected an object, got {_kind(entry)}"
    value = entry.get("value")
    if not _finite(value):
        return f"value {value!r} is not a finite number"
    spread = entry.get("spread")
    if spread is not None and not (_finite(spread) and spread >= 0):
        return f"spread {spread!r} is not a finite number >= 0"
    samples = entry.get("samples")
    if samples is not None and (isinstance(samples, bool) or not isinstance(samples, int) or samples < 0):
        return f"samples {samples!r} is not a whole number >= 0"
    ci = entry.get("ci")
    if ci is not None:
        if not (isinstance(ci, list) and len(ci) == 2 and all(_finite(b) for b in ci)):
            return f"ci {ci!r} is not [low, high] of two finite numbers"
        slack = 1e-9 * max(1.0, abs(value))  # the bounds were computed in floating point
        if not (ci[0] - slack <= value <= ci[1] + slack):
            return f"ci {ci!r} does not contain the value {value!r}"
    return ""


def empty_family(profile: str, family: str) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "profile": profile, "family": family, "metrics": {}, "artifacts": {}}


def merge(existing: dict[str, Any], metrics: list[Metric], artifacts: dict[str, Any],
          provenance: Provenance, min_samples: dict[str, int]) -> tuple[dict[str, Any], list[Change]]:
    """A new family document: existing entries kept, this run's good measurements written over."""
    doc = json.loads(json.dumps(existing))  # deep copy
    family = doc["family"]
    changes: list[Change] = []
    for metric in metrics:
        key = metric.key
        old = doc["metrics"].get(key)
        refusal = _refusal(metric, min_samples.get(key, 1))
        if refusal:
            changes.append(Change(family, key, "refused", old and old.get("value"), metric.value, refusal))
            continue
        stats = metric.stats
        runs = merged_runs(old, metric, provenance)
        value = float(np.median([run["value"] for run in runs]))
        ci = metric.ci
        if ci and metric.value and value != metric.value:  # this run's relative width, around the stored value
            ci = (ci[0] * value / metric.value, ci[1] * value / metric.value)
        doc["metrics"][key] = {
            "check": metric.check,
            "params": metric.to_dict()["params"],
            "metric": metric.metric,
            "value": value,
            "unit": metric.unit,
            "direction": metric.direction,
            "spread": stats["iqr"] if stats else 0.0,
            "samples": metric.sample_count,
            # the last run's own interval (relative, around the stored value) and what it is: the
            # next run's change is judged against both noises and the between-run noise of `runs`
            "stat": metric.statistic,
            "method": metric.method,
            "ci": list(ci) if ci else None,
            "ci_method": metric.ci_method,
            # the separate runs the value is the median of (between-run noise, noise.run_noise), and
            # their spread for the reviewer: the standard deviation of ln(value), None below 2 runs
            "runs": runs,
            "run_spread": _run_spread(runs),
            "updated_at": provenance.when,
            "snapshot_digest": provenance.snapshot_digest,
        }
        if old is None:
            changes.append(Change(family, key, "added", None, value, runs=len(runs)))
        elif old.get("value") != value:
            changes.append(Change(family, key, "updated", old.get("value"), value, runs=len(runs)))
        else:
            changes.append(Change(family, key, "unchanged", old.get("value"), value, runs=len(runs)))
    for key, value in artifacts.items():
        doc["artifacts"][key] = value
    doc.update({
        "gpucert_version": __version__,
        "updated_at": provenance.when,
        "git_revision": provenance.git_revision,
        "snapshot_digest": provenance.snapshot_digest,
    })
    return _ordered(doc), changes


# a baseline's value is the median of the last few separate runs; more would keep a node's old
# level long after a slow drift, fewer would leave the between-run spread unknown
MAX_RUNS = 5


def runs_of(entry: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The separate runs an entry rests on, oldest first; an entry written before runs were kept
    counts as one run (its value, date and snapshot)."""
    if not entry:
        return []
    if isinstance(entry.get("runs"), list):
        return [dict(run) for run in entry["runs"]]
    if isinstance(entry.get("value"), (int, float)) and not isinstance(entry.get("value"), bool):
        return [{"value": entry["value"], "at": entry.get("updated_at"), "snapshot_digest": entry.get("snapshot_digest")}]
    return []


def merged_runs(old: dict[str, Any] | None, metric: Metric, provenance: Provenance) -> list[dict[str, Any]]:
    """The runs kept after this one: the last MAX_RUNS of the same level. They start afresh when
    the metric is measured another way than its baseline (Metric.method), when the stack changed (another snapshot digest: the approved upgrade `make update-baselines` is for)
    or when this run's change from the baseline was real — beyond its band and outside the noise
    (judge's `changed`: other settings, a repaired node): runs of another level are not the same
    node's noise, and their median would hold the baseline at the old level."""
    past = runs_of(old)
    if past and past[-1].get("snapshot_digest") != provenance.snapshot_digest:
        past = []
    if old is not None and old.get("method") != metric.method:  # burst runs are not a sustained figure's noise
        past = []
    if metric.judgement is not None and metric.judgement.changed:
        past = []
    this = {"value": metric.value, "at": provenance.when, "snapshot_digest": provenance.snapshot_digest}
    return (past + [this])[-MAX_RUNS:]


def _run_spread(runs: list[dict[str, Any]]) -> float | None:
    values = np.asarray([run["value"] for run in runs], dtype=float)
    if values.size < 2 or (values <= 0).any():
        return None
    return round(float(np.log(values).std(ddof=1)), 6)


def check_run_fields(path: Path, metrics: Any) -> None:
    """The fields the between-run model reads (`runs`, `ci_method`), checked on load: a hand-edited
    or corrupt entry stops the run with one line, never a traceback or a wrong interval."""
    if not isinstance(metrics, dict):
        return
    for key, entry in metrics.items():
        if not isinstance(entry, dict):
            continue
        where = f"{path}: {key}"
        method = entry.get("ci_method")
        if method is not None and not isinstance(method, str):
            raise BaselineError(f"{where}: ci_method must be text, got {method!r}")
        spread = entry.get("run_spread")
        if spread is not None and (isinstance(spread, bool) or not isinstance(spread, (int, float))
                                   or not math.isfinite(spread) or spread < 0):
            raise BaselineError(f"{where}: run_spread must be a finite number >= 0, got {spread!r}")
        if "runs" not in entry:
            continue
        runs = entry["runs"]
        if not isinstance(runs, list) or not 1 <= len(runs) <= MAX_RUNS:
            raise BaselineError(f"{where}: runs must be a list of 1 to {MAX_RUNS} runs, got {runs!r}"[:300])
        for i, run in enumerate(runs):
            value = run.get("value") if isinstance(run, dict) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise BaselineError(f"{where}: runs[{i}] needs a finite number 'value', got {run!r}"[:300])
            for field_name in ("at", "snapshot_digest"):
                if run.get(field_name) is not None and not isinstance(run.get(field_name), str):
                    raise BaselineError(f"{where}: runs[{i}].{field_name} must be text, got {run.get(field_name)!r}")


def _refusal(metric: Metric, min_samples: int) -> str:
    if metric.status != "ok":
        return f"measurement {metric.status}: {metric.error or ''}".strip()
    if metric.value is None or not math.isfinite(metric.value):
        return f"value {metric.value!r} is not finite"
    if any(not math.isfinite(s) for s in metric.samples):
        return "raw samples contain NaN or inf"
    if metric.sample_count < min_samples:
        return f"{metric.sample_count} sample(s), thresholds.yaml asks for at least {min_samples}"
    return ""


def _ordered(doc: dict[str, Any]) -> dict[str, Any]:
    """Header first, then sorted entries, so diffs of baseline files stay small and readable."""
    head = ["schema_version", "profile", "family", "gpucert_version", "updated_at", "git_revision", "snapshot_digest"]
    out = {k: doc.get(k) for k in head}
    out["metrics"] = {k: doc["metrics"][k] for k in sorted(doc["metrics"])}
    out["artifacts"] = {k: doc["artifacts"][k] for k in sorted(doc["artifacts"])}
    return out


def write_atomic(path: Path, doc: dict[str, Any]) -> None:
    """Write next to the target, then rename over it: a crash never leaves half a baseline."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a baseline or a card is for everyone
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(doc, fh, indent=2, sort_keys=False, allow_nan=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
