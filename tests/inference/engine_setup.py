"""How the inference checks and the studies read their options: the load settings, the engine
configuration (serving.yaml under --engine-opt), and whether vLLM can run here at all."""

from __future__ import annotations

import functools
import subprocess
import sys
from contextlib import contextmanager

import pytest

from gpucert import gpus, redaction
from gpucert.serving import ray_cluster
from gpucert.serving.configuration import measured_with
from gpucert.serving.settings import LoadSettings, load_settings, parse_assignments
from gpucert.serving.target import ServingTarget
from gpucert.serving.vllm_config import default_config, parallelism, serving_defaults
from gpucert.serving.vllm_server import Endpoint
from gpucert.studies.engines import EnginePool, EngineUnavailable


def load_from_options(config: pytest.Config) -> LoadSettings:
    try:
        return load_settings(parse_assignments(config.getoption("--load-opt"), "--load-opt"))
    except ValueError as exc:
        raise pytest.UsageError(f"gpucert: {exc}") from None


@functools.cache  # importing vLLM takes seconds: ask each Python once
def _vllm_missing(python: str) -> str | None:
    probe = subprocess.run([python, "-c", "import vllm, sys; sys.stdout.write(vllm.__version__)"],
                           capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        return f"vLLM is not importable by {python} (pass --engine-python, or --endpoint URL)"
    return None


def _gpus_missing(engine) -> str | None:
    address = engine.env.get(ray_cluster.ENV)
    if engine.distributed_executor_backend == "ray" and address:
        # vLLM places its workers on the cluster's GPUs, wherever they are: count those
        try:
            count, reason = sum(ray_cluster.gpus_per_node(address)), f"on the Ray cluster at {address}"
        except ray_cluster.RayClusterError as exc:
            return str(exc)
    else:
        count, reason = gpus.visible_to(engine.engine_python)  # the GPUs vLLM will see, not ours
    if count < engine.world_size:
        return f"vLLM on {engine.world_size} GPU(s) needs {engine.world_size}, found {count}" + (f" ({reason})" if reason else "")
    return None


def engine_overrides(config: pytest.Config) -> dict:
    try:
        overrides = parse_assignments(config.getoption("--engine-opt"), "--engine-opt")
    except ValueError as exc:
        raise pytest.UsageError(f"gpucert: {exc}") from None
    if config.getoption("--engine-python"):
        overrides["engine_python"] = config.getoption("--engine-python")
    return overrides


def engine_config(config: pytest.Config, study: dict | None = None):
    """serving.yaml's engine section with a study point's settings (`study`), then `--engine-opt`
    and `--engine-python`, applied (tensor/pipeline_parallel_size `auto` resolved to numbers).
    Under the Ray backend the engine's environment gets RAY_ADDRESS — `--ray-address`, else the
    caller's — so vLLM joins that cluster rather than starting a Ray of its own, and `auto` is
    planned from that cluster's GPU nodes."""
    overrides = {**(study or {}), **engine_overrides(config)}
    settings = {**serving_defaults()["engine"], **overrides}
    address, source = ray_cluster.address(config.getoption("--ray-address", None))
    if str(settings.get("distributed_executor_backend")).lower() == "ray" and address:
        overrides["env"] = {**(settings.get("env") or {}), ray_cluster.ENV: address}
    try:
        return default_config(overrides)
    except ray_cluster.RayClusterError as exc:
        raise pytest.UsageError(f"gpucert: {exc} (from {source})") from None
    except ValueError as exc:
        raise pytest.UsageError(f"gpucert: {exc}") from None


def check_ray_engine(config: pytest.Config) -> None:
    """Under the Ray backend, the cluster is asked before any check runs: no Ray or no cluster at
    the address is one line and exit 4 (pytest.UsageError from a collection hook), not an error
    in every check's setup."""
    backend = {**serving_defaults()["engine"], **engine_overrides(config)}.get("distributed_executor_backend")
    if str(backend).lower() == "ray" and not config.getoption("--endpoint", None):
        engine_config(config)


def engine_in_words(config: pytest.Config, engine) -> str:
    """The card's note of how the engine is split over the GPUs."""
    return f"engine: vLLM {engine.model} at {parallelism(engine, engine_overrides(config))}"


def no_local_engine(engine) -> str | None:
    """Why vLLM cannot run here as configured, or None."""
    return _vllm_missing(engine.engine_python or sys.executable) or _gpus_missing(engine)


def pool_target(config: pytest.Config, pool, settings: dict, load, name: str):
    """A ServingTarget on `pool`'s engine (an EnginePool: engine_pool) with `settings` over the
    configured engine (engine_config), its log folder named `name`: skips where vLLM cannot run
    here (unless --engine-cmd starts the engine), fails the check with the log's reason where the
    engine does not start."""
    engine = engine_config(config, settings)
    if not config.getoption("--engine-cmd"):
        missing = no_local_engine(engine)
        if missing:
            pytest.skip(missing)
    try:
        return pool.target(engine, load, name)
    except EngineUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


def deselect_absent(config: pytest.Config, items: list, folder) -> None:
    """Checks of `folder` whose parametrization came out empty (a study or a capture the plan
    leaves out) are deselected, not shown as a row of skips."""
    absent = [item for item in items if item.path.parent == folder
              and any(str(m.kwargs.get("reason", "")).startswith("got empty parameter set")
                      for m in item.iter_markers("skip"))]
    if absent:
        config.hook.pytest_deselected(items=absent)
        items[:] = [item for item in items if item not in absent]


def engine_pool(config: pytest.Config, workdir, monitor, note, why_not_endpoint: str):
    """One engine at a time for checks that restart vLLM with settings of their own (studies,
    forensics captures); skips under --endpoint (a server gpucert did not start cannot be
    reconfigured). The caller closes it."""
    if config.getoption("--endpoint"):
        pytest.skip(f"{why_not_endpoint}; an --endpoint gpucert did not start cannot be reconfigured")
    return EnginePool(workdir, command_text=config.getoption("--engine-cmd"),
                      attach=monitor.attach_vllm if monitor else None,
                      detach=monitor.detach_vllm if monitor else None, note=note)


@contextmanager
def endpoint_session(config: pytest.Config, monitor):
    """--endpoint's server (its model discovered; a bad URL or a dead server fails the check in
    one line, the URL shown without its password), the session's monitor reading its /metrics
    while it is used — unless keyed: a keyed endpoint's /metrics is not ours to read."""
    try:
        endpoint = Endpoint(config.getoption("--endpoint"), config.getoption("--endpoint-model"),
                            config.getoption("--api-key-env")).discover_model()
    except (ValueError, OSError) as exc:
        shown = redaction.display_url(config.getoption("--endpoint"))
        pytest.fail(f"endpoint {shown}: {redaction.redact(str(exc))}", pytrace=False)
    if monitor and not endpoint.keyed:
        monitor.attach_vllm(endpoint.v1_url.removesuffix("/v1") + "/metrics")
    try:
        yield endpoint
    finally:
        if monitor:
            monitor.detach_vllm()


def endpoint_target(endpoint: Endpoint, load: LoadSettings) -> ServingTarget:
    """A ServingTarget on --endpoint's server; the configuration kept with the baseline shows the
    URL without its password or key."""
    return ServingTarget(endpoint.v1_url, endpoint.model, load, endpoint.api_key_env,
                         configuration=measured_with(load, endpoint=endpoint.display_url, model=endpoint.model))
