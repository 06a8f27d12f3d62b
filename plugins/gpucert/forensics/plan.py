"""The forensics plan: gpucert/data/forensics.yaml (or --forensics-file), read and checked once so a
typo fails in one line before an engine starts. Captures are engine option overrides over
serving.yaml's engine, under --engine-opt, like the studies' points."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpucert.studies.plan import PlanError, Point, engine_overrides, plan_number, point_id, read_plan_file

from .capture import PROFILER_KINDS

__all__ = ["ForensicsPlan", "PlanError", "load_plan"]


@dataclass(frozen=True)
class ForensicsPlan:
    source: str
    engine: dict[str, Any]
    captures: tuple[Point, ...]
    concurrency: tuple[int, ...]
    warmup_s: float
    window_s: float
    min_batch_pct: float
    windows: int
    attempts: int
    offline_prompts: tuple[int, ...]
    profiler: str  # auto | torch | nsys
    delay_iterations: int
    max_iterations: int
    gap_us: float

    def capture(self, capture_id: str) -> Point:
        return next(p for p in self.captures if p.id == capture_id)


def _levels(where: str, value: Any, default: list[int]) -> tuple[int, ...]:
    value = default if value is None else value
    if not isinstance(value, list):
        raise PlanError(f"{where}: expected a list of levels")
    return tuple(plan_number(where, v, 1, integer=True) for v in value)


def _mapping(where: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PlanError(f"{where}: expected a mapping")
    return value


def load_plan(path: str | Path | None = None) -> ForensicsPlan:
    """The plan from `path`, else the packaged forensics.yaml; PlanError (one line) when wrong."""
    source, doc = read_plan_file(path, "forensics.yaml", "--forensics-file")
    try:
        return _plan(source, _mapping("the file", doc))
    except PlanError as exc:
        raise PlanError(f"{source}: {exc}") from None


def _plan(source: str, doc: dict) -> ForensicsPlan:
    unknown = sorted(set(doc) - {"engine", "captures", "served", "offline", "profiler", "gap_us"})
    if unknown:
        raise PlanError(f"unknown section(s) {', '.join(map(str, unknown))}")
    raw_captures = doc.get("captures", [{}])
    if not isinstance(raw_captures, list) or not raw_captures:
        raise PlanError("captures: expected a non-empty list of engine option mappings")
    captures = [engine_overrides(f"captures[{i}]", c) for i, c in enumerate(raw_captures)]
    ids = [point_id(c) for c in captures]
    if len(set(ids)) != len(ids):
        raise PlanError(f"captures: the same engine settings twice ({', '.join(ids)})")
    served, offline, profiler = (_mapping(k, doc.get(k)) for k in ("served", "offline", "profiler"))
    windows = plan_number("served.windows", served.get("windows", 5), 1, integer=True)
    attempts = plan_number("served.attempts", served.get("attempts", 7), 1, integer=True)
    if attempts < windows:
        raise PlanError(f"served.attempts: {attempts} window(s) in all cannot give the {windows} of served.windows")
    kind = profiler.get("kind", "auto")
    if kind not in ("auto", *PROFILER_KINDS):
        raise PlanError(f"profiler.kind: {kind!r} not one of auto, {', '.join(PROFILER_KINDS)}")
    return ForensicsPlan(
        source=source, engine=engine_overrides("engine", doc.get("engine")),
        captures=tuple(Point(i, c) for i, c in zip(ids, captures)),
        concurrency=_levels("served.concurrency", served.get("concurrency"), [256]),
        warmup_s=plan_number("served.warmup_s", served.get("warmup_s", 5), 0),
        window_s=plan_number("served.window_s", served.get("window_s", 3), 0.1),
        min_batch_pct=plan_number("served.min_batch_pct", served.get("min_batch_pct", 50), 0, 100),
        windows=windows, attempts=attempts,
        offline_prompts=_levels("offline.prompts", offline.get("prompts"), []),
        profiler=kind,
        delay_iterations=plan_number("profiler.delay_iterations", profiler.get("delay_iterations", 10), 0,
                                     integer=True),
        max_iterations=plan_number("profiler.max_iterations", profiler.get("max_iterations", 100), 0, integer=True),
        gap_us=plan_number("gap_us", doc.get("gap_us", 20), 0.001))
