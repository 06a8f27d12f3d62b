"""The nightly history: one compact record per run in `<history-dir>/<profile>/`, and the trends
the card draws from the last of them.

A record is metrics.json without raw samples (a few kB per check family instead of a MB): per
metric its value, unit, verdict, interval and whether it is a headline metric; the run's verdict,
times and git revision; and the stack summary with its digest, so that a step in a trend can be
set beside what changed on the node between the two runs (driver, CUDA, vLLM, clocks …) — the
likely cause.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .baselines import loads_strict, validate_profile, write_atomic
from .metrics import finite_number, metric_check_id

TREND_RUNS = 20  # the card's trends cover this run and the 19 before it
_STAMP = re.compile(r"[^0-9A-Za-z]+")


def record(data: dict[str, Any]) -> dict[str, Any]:
    """The history record of one run (metrics.json's dict)."""
    metrics = {}
    for check in data.get("checks", []):
        for m in check.get("metrics", []):
            value = finite_number(m.get("value"))
            if value is None:
                continue
            metrics[m["key"]] = {"value": value, "unit": m.get("unit"), "verdict": m.get("verdict"),
                                 "ci": m.get("ci"), "headline": bool(m.get("headline")),
                                 "check_id": metric_check_id(m), "metric": m.get("metric")}
    stack = data.get("stack") or {}
    return {"started_at": data.get("started_at"), "finished_at": data.get("finished_at"),
            "status": data.get("status"), "verdict": data.get("verdict"), "profile": data.get("profile"),
            "gpucert_version": data.get("gpucert_version"), "git_revision": data.get("git_revision"),
            "stack": {"digest": stack.get("digest"), "summary": stack.get("summary") or []},
            "metrics": metrics}


def append(history_dir: str | Path, data: dict[str, Any]) -> Path:
    """Add this run's record; the file name sorts by start time."""
    profile = validate_profile(data.get("profile") or "unknown")
    stamp = _STAMP.sub("", data.get("started_at") or "") or "undated"
    folder = Path(history_dir) / profile
    path = folder / f"{stamp}.json"
    n = 1
    while path.exists():  # two runs in one second: keep both
        n += 1
        path = folder / f"{stamp}-{n}.json"
    write_atomic(path, record(data))
    return path


def _order(path: Path) -> tuple[str, int]:
    """By start time, then by the -N of runs started in the same second."""
    stamp, _, n = path.stem.partition("-")
    return stamp, int(n) if n.isdigit() else 1


def load(history_dir: str | Path, profile: str, limit: int = TREND_RUNS - 1) -> tuple[list[dict], list[str]]:
    """The profile's last `limit` records, oldest first, and one note per unreadable file (a
    broken record is skipped, never fatal: the nightly still judges against the baselines)."""
    folder = Path(history_dir) / validate_profile(profile)
    records, notes = [], []
    for path in sorted(folder.glob("*.json"), key=_order)[-limit:] if limit > 0 else []:
        try:
            entry = loads_strict(path.read_bytes().decode("utf-8"))
            if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
                raise ValueError("not a gpucert history record")
            for key, m in entry["metrics"].items():
                # its values widen the judge's run-to-run noise: a garbage one must not
                if not isinstance(m, dict) or finite_number(m.get("value")) is None:
                    raise ValueError(f"metric {key!r} has no finite value")
            records.append(entry)
        except (OSError, ValueError) as exc:
            notes.append(f"history record {path.name} skipped: {' '.join(str(exc).split())}")
    return records, notes


def stack_changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed in the stack summary between two records: 'driver: 580.95 → 590.10'."""
    if (before.get("stack") or {}).get("digest") == (after.get("stack") or {}).get("digest"):
        return []
    old = {row[0]: row[1] for row in (before.get("stack") or {}).get("summary") or [] if len(row) == 2}
    new = {row[0]: row[1] for row in (after.get("stack") or {}).get("summary") or [] if len(row) == 2}
    changes = [f"{label}: {old.get(label, '—')} → {new.get(label, '—')}"
               for label in list(old) + [k for k in new if k not in old] if old.get(label) != new.get(label)]
    # the digest covers more than the summary (serials, per-link states …)
    return changes or ["stack snapshot changed (details outside the summary: see the stack check)"]


def trends(past: list[dict], current: dict) -> list[dict[str, Any]]:
    """Per headline metric of this run: its values over the past records and this one, and the
    points between which the stack changed."""
    runs = past + [current]
    drift = [{"after": i, "when": runs[i].get("started_at"), "changes": stack_changes(runs[i - 1], runs[i])}
             for i in range(1, len(runs))]
    drift = [d for d in drift if d["changes"]]
    out = []
    for key, now in current["metrics"].items():
        if not now.get("headline"):
            continue
        points = [{"run": i, "when": r.get("started_at"), "value": r["metrics"][key]["value"],
                   "verdict": r["metrics"][key].get("verdict"), "ci": r["metrics"][key].get("ci")}
                  for i, r in enumerate(runs) if key in r.get("metrics", {})]
        out.append({"key": key, "check_id": now["check_id"], "metric": now["metric"], "unit": now["unit"],
                    "points": points, "drift": drift})
    return out


def past_values(records: list[dict]) -> dict[str, list[float]]:
    """Each metric's values in the past runs where it was not a regression (pass, warn, new): the
    node's normal run-to-run spread, which the judge adds to its baseline's own noise. A night
    that failed is left out, so a regression that persists never widens the noise that hides it."""
    values: dict[str, list[float]] = {}
    for entry in records:
        for key, m in entry.get("metrics", {}).items():
            if m.get("verdict") in ("pass", "warn", "new") and isinstance(m.get("value"), (int, float)):
                values.setdefault(key, []).append(float(m["value"]))
    return values
