"""The workload plan: gpucert/data/workloads.yaml (or --workloads-file), read and checked once, so a
typo fails in one line before an engine starts. Each workload is a set of points — one per level
(and per cache setting where `cache_off` asks for the comparison) — each a check of
tests/workloads, `test_serving_workloads[<workload>-<level>]`."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gpucert.studies.plan import PlanError, engine_overrides

from .settings import _FIELDS as LOAD_FIELDS

WORKLOAD_DATASETS = ("prefix", "multiturn", "trace")
SYNTHETIC_KEYS = ("seconds", "rate", "burstiness", "input_len", "output_len", "documents", "shared_blocks", "seed")

__all__ = ["PlanError", "WorkloadPoint", "load_plan"]


@dataclass(frozen=True)
class WorkloadPoint:
    """One check: a workload at one level, with the prefix cache on (vLLM's default) or off."""

    workload: str
    load: dict[str, Any]  # load settings over the serving load
    engine: dict[str, Any]  # engine options of the workload's own
    concurrency: int | None  # None: a trace's replay (its own timestamps)
    cache: bool = True
    synthetic: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        level = "replay" if self.concurrency is None else f"c{self.concurrency}"
        return f"{self.workload}-{level}" + ("" if self.cache else "-cache_off")

    @property
    def engine_settings(self) -> dict[str, Any]:
        """The engine options of this point: prefix caching on (vLLM's default, said explicitly so
        an --engine-cmd can take it as {enable_prefix_caching}) or off."""
        return {**self.engine, "enable_prefix_caching": self.cache}


def load_plan(path: str | Path | None = None) -> list[WorkloadPoint]:
    """Every point of the plan, workload by workload, cache on before off (an engine restart
    between the two, not between every level)."""
    where = str(path) if path else "gpucert/data/workloads.yaml"
    try:
        text = Path(path).read_text() if path else (resources.files("gpucert") / "data" / "workloads.yaml").read_text()
        doc = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{where}: cannot read ({exc})") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"{where}: not valid YAML ({str(exc).splitlines()[0]})") from None
    workloads = (doc or {}).get("workloads") if isinstance(doc, dict) else None
    if not isinstance(workloads, dict) or not workloads:
        raise PlanError(f"{where}: expected a `workloads:` mapping of workload names to settings")
    points: list[WorkloadPoint] = []
    for name, spec in workloads.items():
        points += _points(f"{where}: workloads.{name}", str(name), spec)
    return points


def _points(where: str, name: str, spec: Any) -> list[WorkloadPoint]:
    if not isinstance(spec, dict):
        raise PlanError(f"{where}: expected a mapping, got {spec!r}")
    unknown = sorted(set(spec) - {"load", "engine", "concurrency", "cache_off", "synthetic"})
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {', '.join(unknown)}")
    load = spec.get("load") or {}
    if not isinstance(load, dict) or load.get("dataset") not in WORKLOAD_DATASETS:
        raise PlanError(f"{where}.load: needs dataset: one of {', '.join(WORKLOAD_DATASETS)}")
    bad = sorted(set(load) - set(LOAD_FIELDS))
    if bad:
        raise PlanError(f"{where}.load: unknown load setting(s) {', '.join(bad)}")
    engine = engine_overrides(f"{where}.engine", spec.get("engine"))
    cache_off = spec.get("cache_off", False)
    if not isinstance(cache_off, bool):
        raise PlanError(f"{where}.cache_off: expected true or false, got {cache_off!r}")
    synthetic = spec.get("synthetic") or {}
    if load["dataset"] == "trace":
        if "concurrency" in spec:
            raise PlanError(f"{where}: a trace is replayed at its own timestamps: no concurrency")
        if not synthetic and not load.get("dataset_path"):
            raise PlanError(f"{where}: a trace needs load.dataset_path (a Mooncake-format JSONL file) or synthetic:")
        if not isinstance(synthetic, dict) or set(synthetic) - set(SYNTHETIC_KEYS):
            raise PlanError(f"{where}.synthetic: expected a mapping of {', '.join(SYNTHETIC_KEYS)}")
        levels: list[int | None] = [None]
    else:
        if synthetic:
            raise PlanError(f"{where}.synthetic: only a trace has one")
        levels = spec.get("concurrency")
        if not isinstance(levels, list) or not levels or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in levels):
            raise PlanError(f"{where}.concurrency: expected a list of concurrencies >= 1, got {levels!r}")
    caches = (True, False) if cache_off else (True,)
    return [WorkloadPoint(name, dict(load), engine, level, cache, dict(synthetic))
            for cache in caches for level in levels]
