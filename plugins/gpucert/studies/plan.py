"""The study plan: gpucert/data/studies.yaml (or --studies-file), read and checked once, so a typo
fails in one line before an engine starts. Each study's points are engine option overrides (the
keys EngineConfig knows) over serving.yaml's engine, under --engine-opt."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gpucert.serving.vllm_config import EngineConfig, field_names
from gpucert.studies.capacity_search import DEFAULT_PROBE_SECONDS


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Point:
    """One engine configuration of a study: its id (the check's parameter) and its overrides."""

    id: str
    engine: dict[str, Any]


def engine_overrides(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PlanError(f"{where}: expected a mapping of engine options, got {value!r}")
    unknown = sorted(set(value) - set(field_names()))
    if unknown:
        raise PlanError(f"{where}: unknown engine option(s) {', '.join(unknown)}")
    try:
        EngineConfig().with_overrides(value)  # types and ranges, as --engine-opt checks them
    except ValueError as exc:
        raise PlanError(f"{where}: {exc}") from None
    return dict(value)


def point_id(overrides: dict[str, Any]) -> str:
    """A short, stable id from the settings a point changes: 'default' for none."""
    short = {"max_num_seqs": "seqs", "max_num_batched_tokens": "tokens", "max_cudagraph_capture_size": "graphs",
             "gpu_memory_utilization": "gmu", "kv_cache_dtype": "kv-", "block_size": "block",
             "enable_chunked_prefill": "chunked", "async_scheduling": "async", "api_server_count": "api",
             "dtype": "", "quantization": "weights-", "enforce_eager": "eager"}
    if not overrides:
        return "default"

    def text(v: Any) -> str:
        return {True: "on", False: "off"}.get(v, str(v)) if isinstance(v, bool) else str(v)

    return "-".join(f"{short.get(k, k)}{text(v)}" for k, v in overrides.items())


def _points(where: str, items: Any) -> tuple[Point, ...]:
    """A list of engine option mappings → Points (ids from their settings)."""
    if not isinstance(items, list):
        raise PlanError(f"{where}: expected a list of engine option mappings")
    return tuple(Point(point_id(o), o) for o in (engine_overrides(f"{where}[{i}]", item) for i, item in enumerate(items)))


def plan_number(where: str, value: Any, low: float, high: float | None = None, integer: bool = False) -> Any:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
    if not ok or (integer and value != int(value)):
        raise PlanError(f"{where}: expected {'an integer' if integer else 'a number'} ≥ {low:g}"
                        + (f" and ≤ {high:g}" if high is not None else "") + f", got {value!r}")
    return int(value) if integer else float(value)


class _Points:
    points: tuple[Point, ...]

    def point(self, point_id: str) -> Point:
        """A point by its id (checks are parametrized by ids: the card and baselines key on them)."""
        return next(p for p in self.points if p.id == point_id)


@dataclass(frozen=True)
class KvCapacityPlan(_Points):
    engine: dict[str, Any]
    points: tuple[Point, ...]
    input_len: int
    output_len: int
    knee_fractions: tuple[float, ...]
    bracket: float
    resolution: float
    max_probes: int
    knee_factor: dict[str, float]
    longest_start: int
    longest_output_len: int


@dataclass(frozen=True)
class BatchingPlan(_Points):
    engine: dict[str, Any]
    points: tuple[Point, ...]
    concurrency: tuple[int, ...]
    # served runs of a level per point; ≥ 2 states each point against the first with an interval
    # (one run of a point differs from the next by a few %: session 30's bf16 repeats spread ±4 %)
    repeats: int = 1


@dataclass(frozen=True)
class TunedPlan(_Points):
    engine: dict[str, Any]
    points: tuple[Point, ...]  # the candidates
    concurrency: int
    starts: int
    offline: bool
    offline_prompts: int
    offline_starts: int = 3  # LLM.generate runs a side (each a fresh engine): its noise is far smaller than served


@dataclass(frozen=True)
class AccuracyPlan:
    model: str  # a real model folder or hub id; "" — no accuracy (never dummy weights)
    reference: str
    backend: str
    documents: int | None


@dataclass(frozen=True)
class PrecisionPlan(_Points):
    engine: dict[str, Any]
    points: tuple[Point, ...]
    concurrency: tuple[int, ...]
    accuracy: AccuracyPlan
    repeats: int = 3  # served runs of a level per variant: the throughput deltas' interval needs ≥ 2


@dataclass(frozen=True)
class SloCapacityPlan:
    engine: dict[str, Any]
    kinds: tuple[str, ...]
    target: float  # a share, 0.99
    probe_requests: int  # 0: the search's default
    probe_seconds: float  # a rate probe's arrivals last at least this long
    start: dict[str, float]
    bounds: dict[str, tuple[float, float]]
    max_probes: int
    resolution: float


@dataclass(frozen=True)
class StudyPlan:
    source: str
    kv_capacity: KvCapacityPlan | None
    batching: BatchingPlan | None
    tuned: TunedPlan | None = None
    precision: PrecisionPlan | None = None
    slo_capacity: SloCapacityPlan | None = None


def _section(doc: dict, name: str) -> dict | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise PlanError(f"{name}: expected a mapping, got {type(value).__name__}")
    return value


def _kv_capacity(raw: dict) -> KvCapacityPlan:
    where = "kv_capacity"
    points = _points(f"{where}.configurations", raw.get("configurations") or [{}])
    context = raw.get("context") or {}
    longest = raw.get("longest_context") or {}
    factors = raw.get("knee_factor") or {"ttft_ms_p99": 2.0, "tpot_ms_p99": 1.5}
    if not isinstance(factors, dict):
        raise PlanError(f"{where}.knee_factor: expected a mapping of metric to factor")
    fractions = raw.get("knee_fractions", [0.125, 0.25, 0.5, 0.75])
    if not isinstance(fractions, list):
        raise PlanError(f"{where}.knee_fractions: expected a list of fractions")
    return KvCapacityPlan(
        engine=engine_overrides(f"{where}.engine", raw.get("engine")), points=points,
        input_len=plan_number(f"{where}.context.input_len", context.get("input_len", 1024), 1, integer=True),
        output_len=plan_number(f"{where}.context.output_len", context.get("output_len", 512), 1, integer=True),
        knee_fractions=tuple(plan_number(f"{where}.knee_fractions", f, 0.001, 1) for f in fractions),
        bracket=plan_number(f"{where}.bracket", raw.get("bracket", 0.15), 0.001, 0.9),
        resolution=plan_number(f"{where}.resolution", raw.get("resolution", 0.02), 0.0001, 0.5),
        max_probes=plan_number(f"{where}.max_probes", raw.get("max_probes", 12), 2, integer=True),
        knee_factor={str(k): plan_number(f"{where}.knee_factor.{k}", v, 1.0) for k, v in factors.items()},
        longest_start=plan_number(f"{where}.longest_context.start", longest.get("start", 1024), 1, integer=True),
        longest_output_len=plan_number(f"{where}.longest_context.output_len", longest.get("output_len", 16), 1,
                                   integer=True))


def _batching(raw: dict) -> BatchingPlan:
    where = "batching"
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise PlanError(f"{where}.grid: expected a mapping of engine option to a non-empty list of values")
    keys = list(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))] or [{}]
    points = [engine_overrides(f"{where}.grid", c) for c in combos]
    variants = raw.get("variants") or []
    if not isinstance(variants, list):
        raise PlanError(f"{where}.variants: expected a list of engine option mappings")
    for i, variant in enumerate(variants):
        points.append({**points[0], **engine_overrides(f"{where}.variants[{i}]", variant)})
    unique = list({point_id(p): p for p in points}.items())
    levels = raw.get("concurrency") or [256, 1024]
    if not isinstance(levels, list):
        raise PlanError(f"{where}.concurrency: expected a list of concurrency levels")
    return BatchingPlan(engine=engine_overrides(f"{where}.engine", raw.get("engine")),
                        points=tuple(Point(pid, p) for pid, p in unique),
                        concurrency=tuple(plan_number(f"{where}.concurrency", c, 1, integer=True) for c in levels),
                        repeats=plan_number(f"{where}.repeats", raw.get("repeats", 1), 1, integer=True))


def _tuned(raw: dict) -> TunedPlan:
    where = "tuned"
    points = _points(f"{where}.candidates", raw.get("candidates") or [])
    offline = raw.get("offline", True)
    if not isinstance(offline, bool):
        raise PlanError(f"{where}.offline: expected true or false, got {offline!r}")
    starts = plan_number(f"{where}.starts", raw.get("starts", 3), 2, integer=True)
    return TunedPlan(engine=engine_overrides(f"{where}.engine", raw.get("engine")), points=points,
                     concurrency=plan_number(f"{where}.concurrency", raw.get("concurrency", 1024), 1, integer=True),
                     starts=starts, offline=offline,
                     offline_prompts=plan_number(f"{where}.offline_prompts", raw.get("offline_prompts", 1024), 1,
                                             integer=True),
                     offline_starts=plan_number(f"{where}.offline_starts", raw.get("offline_starts", starts), 2,
                                            integer=True))


ACCURACY_BACKENDS = ("vllm", "transformers")
ACCURACY_DTYPES = ("float32", "bfloat16", "float16")


def _precision(raw: dict) -> PrecisionPlan:
    where = "precision"
    points = _points(f"{where}.variants", raw.get("variants") or [])
    levels = raw.get("concurrency", [256])
    if not isinstance(levels, list):
        raise PlanError(f"{where}.concurrency: expected a list of concurrency levels")
    acc = raw.get("accuracy") or {}
    if not isinstance(acc, dict):
        raise PlanError(f"{where}.accuracy: expected a mapping")
    backend, reference = acc.get("backend", "vllm"), acc.get("reference", "float32")
    if backend not in ACCURACY_BACKENDS:
        raise PlanError(f"{where}.accuracy.backend: {backend!r} not one of {', '.join(ACCURACY_BACKENDS)}")
    if reference not in ACCURACY_DTYPES:
        raise PlanError(f"{where}.accuracy.reference: {reference!r} not one of {', '.join(ACCURACY_DTYPES)}")
    documents = acc.get("documents")
    model = acc.get("model") or ""
    if not isinstance(model, str):
        raise PlanError(f"{where}.accuracy.model: expected a model folder or hub id, got {model!r}")
    return PrecisionPlan(engine=engine_overrides(f"{where}.engine", raw.get("engine")), points=points,
                         concurrency=tuple(plan_number(f"{where}.concurrency", c, 1, integer=True) for c in levels),
                         accuracy=AccuracyPlan(model, reference, backend,
                                               None if documents is None else
                                               plan_number(f"{where}.accuracy.documents", documents, 2, integer=True)),
                         repeats=plan_number(f"{where}.repeats", raw.get("repeats", 3), 1, integer=True))


def _slo_capacity(raw: dict) -> SloCapacityPlan:
    where = "slo_capacity"
    kinds = raw.get("kinds", ["rate", "concurrency"])
    if not isinstance(kinds, list) or not kinds or any(k not in ("rate", "concurrency") for k in kinds):
        raise PlanError(f"{where}.kinds: expected a list of rate and/or concurrency, got {kinds!r}")
    start, bounds = raw.get("start") or {}, raw.get("bounds") or {}
    if not isinstance(start, dict) or not isinstance(bounds, dict):
        raise PlanError(f"{where}.start and {where}.bounds: expected mappings by kind")
    defaults = {"rate": (64.0, (0.5, 4096.0)), "concurrency": (64, (1, 4096))}
    starts, ranges = {}, {}
    for kind in kinds:
        integer = kind == "concurrency"
        first, (low, high) = defaults[kind]
        pair = bounds.get(kind, [low, high])
        if not (isinstance(pair, list) and len(pair) == 2):
            raise PlanError(f"{where}.bounds.{kind}: expected [low, high]")
        low = plan_number(f"{where}.bounds.{kind}", pair[0], 1 if integer else 1e-6, integer=integer)
        high = plan_number(f"{where}.bounds.{kind}", pair[1], low, integer=integer)
        starts[kind] = plan_number(f"{where}.start.{kind}", start.get(kind, first), low, high, integer=integer)
        ranges[kind] = (low, high)
    return SloCapacityPlan(
        engine=engine_overrides(f"{where}.engine", raw.get("engine")), kinds=tuple(kinds),
        target=plan_number(f"{where}.target_pct", raw.get("target_pct", 99), 50, 99.99) / 100,
        probe_requests=plan_number(f"{where}.probe_requests", raw.get("probe_requests", 0), 0, integer=True),
        probe_seconds=plan_number(f"{where}.probe_seconds", raw.get("probe_seconds", DEFAULT_PROBE_SECONDS), 0, 3600),
        start=starts, bounds=ranges, max_probes=plan_number(f"{where}.max_probes", raw.get("max_probes", 12), 2, integer=True),
        resolution=plan_number(f"{where}.resolution", raw.get("resolution", 0.10), 0.001, 1))


def read_plan_file(path: str | Path | None, packaged: str, option: str) -> tuple[str, Any]:
    """(where it came from, the parsed YAML) of `path`, else of gpucert/data/`packaged`; a file
    that cannot be read or parsed is one PlanError line naming `option`."""
    if path is None:
        text, source = (resources.files("gpucert") / "data" / packaged).read_text(), f"gpucert/data/{packaged}"
    else:
        try:
            text, source = Path(path).read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise PlanError(f"{option} {path}: {exc}") from None
    try:
        return source, yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PlanError(f"{source}: not valid YAML ({str(exc).splitlines()[0]})") from None


def load_plan(path: str | Path | None = None) -> StudyPlan:
    """The plan from `path`, else the packaged studies.yaml; PlanError (one line) when it is wrong."""
    source, doc = read_plan_file(path, "studies.yaml", "--studies-file")
    if not isinstance(doc, dict):
        raise PlanError(f"{source}: expected a mapping of study names")
    try:
        kv = _section(doc, "kv_capacity")
        batching = _section(doc, "batching")
        tuned = _section(doc, "tuned")
        precision = _section(doc, "precision")
        slo = _section(doc, "slo_capacity")
        return StudyPlan(source, _kv_capacity(kv) if kv is not None else None,
                         _batching(batching) if batching is not None else None,
                         _tuned(tuned) if tuned is not None else None,
                         _precision(precision) if precision is not None else None,
                         _slo_capacity(slo) if slo is not None else None)
    except PlanError as exc:
        raise PlanError(f"{source}: {exc}") from None
