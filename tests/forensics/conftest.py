"""The forensics checks' shared parts: the plan (gpucert/data/forensics.yaml or --forensics-file)
and one engine at a time across the captures (gpucert.studies.engines.EnginePool: an engine is
restarted only when a capture's settings change)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucert.forensics.plan import PlanError, load_plan
from gpucert.studies.engines import EnginePool


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
    """A plan without offline levels has no offline checks: deselected, not a row of skips."""
    absent = [item for item in items if item.path.parent == Path(__file__).parent
              and any(str(m.kwargs.get("reason", "")).startswith("got empty parameter set")
                      for m in item.iter_markers("skip"))]
    if absent:
        config.hook.pytest_deselected(items=absent)
        items[:] = [item for item in items if item not in absent]


@pytest.fixture(scope="session")
def plan(request):
    return forensics_plan(request.config)


@pytest.fixture(scope="session")
def forensics_engines(request, gpucert_report_dir, gpucert_monitor, gpucert_note):
    """The one engine of the captures (stopped at the end of the session)."""
    if request.config.getoption("--endpoint"):
        pytest.skip("a capture restarts the engine with its profiler configured; an --endpoint gpucert did not "
                    "start cannot be reconfigured")
    pool = EnginePool(gpucert_report_dir / "forensics" / "engine", command_text=request.config.getoption("--engine-cmd"),
                      attach=gpucert_monitor.attach_vllm if gpucert_monitor else None,
                      detach=gpucert_monitor.detach_vllm if gpucert_monitor else None, note=gpucert_note)
    yield pool
    pool.close()
