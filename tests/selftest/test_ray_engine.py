"""vLLM across nodes through its Ray backend (issue 18, point 3) on a real local Ray cluster of two
GPU nodes with 2 GPUs each (logical GPUs: Ray accepts them on a CPU box) and one CPU rehearsal
node that must not count: `--engine-opt distributed_executor_backend=ray` gives the engine
RAY_ADDRESS, `tensor_parallel_size: auto` and `pipeline_parallel_size: auto` become TP 2 × PP 2
(GPUs per node × nodes), and the inference checks run end to end against a stand-in engine that
joins the cluster and places 4 workers on both nodes, as vLLM's Ray executor would. Plus the
lowering where the model does not shard, the mp backend unchanged, and the bad-input lines.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpucert import gpus
from gpucert.fleet.nodes import alive_nodes, connect
from gpucert.serving.vllm_config import parallelism

from ..inference import engine_setup
from . import ray_clusters

REPO = Path(__file__).resolve().parents[2]
GPUS_PER_NODE = 2
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def cluster():
    """Two GPU nodes (the head and one more) and a CPU rehearsal node (`gpucert_node`, no GPU);
    this process connected to it (as gpucert's session would be), disconnected before it goes."""
    ray = pytest.importorskip("ray")
    with ray_clusters.local_cluster(2, num_gpus=GPUS_PER_NODE) as local:
        local.add_node(num_cpus=1, object_store_memory=ray_clusters.OBJECT_STORE_BYTES,
                       resources={"gpucert_node": 1})
        local.wait_for_nodes()
        try:
            yield local
        finally:
            ray.shutdown()


class Options:
    """The pytest options engine_setup reads, without a pytest session."""

    def __init__(self, engine_opts: list[str], ray_address: str | None = None):
        self.values = {"--engine-opt": engine_opts, "--engine-python": None, "--ray-address": ray_address,
                       "--endpoint": None}

    def getoption(self, name: str, default=None):
        return self.values.get(name, default)


RAY_AUTO = ["distributed_executor_backend=ray", "tensor_parallel_size=auto", "pipeline_parallel_size=auto"]


# ---- the plan: auto sizes, argv, environment -----------------------------------------------------
@pytest.mark.slow("a real local Ray cluster")
def test_ray_backend_plans_tensor_per_node_and_pipeline_per_node(cluster, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    options = Options(RAY_AUTO, ray_address=cluster.address)
    engine = engine_setup.engine_config(options)
    assert (engine.tensor_parallel_size, engine.pipeline_parallel_size) == (2, 2)  # qwen2.5-1.5b: 12 heads, 28 layers
    argv = " ".join(engine.argv())
    assert "--tensor-parallel-size 2 --pipeline-parallel-size 2" in argv
    assert "--distributed-executor-backend ray" in argv
    assert engine.env["RAY_ADDRESS"] == cluster.address
    assert engine.env["NCCL_NVLS_ENABLE"] == "0"  # serving.yaml's environment kept beside it
    assert parallelism(engine, engine_setup.engine_overrides(options)) == (
        "tensor parallel 2, pipeline parallel 2 across 2 Ray nodes (auto: 2 GPU(s) per node on 2 node(s))")
    # the gate counts the cluster's 4 GPUs, not this node's none
    assert engine_setup._gpus_missing(engine) is None
    wide = engine_setup.engine_config(Options([*RAY_AUTO, "tensor_parallel_size=4"], ray_address=cluster.address))
    assert engine_setup._gpus_missing(wide) == f"vLLM on 8 GPU(s) needs 8, found 4 (on the Ray cluster at {cluster.address})"


def test_without_ray_address_the_callers_RAY_ADDRESS_is_the_engines(cluster, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    engine = engine_setup.engine_config(Options(RAY_AUTO))
    assert engine.env["RAY_ADDRESS"] == cluster.address and engine.world_size == 4


def test_a_model_that_does_not_shard_lowers_the_sizes_and_says_why(cluster, tmp_path):
    # 3 attention heads do not divide over 2 GPUs, 1 layer makes no 2 stages
    (tmp_path / "config.json").write_text(json.dumps({"num_attention_heads": 3, "num_key_value_heads": 3,
                                                      "num_hidden_layers": 1}))
    options = Options([*RAY_AUTO, f"model={tmp_path}"], ray_address=cluster.address)
    engine = engine_setup.engine_config(options)
    assert (engine.tensor_parallel_size, engine.pipeline_parallel_size) == (1, 1)
    assert parallelism(engine, engine_setup.engine_overrides(options)) == (
        "tensor parallel 1 across 2 Ray nodes (auto: 2 GPU(s) per node on 2 node(s), lowered: 3 attention / "
        "3 KV heads do not shard over 2; pipeline parallel lowered: the model's 1 layer(s) do not make 2 stages)")


def test_the_mp_backend_is_unchanged(cluster, monkeypatch):
    """mp: the node's own GPUs (none here → 1), one stage, no RAY_ADDRESS — even with one set."""
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    monkeypatch.setattr(gpus, "visible", lambda: (0, "no CUDA device"))
    options = Options(["tensor_parallel_size=auto", "pipeline_parallel_size=auto"], ray_address=cluster.address)
    engine = engine_setup.engine_config(options)
    assert (engine.tensor_parallel_size, engine.pipeline_parallel_size) == (1, 1)
    assert "RAY_ADDRESS" not in engine.env and "--pipeline-parallel-size" not in engine.argv()
    assert parallelism(engine, engine_setup.engine_overrides(options)) == "tensor parallel 1 (auto: the node's 0 GPU(s))"
    assert engine_setup._gpus_missing(engine).startswith("vLLM on 1 GPU(s) needs 1, found 0")


# ---- end to end: the serving checks against a Ray-backed stand-in engine ------------------------
def pytest_inference(tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "-p", "no:cacheprovider", "-q",
           "-m", "inference", str(REPO / "tests" / "inference"), f"--baselines-dir={tmp_path / 'b'}",
           "--missing-baseline=new", f"--report-dir={tmp_path / 'r'}", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env)


@pytest.mark.slow("a real local Ray cluster")
def test_serving_checks_run_on_a_two_node_ray_engine(cluster, tmp_path):
    import ray  # (the cluster fixture skips without it)
    record = tmp_path / "placed.json"
    stand_in = [sys.executable, "-m", "tests.selftest.ray_engine", "--port", "{port}",
                "--tensor", "{tensor_parallel_size}", "--pipeline", "{pipeline_parallel_size}", "--record", str(record)]
    # no RAY_ADDRESS of ours: the engine's must come from --ray-address through the engine config
    env = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    started = time.monotonic()
    run = pytest_inference(
        tmp_path, "-k", "sanity or serving_baseline", "--load-opt", "concurrency=2", "--load-opt", "output_len=8",
        "--load-opt", "input_len=8", "--load-opt", "min_requests=4", "--load-opt", "warmup=0",
        "--ray-address", cluster.address, *(arg for opt in RAY_AUTO for arg in ("--engine-opt", opt)),
        "--engine-cmd", json.dumps(stand_in), env=env)
    print(f"2-node Ray engine run: {time.monotonic() - started:.1f} s wall")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    ran = {check["check_id"]: check for check in metrics["checks"] if check["outcome"] != "skipped"}
    assert set(ran) == {"vllm_sanity", "serving_baseline[concurrency=2]"}, metrics["skipped"]
    assert all(check["outcome"] == "passed" for check in ran.values()), [c["message"] for c in ran.values()]

    placed = json.loads(record.read_text())
    assert placed["ray_address"] == cluster.address  # it joined the cluster, not a Ray of its own
    assert (placed["tensor"], placed["pipeline"]) == (2, 2)  # the resolved sizes reached its command
    connect(cluster.address)
    gpu_nodes = {node.node_id for node in alive_nodes() if node.gpus}
    assert len(gpu_nodes) == 2  # the rehearsal node is no GPU node
    per_node = {node: sum(r["node_id"] == node for r in placed["ranks"]) for node in gpu_nodes}
    assert list(per_node.values()) == [2, 2], placed["ranks"]  # 2 + 2 workers, both GPU nodes
    for node in gpu_nodes:  # each worker of a node on a GPU of its own, as vLLM's are
        assert sorted(r["cuda_visible_devices"] for r in placed["ranks"] if r["node_id"] == node) == ["0", "1"]
    # stopped by the lifecycle, its workers and their placement group went with it: the GPUs are free
    assert any(note.startswith("engine stopped by SIGTERM") and "process group is gone" in note
               for note in metrics["notes"]), metrics["notes"]
    deadline = time.monotonic() + 30
    while ray.available_resources().get("GPU", 0) < 2 * GPUS_PER_NODE and time.monotonic() < deadline:
        time.sleep(0.5)
    assert ray.available_resources().get("GPU", 0) == 2 * GPUS_PER_NODE, ray.available_resources()

    words = "tensor parallel 2, pipeline parallel 2 across 2 Ray nodes (auto: 2 GPU(s) per node on 2 node(s))"
    assert f"engine: vLLM qwen2.5-1.5b at {words}" in metrics["notes"], metrics["notes"]
    assert "pipeline parallel 2 across 2 Ray nodes" in (tmp_path / "r" / "report.html").read_text()


# ---- bad input: one line, exit 4 -------------------------------------------------------------
@pytest.mark.parametrize("args, env, expected", [
    pytest.param(["--ray-address", "127.0.0.1:1"], {},
                 "ERROR: gpucert: --ray-address 127.0.0.1:1: cannot be reached",
                 marks=pytest.mark.fault("ray engine", "--engine-opt distributed_executor_backend=ray with a "
                                         "--ray-address nothing listens on", "one line, exit 4, before anything runs"),
                 id="option"),
    pytest.param([], {"RAY_ADDRESS": "127.0.0.1:1"},
                 "ERROR: gpucert: distributed_executor_backend=ray: the Ray cluster at 127.0.0.1:1: cannot be reached",
                 marks=pytest.mark.fault("ray engine", "distributed_executor_backend=ray with the caller's RAY_ADDRESS "
                                         "naming a port nothing listens on",
                                         "one line naming RAY_ADDRESS, exit 4, before any check runs"),
                 id="environment"),
])
def test_an_unreachable_cluster_is_one_line_and_exit_4(tmp_path, args, env, expected):
    pytest.importorskip("ray")
    base = {name: value for name, value in os.environ.items() if name != "RAY_ADDRESS"}
    run = pytest_inference(tmp_path, "-k", "sanity", *args, "--engine-opt", "distributed_executor_backend=ray",
                           "--engine-opt", "tensor_parallel_size=auto", env={**base, **env})
    assert run.returncode == 4, run.stdout[-3000:] + run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(expected), run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert not (tmp_path / "r" / "report.html").exists()  # stopped before the run began: no card
    if env:
        assert last.endswith("(from RAY_ADDRESS)"), last
