"""EngineConfig → `vllm serve` argv: defaults from serving.yaml, every option, overrides, validation."""

import sys

import pytest

from gpucert import gpus
from gpucert.serving.vllm_config import EngineConfig, auto_tensor_parallel, default_config, field_names, parallelism

SERVE = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve"]


def test_default_config_from_serving_yaml(monkeypatch):
    monkeypatch.setattr(gpus, "visible", lambda: (2, ""))  # NVML's answer on a 2-GPU node
    cfg = default_config()
    assert cfg.model == "qwen2.5-1.5b" and cfg.tensor_parallel_size == 2 and cfg.max_model_len == 4096
    assert cfg.load_format == "dummy" and cfg.skip_tokenizer_init and cfg.host == "127.0.0.1"
    assert cfg.env == {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                       "NVSHMEM_DISABLE_NVLS": "1", "VLLM_USE_FLASHINFER_SAMPLER": "0"}
    assert cfg.with_overrides({"port": 8011}).argv("/m/qwen2.5-1.5b") == SERVE + [
        "/m/qwen2.5-1.5b", "--host", "127.0.0.1", "--port", "8011", "--tensor-parallel-size", "2",
        "--max-model-len", "4096", "--load-format", "dummy", "--skip-tokenizer-init"]


def test_every_option_reaches_argv():
    cfg = EngineConfig(
        model="Qwen/Qwen2.5-7B-Instruct", served_model_name="q7", tensor_parallel_size=4, pipeline_parallel_size=2,
        data_parallel_size=2, dtype="bfloat16", max_model_len=8192, gpu_memory_utilization=0.9, max_num_seqs=2048,
        max_num_batched_tokens=65536, max_cudagraph_capture_size=1024, kv_cache_dtype="fp8", enable_prefix_caching=False,
        distributed_executor_backend="ray", api_server_count=4, load_format="dummy", skip_tokenizer_init=True,
        host="0.0.0.0", port=9000, extra_args=("--enforce-eager",), engine_python="/opt/vllm/bin/python")
    assert cfg.argv() == ["/opt/vllm/bin/python", "-m", "vllm.entrypoints.cli.main", "serve",
        "Qwen/Qwen2.5-7B-Instruct", "--host", "0.0.0.0", "--port", "9000", "--served-model-name", "q7",
        "--tensor-parallel-size", "4", "--pipeline-parallel-size", "2", "--data-parallel-size", "2",
        "--dtype", "bfloat16", "--max-model-len", "8192", "--gpu-memory-utilization", "0.9",
        "--max-num-seqs", "2048", "--max-num-batched-tokens", "65536", "--max-cudagraph-capture-size", "1024",
        "--kv-cache-dtype", "fp8",
        "--distributed-executor-backend", "ray", "--api-server-count", "4", "--load-format", "dummy",
        "--no-enable-prefix-caching", "--skip-tokenizer-init", "--enforce-eager"]
    assert cfg.world_size == 16
    assert "--enable-prefix-caching" in EngineConfig(enable_prefix_caching=True).argv()
    tri = EngineConfig().argv()
    assert "--enable-prefix-caching" not in tri and "--no-enable-prefix-caching" not in tri
    assert EngineConfig().argv(python="/x/python")[0] == "/x/python"


def test_string_overrides_are_coerced():
    cfg = default_config({"tensor_parallel_size": "1", "gpu_memory_utilization": "0.8", "enable_prefix_caching": "off",
                          "max_num_seqs": "none", "extra_args": "--seed 1", "distributed_executor_backend": "ray"})
    assert (cfg.tensor_parallel_size, cfg.gpu_memory_utilization, cfg.enable_prefix_caching) == (1, 0.8, False)
    assert cfg.max_num_seqs is None and cfg.extra_args == ("--seed", "1")
    assert cfg.distributed_executor_backend == "ray"


@pytest.mark.parametrize("overrides, message", [
    ({"tensor_parallel": 2}, r"unknown engine option 'tensor_parallel' \(valid: model, served_model_name"),
    ({"tensor_parallel_size": "two"}, "tensor_parallel_size: expected int, got 'two'"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size: must be an int >= 1"),
    ({"distributed_executor_backend": "slurm"}, "distributed_executor_backend: 'slurm' not one of mp, ray"),
    ({"dtype": "fp4"}, "dtype: 'fp4' not one of"),
    ({"gpu_memory_utilization": 1.5}, r"gpu_memory_utilization: must be in \(0, 1\]"),
    ({"enable_prefix_caching": "maybe"}, "enable_prefix_caching: expected true/false"),
    ({"port": 70000}, "port: must be 0..65535"),
    ({"max_model_len": -1}, "max_model_len: must be an int >= 1"),
    ({"max_cudagraph_capture_size": 0}, "max_cudagraph_capture_size: must be an int >= 1"),
])
@pytest.mark.fault('bad-input', 'an invalid engine setting (--engine-opt)', 'one-line error naming the setting and what is valid')
def test_validation_errors_are_one_line(overrides, message):
    with pytest.raises(ValueError, match=message) as err:
        default_config(overrides)
    assert "\n" not in str(err.value)


def test_field_names_cover_the_issue_options():
    assert {"model", "tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "dtype", "max_model_len",
            "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "kv_cache_dtype",
            "enable_prefix_caching", "distributed_executor_backend", "api_server_count", "extra_args",
            "load_format", "skip_tokenizer_init", "host", "port", "engine_python"} <= set(field_names())


def test_offline_engine_takes_the_same_settings_as_llm_keywords(monkeypatch):
    from gpucert.serving.offline import llm_kwargs
    monkeypatch.setattr(gpus, "visible", lambda: (2, ""))
    cfg = default_config({"max_cudagraph_capture_size": "1024", "max_num_seqs": "2048", "enable_prefix_caching": "off"})
    kwargs = llm_kwargs(cfg, "/models/q")
    assert kwargs["model"] == "/models/q" and kwargs["max_cudagraph_capture_size"] == 1024
    assert kwargs["max_num_seqs"] == 2048 and kwargs["enable_prefix_caching"] is False
    assert kwargs["tensor_parallel_size"] == 2 and kwargs["load_format"] == "dummy"
    assert "dtype" not in kwargs and "host" not in kwargs and "api_server_count" not in kwargs  # serve-only


@pytest.mark.parametrize("found, size", [(0, 1), (1, 1), (2, 2), (3, 2), (4, 4), (8, 4)])
def test_auto_tensor_parallel_uses_the_nodes_gpus_as_far_as_the_heads_shard(monkeypatch, found, size):
    """Qwen2.5-1.5B: 12 attention heads, 2 KV heads, MLP 8,960. 3 GPUs: 12 / 3 works but 2 KV heads
    neither divide by 3 nor replicate evenly over 3 (vLLM refuses) → 2; 8 GPUs: 12 / 8 does not,
    6 shards the heads but not the MLP (8,960 / 6) → 4."""
    monkeypatch.setattr(gpus, "visible", lambda: (found, "" if found else "no CUDA device"))
    cfg = default_config()
    assert cfg.tensor_parallel_size == size
    words = parallelism(cfg)
    assert words.startswith(f"tensor parallel {size} (auto: the node's {found} GPU(s)")
    assert ("lowered" in words) == (size < max(found, 1))
    # an explicit size is used as given, and named without "auto"
    assert default_config({"tensor_parallel_size": "1"}).tensor_parallel_size == 1
    assert parallelism(default_config({"tensor_parallel_size": "1"}), {"tensor_parallel_size": "1"}) == "tensor parallel 1"


def test_auto_tensor_parallel_reads_a_local_models_config(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text('{"num_attention_heads": 28, "num_key_value_heads": 4}')
    assert auto_tensor_parallel(str(tmp_path), 8) == (4, "the node's 8 GPU(s), lowered: 28 attention / 4 KV heads do not shard over 8")
    (tmp_path / "config.json").write_text('{"num_attention_heads": 32, "num_key_value_heads": 8, "intermediate_size": 14336}')
    assert auto_tensor_parallel(str(tmp_path), 8)[0] == 8  # Llama-3-8B's shape: all 8
    assert auto_tensor_parallel(str(tmp_path / "absent"), 8) == (8, "the node's 8 GPU(s); the model's attention heads are not known here")
    monkeypatch.setattr(gpus, "visible", lambda: (8, ""))
    assert default_config({"model": str(tmp_path)}).tensor_parallel_size == 8
