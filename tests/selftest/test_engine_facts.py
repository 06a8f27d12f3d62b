"""What the engine reports at start: its /metrics (`vllm:cache_config_info`) first, its log for
the rest and as the fallback. The /metrics side is the repo's emulator answering over HTTP on
127.0.0.1 in vLLM's exposition format; the log side the real vLLM 0.26.0 log captured on 2× H100."""

import asyncio
import json
import sys

import pytest

from gpucert.serving import vllm_metrics
from gpucert.serving.emulator import EMULATED_CACHE_CONFIG, EmulatorConfig, EmulatorServer
from gpucert.serving.vllm_server import free_port

from .test_inference_checks import REPO, by_check, pytest_inference

LOG = REPO / "tests" / "fixtures" / "h100x2-nvlink" / "vllm-0.26.0-serve-tp2.log"
LOGGED_TOKENS = 5_280_176  # "GPU KV cache size: 5,280,176 tokens" in LOG
LOGGED_BLOCKS = LOGGED_TOKENS // 16  # the same cache as blocks of 16 tokens
INFO = "vllm:cache_config_info"


def cache_config(**labels):
    """The emulator's labels with some replaced; a value None drops the label."""
    merged = {**EMULATED_CACHE_CONFIG, **labels}
    return {key: value for key, value in merged.items() if value is not None}


# as vLLM releases before the capacity labels publish their CacheConfig
WITHOUT_CAPACITY = {"kv_cache_size_tokens": None, "kv_cache_max_concurrency": None}


def facts_from(config: dict | None, log_text: str | None, tmp_path):
    """engine_facts against the emulator publishing `config` (None: no cache_config_info line)
    over HTTP, with `log_text` as the engine's log (None: the real captured log)."""
    log = tmp_path / "vllm-serve.log"
    log.write_text(LOG.read_text() if log_text is None else log_text)

    async def go():
        async with EmulatorServer(EmulatorConfig(cache_config=config)) as server:
            return await asyncio.to_thread(vllm_metrics.engine_facts, server.base_url.removesuffix("/v1"), log)
    return asyncio.run(go())


def without_kv_lines(text: str) -> str:
    """The captured log as a later vLLM might word it: no 'GPU KV cache size' / 'Maximum
    concurrency' lines for the log parser to find."""
    return "".join(line for line in text.splitlines(keepends=True)
                   if "GPU KV cache size" not in line and "Maximum concurrency" not in line)


def test_the_emulator_publishes_cache_config_info_as_vllm_does(tmp_path):
    """One info gauge of value 1, vLLM's HELP text, the labels sorted by name with the engine's."""
    async def go():
        async with EmulatorServer(EmulatorConfig()) as server:
            return await asyncio.to_thread(vllm_metrics.fetch, server.base_url.removesuffix("/v1"))
    text = asyncio.run(go())
    lines = [line for line in text.splitlines() if INFO in line]
    assert lines[:2] == [f"# HELP {INFO} Information of the LLMEngine CacheConfig", f"# TYPE {INFO} gauge"]
    sample = lines[2]
    assert sample.startswith(INFO + '{_block_size_resolved="True",block_size="16",') and sample.endswith("} 1.0")
    names = [pair.split("=")[0] for pair in sample[len(INFO) + 1:-len("} 1.0")].split('",')]
    assert names == sorted(names) and "engine" in names
    assert vllm_metrics.cache_config(text) == {"0": {**EMULATED_CACHE_CONFIG, "engine": "0"}}


def test_kv_facts_come_from_metrics_where_the_log_lacks_them(tmp_path):
    """A vLLM whose log no longer says 'GPU KV cache size' (an upgrade reworded it): KV capacity
    is num_gpu_blocks × block_size from /metrics; what only the log has (compile time) stays."""
    facts = facts_from(cache_config(num_gpu_blocks=str(LOGGED_BLOCKS), **WITHOUT_CAPACITY),
                       without_kv_lines(LOG.read_text()), tmp_path)
    assert facts["kv_cache_tokens"] == LOGGED_TOKENS
    assert facts["num_gpu_blocks"] == LOGGED_BLOCKS and facts["block_size"] == 16
    assert facts["sources"]["kv_cache_tokens"] == f"vLLM's /metrics ({INFO}: num_gpu_blocks × block_size)"
    assert facts["compile_s"] == 25.81 and facts["sources"]["compile_s"] == "the engine log"
    assert "max_concurrency" not in facts  # neither source has it here
    assert "metrics_problems" not in facts


def test_metrics_are_preferred_to_the_log(tmp_path):
    """Where both say it, /metrics wins: vLLM's own capacity labels over the log's lines, the cache
    config over the log's config dump."""
    facts = facts_from(cache_config(num_gpu_blocks="312500", kv_cache_size_tokens="5000000",
                                    kv_cache_max_concurrency="1220.703125", cache_dtype="fp8_e4m3",
                                    gpu_memory_utilization="0.85"), None, tmp_path)
    assert facts["kv_cache_tokens"] == 5_000_000  # the log says 5,280,176
    assert facts["max_concurrency"] == pytest.approx(1220.703125)  # the log says 1289.11
    assert facts["kv_cache_dtype"] == "fp8_e4m3" and facts["gpu_memory_utilization"] == 0.85
    assert facts["sources"]["kv_cache_tokens"] == f"vLLM's /metrics ({INFO}: kv_cache_size_tokens)"
    assert facts["sources"]["max_concurrency"] == f"vLLM's /metrics ({INFO}: kv_cache_max_concurrency)"
    assert vllm_metrics.source_note(facts, "kv_cache_tokens") == f"from vLLM's /metrics ({INFO}: kv_cache_size_tokens)"
    assert vllm_metrics.source_note(facts, "compile_s") == "from the engine log"


def test_decoy_block_size_labels_are_not_the_block_size():
    """vLLM's labels include mamba_block_size, prefix_match_unit, user_specified_block_size …: only
    `block_size` is read (a prometheus_client parse, not a substring search)."""
    text = (f'{INFO}{{_block_size_resolved="True",block_size="784",engine="0",hash_block_size="64",'
            f'mamba_block_size="1024",num_gpu_blocks="208",user_specified_block_size="False"}} 1.0\n')
    facts, sources, problems = vllm_metrics.parse(text)
    assert facts["block_size"] == 784 and facts["kv_cache_tokens"] == 208 * 784 and problems == []


def test_hybrid_model_keeps_the_log_s_group_aware_capacity(tmp_path):
    """Without kv_cache_size_tokens, blocks × block size overstates a model whose KV groups share the
    blocks; the log's figure (vLLM's own) is kept, and the card says why."""
    facts = facts_from(cache_config(num_gpu_blocks=str(LOGGED_BLOCKS * 3), **WITHOUT_CAPACITY), None, tmp_path)
    assert facts["kv_cache_tokens"] == LOGGED_TOKENS and facts["sources"]["kv_cache_tokens"] == "the engine log"
    assert facts["num_gpu_blocks"] == LOGGED_BLOCKS * 3  # still what vLLM published
    assert facts["metrics_problems"] == [f"num_gpu_blocks × block_size = {LOGGED_TOKENS * 3:,} tokens, the log's "
                                         f"'GPU KV cache size' {LOGGED_TOKENS:,} (KV cache groups share the blocks): "
                                         "the log's kept"]


def test_log_is_the_fallback_where_the_metric_is_absent(tmp_path):
    """An older vLLM (or another server) without cache_config_info: every fact from the log, the
    reason on the card."""
    facts = facts_from(None, None, tmp_path)
    assert facts["kv_cache_tokens"] == LOGGED_TOKENS and facts["max_concurrency"] == pytest.approx(1289.11)
    assert facts["kv_cache_dtype"] == "auto" and facts["enable_prefix_caching"] is True
    assert set(facts["sources"].values()) == {"the engine log"}
    assert "num_gpu_blocks" not in facts and "block_size" not in facts
    assert vllm_metrics.source_note(facts, "kv_cache_tokens") == (
        f"from the engine log ({INFO} not published on /metrics)")


def test_log_is_the_fallback_where_metrics_do_not_answer(tmp_path):
    log = tmp_path / "vllm-serve.log"
    log.write_text(LOG.read_text())
    facts = vllm_metrics.engine_facts(f"http://127.0.0.1:{free_port()}", log, timeout_s=2)
    assert facts["kv_cache_tokens"] == LOGGED_TOKENS and facts["sources"]["kv_cache_tokens"] == "the engine log"
    problem, = facts["metrics_problems"]
    assert problem.startswith("GET /metrics failed (") and "refused" in problem.lower()


def test_not_profiled_yet_means_no_capacity_from_metrics(tmp_path):
    """num_gpu_blocks "None" (str(None): read before vLLM profiled the memory)."""
    facts = facts_from(cache_config(num_gpu_blocks="None", **WITHOUT_CAPACITY), None, tmp_path)
    assert facts["kv_cache_tokens"] == LOGGED_TOKENS and facts["sources"]["kv_cache_tokens"] == "the engine log"
    assert facts["block_size"] == 16  # what it did publish is used
    assert facts["metrics_problems"] == [f"{INFO} gives no KV capacity (num_gpu_blocks='None', block_size='16')"]


@pytest.mark.parametrize("labels, problem", [
    pytest.param({"num_gpu_blocks": "lots", **WITHOUT_CAPACITY},
                 f"{INFO} label num_gpu_blocks='lots' is not a whole number",
                 marks=pytest.mark.fault("serving", "vllm:cache_config_info with num_gpu_blocks=\"lots\"",
                                         "KV capacity from the engine log, the label named on the card; no traceback"),
                 id="blocks-not-a-number"),
    pytest.param({"block_size": "-16", **WITHOUT_CAPACITY},
                 f"{INFO} label block_size='-16' is not a positive count",
                 marks=pytest.mark.fault("serving", "vllm:cache_config_info with block_size=\"-16\"",
                                         "KV capacity from the engine log, the label named on the card; no traceback"),
                 id="negative-block-size"),
    pytest.param({"kv_cache_size_tokens": "5.3M", "kv_cache_max_concurrency": None,
                  "num_gpu_blocks": str(LOGGED_BLOCKS)},
                 f"{INFO} label kv_cache_size_tokens='5.3M' is not a whole number",
                 marks=pytest.mark.fault("serving", "vllm:cache_config_info with kv_cache_size_tokens=\"5.3M\"",
                                         "KV capacity from num_gpu_blocks × block_size, the label named; no traceback"),
                 id="capacity-label-garbled"),
])
def test_a_malformed_label_is_one_line_and_costs_only_its_facts(tmp_path, labels, problem):
    facts = facts_from(cache_config(**labels), None, tmp_path)
    assert facts["kv_cache_tokens"] == LOGGED_TOKENS
    assert facts["metrics_problems"][0] == problem
    assert facts["sources"]["kv_cache_dtype"] == f"vLLM's /metrics ({INFO}: cache_dtype)"  # the rest still read


@pytest.mark.fault("serving", "a vllm:cache_config_info line cut inside a label value",
                   "every fact from the engine log, 'not Prometheus text' on the card; no traceback")
def test_an_unparsable_info_line_falls_back_to_the_log():
    with pytest.raises(vllm_metrics.MetricsError, match=rf"^{INFO}: not Prometheus text \("):
        vllm_metrics.parse(f'# TYPE {INFO} gauge\n{INFO}{{block_size="16,engine="0"}} 1.0\n')


def test_engines_that_differ_are_listed():
    """Data parallel: one sample per engine; the first engine's figures, per_engine where they differ."""
    text = "".join(f'{INFO}{{block_size="16",cache_dtype="auto",engine="{e}",num_gpu_blocks="{n}"}} 1.0\n'
                   for e, n in (("1", 900), ("0", 1000)))
    facts, _, _ = vllm_metrics.parse(text)
    assert facts["kv_cache_tokens"] == 16_000
    assert facts["per_engine"] == {"num_gpu_blocks": {"0": 1000, "1": 900}, "kv_cache_tokens": {"0": 16_000, "1": 14_400}}


def stand_in(cache_config: dict | None) -> str:
    """The engine command: print the captured vLLM log, then serve as the emulator publishing
    `cache_config` on /metrics."""
    return ("import json, sys\n"
            f"sys.stdout.write(open({str(LOG)!r}).read()); sys.stdout.flush()\n"
            "from gpucert.serving.emulator import EmulatorConfig, serve\n"
            f"serve(EmulatorConfig(ttft_ms=2, itl_ms=1, cache_config=json.loads({json.dumps(cache_config)!r})),"
            " port=int(sys.argv[1]))\n")


def sanity_run(tmp_path, config):
    run, metrics = pytest_inference(
        tmp_path, "-k", "sanity", "--load-opt", "output_len=8", "--load-opt", "input_len=8",
        "--engine-cmd", json.dumps([sys.executable, "-c", stand_in(config), "{port}"]))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    return by_check(metrics)["vllm_sanity"]


@pytest.mark.slow("child pytest sessions")
def test_the_sanity_check_records_kv_capacity_from_metrics(tmp_path):
    """End to end (`pytest -m inference` through the engine lifecycle): the KV capacity on the card
    is the one /metrics published, the note says so; compile time still from the log."""
    sanity = sanity_run(tmp_path, cache_config(num_gpu_blocks="312500", kv_cache_size_tokens="5000000",
                                               kv_cache_max_concurrency="1220.703125"))
    assert sanity["kv_cache_tokens"]["value"] == 5_000_000
    assert sanity["kv_cache_tokens"]["note"] == f"from vLLM's /metrics ({INFO}: kv_cache_size_tokens)"
    assert sanity["max_concurrency"]["value"] == pytest.approx(1220.703125)
    assert sanity["compile_s"]["value"] == 25.81 and sanity["compile_s"]["note"] == "from the engine log"
    engine, = sanity["_check"]["findings"]["engine"]
    assert engine["block_size"] == "16" and engine["vllm_version"] == "0.26.0"


@pytest.mark.fault("serving", "vLLM's /metrics publishes cache_config_info with num_gpu_blocks=\"lots\" "
                              "(pytest -m inference, engine lifecycle)",
                   "the sanity check passes; KV capacity from the log, the bad label named in its note; no traceback")
@pytest.mark.slow("child pytest sessions")
def test_a_malformed_label_end_to_end_is_a_note_not_a_traceback(tmp_path):
    sanity = sanity_run(tmp_path, cache_config(num_gpu_blocks="lots", **WITHOUT_CAPACITY))
    assert sanity["_check"]["outcome"] == "passed"
    assert sanity["kv_cache_tokens"]["value"] == LOGGED_TOKENS
    assert sanity["kv_cache_tokens"]["note"] == (f"from the engine log ({INFO} label num_gpu_blocks='lots' "
                                                 "is not a whole number)")
