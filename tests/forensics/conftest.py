"""The forensics checks' shared parts: the plan (gpucert/data/forensics.yaml or --forensics-file)
and one engine at a time across the captures (gpucert.studies.engines.EnginePool: an engine is
restarted only when a capture's settings change)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucert.forensics.plan import PlanError, load_plan

from ..inference.engine_setup import deselect_absent, engine_pool


def forensics_plan(config: pytest.Config):
    try:
        return load_plan(config.getoption("--forensics-file"))
    except PlanError as exc:
        raise pytest.UsageError(f"gpucert: {exc}") from None


def pytest_generate_tests(metafunc):
    """Checks by capture id and level (the check's parameters: the card and the baselines key on them)."""
    if "capture" not in metafunc.fixturenames:
        return
    plan = forensics_plan(metafunc.config)
    levels = plan.concurrency if "concurrency" in metafunc.fixturenames else plan.offline_prompts
    name = "concurrency" if "concurrency" in metafunc.fixturenames else "prompts"
    cases = [(p.id, n) for p in plan.captures for n in levels]
    metafunc.parametrize(f"capture,{name}", cases, ids=[f"{c}-{name[0]}{n}" for c, n in cases])


def pytest_collection_modifyitems(config, items):
    deselect_absent(config, items, Path(__file__).parent)


@pytest.fixture(scope="session")
def plan(request):
    return forensics_plan(request.config)


@pytest.fixture(scope="session")
def forensics_engines(request, gpucert_report_dir, gpucert_monitor, gpucert_note):
    """The one engine of the captures (stopped at the end of the session)."""
    pool = engine_pool(request.config, gpucert_report_dir / "forensics" / "engine", gpucert_monitor, gpucert_note,
                       "a capture restarts the engine with its profiler configured")
    yield pool
    pool.close()
