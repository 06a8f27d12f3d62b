"""The workload checks' shared parts: the plan (gpucert/data/workloads.yaml or --workloads-file), one
engine at a time across the points (restarted only where a point's engine settings change: the
cache-off points) or --endpoint's server, and each point's load: the serving load, the workload's
own settings over it, then --load-opt over both."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucert.serving import workloads
from gpucert.serving.settings import load_settings, parse_assignments
from gpucert.serving.workload_plan import PlanError, load_plan

from ..inference.engine_setup import endpoint_session, engine_pool


def workload_plan(config: pytest.Config):
    try:
        return load_plan(config.getoption("--workloads-file"))
    except PlanError as exc:
        raise pytest.UsageError(f"gpucert: {exc}") from None


def pytest_generate_tests(metafunc):
    """Points by id (the check's parameter, on the card and in the baselines)."""
    if "workload_point" in metafunc.fixturenames:
        ids = [p.id for p in workload_plan(metafunc.config)]
        metafunc.parametrize("workload_point", ids, ids=ids)


@pytest.fixture
def point(request, workload_point: str):
    """The plan's point of this check."""
    return next(p for p in workload_plan(request.config) if p.id == workload_point)


@pytest.fixture(scope="session")
def workload_endpoint(request, gpucert_monitor):
    """--endpoint's server, which serves the points that need no engine of their own; None where
    gpucert starts its engines."""
    if not request.config.getoption("--endpoint"):
        yield None
        return
    with endpoint_session(request.config, gpucert_monitor) as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def workload_engines(request, gpucert_report_dir: Path, gpucert_monitor, gpucert_note):
    """The one engine of the workload points (stopped at the end of the session); None under
    --endpoint (workload_endpoint serves)."""
    if request.config.getoption("--endpoint"):
        yield None
        return
    pool = engine_pool(request.config, gpucert_report_dir / "engine", gpucert_monitor, gpucert_note,
                       "a workload's cache-off level restarts the engine with prefix caching off")
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def workload_results() -> dict:
    """(workload, level) → the cache-on TTFT p50 (ms) this session: the cache-off point's comparison."""
    return {}


def point_load(config: pytest.Config, point, folder: Path):
    """The point's load settings; a synthetic trace is written to `folder` (kept with the report)."""
    try:
        settings = {**point.load, **parse_assignments(config.getoption("--load-opt"), "--load-opt")}
        if point.synthetic and not settings.get("dataset_path"):
            folder.mkdir(parents=True, exist_ok=True)
            rows = workloads.synthetic_trace(**{k: v for k, v in point.synthetic.items()},
                                             block_size=int(settings.get("trace_block_size", 512)))
            settings["dataset_path"] = str(workloads.write_trace(rows, folder / f"{point.workload}-trace.jsonl"))
        return load_settings(settings)
    except ValueError as exc:
        raise pytest.UsageError(f"gpucert: workload {point.id}: {exc}") from None
