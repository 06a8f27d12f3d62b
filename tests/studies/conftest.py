"""The studies' shared parts: the plan (gpucert/data/studies.yaml or --studies-file), one engine at
a time across the points (gpucert.studies.engines), and the load settings each study derives from
the serving load (--load-opt). Points that share an engine configuration run next to each other,
so vLLM restarts only when a point's settings change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gpucert.noise import ratio_interval
from gpucert.serving.summary import measured_window
from gpucert.studies.plan import PlanError, load_plan

from ..inference.engine_setup import deselect_absent, engine_pool, load_from_options, pool_target


def study_plan(config: pytest.Config):
    try:
        return load_plan(config.getoption("--studies-file"))
    except PlanError as exc:
        raise pytest.UsageError(f"gpucert: {exc}") from None


def pytest_generate_tests(metafunc):
    """Points by id (the check's parameter, on the card and in the baselines); a study the plan
    leaves out has no checks (deselected below, not a row of skips)."""
    plan = study_plan(metafunc.config)
    if "kv_point" in metafunc.fixturenames:
        ids = [p.id for p in plan.kv_capacity.points] if plan.kv_capacity else []
        metafunc.parametrize("kv_point", ids, ids=ids)
    if "batching_point" in metafunc.fixturenames:
        cases = [(p.id, c) for p in plan.batching.points for c in plan.batching.concurrency] if plan.batching else []
        metafunc.parametrize("batching_point,concurrency", cases, ids=[f"{p}-c{c}" for p, c in cases])
    if "precision_point" in metafunc.fixturenames and "concurrency" in metafunc.fixturenames:
        cases = [(p.id, c) for p in plan.precision.points for c in plan.precision.concurrency] if plan.precision else []
        metafunc.parametrize("precision_point,concurrency", cases, ids=[f"{p}-c{c}" for p, c in cases])
    elif "precision_point" in metafunc.fixturenames:
        ids = [p.id for p in plan.precision.points] if plan.precision else []
        metafunc.parametrize("precision_point", ids, ids=ids)
    if "capacity_kind" in metafunc.fixturenames:
        kinds = list(plan.slo_capacity.kinds) if plan.slo_capacity else []
        metafunc.parametrize("capacity_kind", kinds, ids=kinds)
    if "tuned_concurrency" in metafunc.fixturenames:
        levels = [plan.tuned.concurrency] if plan.tuned else []
        metafunc.parametrize("tuned_concurrency", levels, ids=[f"c{c}" for c in levels])


def pytest_collection_modifyitems(config, items):
    deselect_absent(config, items, Path(__file__).parent)


@pytest.fixture(scope="session")
def plan(request):
    return study_plan(request.config)


@pytest.fixture(scope="session")
def study_engines(request, gpucert_report_dir: Path, gpucert_monitor, gpucert_note):
    """The one engine of the study points (stopped at the end of the session)."""
    pool = engine_pool(request.config, gpucert_report_dir / "engine", gpucert_monitor, gpucert_note,
                       "a study restarts the engine with each point's settings")
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def study_results() -> list[dict]:
    """What the batching points measured this session ({point, engine, concurrency, output_tok_s,
    tpot_ms_p99, ttft_ms_p99, slo_attainment_pct}): the tuned study chooses from it."""
    return []


@pytest.fixture(scope="session")
def served_rates() -> dict[tuple[str, str, int], list[float]]:
    """Each study point's output tok/s per repeat, by (study, point, concurrency), as this session
    measured them: a later point states its change against the plan's first."""
    return {}


def state_change_against_first(gpucert, study: str, points, point, concurrency: int, repeats: int,
                               served_rates: dict) -> None:
    """Record a point's served output tok/s against the plan's first point at the same level
    (`output_tok_s_delta_pct`, a Welch t 95 % interval on ln over the level's repeats); a notice,
    not a figure, where the first point did not run this session or one repeat gives no interval.
    The repeats share one engine start per point: the label says the start-to-start noise is out."""
    rates = next((m.samples or [m.value] for m in gpucert.metrics if m.metric == "output_tok_s" and m.value), None)
    if rates is None:
        return
    served_rates[(study, point.id, concurrency)] = rates
    reference = points[0].id
    if point.id == reference:
        return
    before = served_rates.get((study, reference, concurrency))
    if before is None:
        gpucert.finding(study, notice=f"{reference} (the first point, the reference) was not measured at "
                                      f"concurrency {concurrency:,} this session: no throughput change stated")
        return
    change = ratio_interval(before, rates, runs="repeats (one engine start each: start-to-start noise not included)")
    if change is None:
        gpucert.finding(study, notice=f"the change against {reference} needs ≥ 2 repeats a side "
                                      f"({study}.repeats is {repeats})")
        return
    gpucert.record("output_tok_s_delta_pct", change[0], unit="%", direction="higher", ci=(change[1], change[2]),
                   ci_method=change[3], note=f"output tok/s against {reference} at concurrency {concurrency:,}")


@pytest.fixture
def study_target(request, study_engines):
    """`study_target(study_engine_settings, point, load)`: a ServingTarget on that point's engine;
    skips where vLLM cannot run here, fails the check (with the log's reason) where its engine
    does not start."""
    config = request.config

    def target(study_engine: dict, point, load):
        """`point`: a plan Point (its id names the engine's log folder)."""
        return pool_target(config, study_engines, {**study_engine, **point.engine}, load, point.id)

    return target


class LoadWindows:
    """The loads one study check runs (probes, each engine start's runs), told to the resource
    monitor as they end: its figures then cover those loads alone, not the engine starts and
    pauses between them (session 27: a check with six engine starts read the GPU 13.7 % busy, its
    loads 35-59 %). `energy_j` is then all the loads' energy, per token over all their tokens."""

    def __init__(self, gpucert):
        self.gpucert, self.windows, self.tokens = gpucert, [], []

    def add(self, window: tuple[float, float] | None, output_tokens: float) -> None:
        if window is None:
            return
        self.windows.append(window)
        self.tokens.append(float(output_tokens))
        self.gpucert.work(windows=self.windows, output_tokens=self.tokens, repeats=False)

    def add_records(self, records, output_tokens: float) -> None:
        """One load's request records (their first send to last end is its window) and its output
        tokens (its Summary's total_output_tokens)."""
        self.add(measured_window(records), output_tokens)


@pytest.fixture
def study_loads(gpucert) -> LoadWindows:
    return LoadWindows(gpucert)


def study_load(config: pytest.Config, **changes):
    """The serving load (--load-opt) with a study's own settings: one measured pass, no warm-up
    unless the study says so."""
    return dataclasses.replace(load_from_options(config), **changes)
