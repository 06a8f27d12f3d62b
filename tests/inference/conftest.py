"""The server the inference checks put load on, started once per session.

- `--endpoint URL`: any OpenAI-compatible server gpucert did not start (API key from the variable
  `--api-key-env` names, never logged).
- otherwise: `vllm serve` as an operator starts it, from gpucert/data/serving.yaml with
  `--engine-opt` overrides, run by `--engine-python`; its log goes to the report folder and what it
  reports at start — on its /metrics (KV blocks and capacity, …), else in its log (compile and
  graph-capture time, …) — becomes metrics. Missing vLLM or
  too few GPUs (as the engine's Python sees them) skip the checks with that reason on the card.
- `--engine-cmd JSON`: another command under the same lifecycle (`{port}` where the port goes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucert.serving.configuration import measured_with
from gpucert.serving.target import ServingTarget

from .engine_setup import (check_ray_engine, endpoint_session, endpoint_target, engine_config, engine_in_words,
                           load_from_options, no_local_engine)
from gpucert.serving.vllm_config import engine_command
from gpucert.monitor.attach import nvml_module as nvml_binding
from gpucert.serving.vllm_server import (EngineStartError, VllmServer, free_port, gpu_memory_used_mib,
                                         memory_released)



def pytest_collection_modifyitems(items):
    """Offline first (it needs the GPUs before the server takes them), then the sanity check (does
    the server serve at all), then the load levels. (This hook sees the whole session's items:
    only the inference checks' own slots are reordered.)"""
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    first = {"test_offline_throughput.py": 0, "test_vllm_sanity.py": 1}  # offline needs the GPUs free
    ordered = sorted((items[i] for i in slots), key=lambda item: first.get(item.path.name, 2))
    for slot, item in zip(slots, ordered):
        items[slot] = item


@pytest.hookimpl(tryfirst=True)  # before gpucert claims the report folder: bad input leaves no card
def pytest_collection_finish(session):
    """A Ray cluster that does not answer stops the run before the first check (one line, exit 4)."""
    here = Path(__file__).parent
    if any(item.path.parent == here for item in session.items):
        check_ray_engine(session.config)


def pytest_generate_tests(metafunc):
    if "concurrency" in metafunc.fixturenames:
        levels = load_from_options(metafunc.config).concurrency
        metafunc.parametrize("concurrency", levels, ids=[f"c{n}" for n in levels])


@pytest.fixture(scope="session")
def serving(request, gpucert_report_dir: Path, gpucert_monitor, gpucert_note):
    config = request.config
    load = load_from_options(config)
    # what every serving figure on the card was measured with
    gpucert_note(f"serving load: {load.label}, /v1/{'chat/' if load.endpoint == 'chat' else ''}completions streamed, "
                 f"ignore_eos {'on' if load.ignore_eos else 'off'}; per level max({load.min_requests}, "
                 f"{load.requests_per_level} × concurrency) requests after {load.warmup} warm-up"
                 f"{f', measured {load.repeats} times (the mean, with the repeats as samples)' if load.repeats > 1 else ''}; "
                 f"client processes {load.client_workers}; ramp-up {load.ramp_up_s:g} s")
    if config.getoption("--endpoint"):
        with endpoint_session(config, gpucert_monitor) as endpoint:
            yield endpoint_target(endpoint, load)
        return

    engine = engine_config(config)
    command = None
    if config.getoption("--engine-cmd"):  # another engine on the port the lifecycle would give vLLM
        engine = engine.with_overrides({"port": free_port(engine.host)})
        try:  # the JSON was checked at configure; `{tensor_parallel_size}` etc. take the resolved values
            command = engine_command(config.getoption("--engine-cmd"), engine.port, engine)
        except ValueError as exc:
            pytest.fail(f"gpucert: {exc}", pytrace=False)
    else:
        missing = no_local_engine(engine)
        if missing:
            pytest.skip(missing)
    gpucert_note(engine_in_words(config, engine))
    server = VllmServer(engine, gpucert_report_dir / "engine", command=command)
    nvml_module = nvml_binding()
    memory_before = gpu_memory_used_mib(nvml_module)
    try:
        server.start()
    except EngineStartError as exc:
        pytest.fail(f"the engine did not start: {exc}", pytrace=False)
    try:
        facts = server.engine_facts()
        if gpucert_monitor:
            gpucert_monitor.attach_vllm(f"{server.base_url}/metrics")
        yield ServingTarget(f"{server.base_url}/v1", server.model_name, load, server=server, facts=facts,
                            configuration=measured_with(load, engine))
    finally:
        if gpucert_monitor:
            gpucert_monitor.detach_vllm()
        stopped = server.stop()
        gpucert_note(f"engine stopped by {stopped.signal} after {stopped.seconds:.1f} s; its process group "
                     f"{'is gone' if stopped.group_gone else 'is STILL ALIVE'}; "
                     + memory_released(memory_before, nvml_module))


@pytest.fixture(scope="session")
def offline_sweep(request, gpucert_report_dir: Path, gpucert_monitor):
    """vLLM's LLM.generate over every load level, once, in the engine's Python, before the server
    starts (both cannot hold the GPUs at once)."""
    from gpucert.serving.offline import run_offline
    from .load import prompts_for  # this folder's module, as the checks import it
    config = request.config
    if config.getoption("--endpoint"):
        pytest.skip("offline throughput needs a local vLLM; --endpoint certifies a remote server")
    engine = engine_config(config)
    missing = no_local_engine(engine)
    if missing:
        pytest.skip(missing)
    load = load_from_options(config)
    if gpucert_monitor:  # sampling before the sweep: each level's check takes its window later
        gpucert_monitor.ensure_started()
    return load, run_offline(engine, list(load.concurrency),
                             lambda count, level, repeat=0: prompts_for(load, count, level, repeat),
                             gpucert_report_dir / "offline", ignore_eos=load.ignore_eos, repeats=load.repeats)
