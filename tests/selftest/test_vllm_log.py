"""vllm_log.parse on real vLLM 0.26.0 logs captured on 2× H100 (tests/fixtures/h100x2-nvlink)."""

from pathlib import Path

import pytest

from gpucert.serving import vllm_log

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "h100x2-nvlink"
SHARED = Path("/work/shared/fixtures/h100x2-nvlink")


def test_serve_tp2_log_reports_what_vllm_printed():
    got = vllm_log.parse_file(FIXTURES / "vllm-0.26.0-serve-tp2.log")
    assert got["vllm_version"] == "0.26.0"
    assert got["model"] == "lab/qwen15b"
    assert got["architecture"] == "Qwen2ForCausalLM"
    assert got["kv_cache_tokens"] == 5_280_176
    assert got["max_concurrency"] == pytest.approx(1289.11)
    assert got["max_concurrency_request_tokens"] == 4096
    assert got["compile_s"] == pytest.approx(25.81)
    assert got["dynamo_transform_s"] == pytest.approx(9.33)
    assert got["graph_compile_s"] == pytest.approx(11.00)
    assert got["cuda_graph_s"] == 5.0 and got["cuda_graph_gib"] == pytest.approx(0.45)
    assert got["model_load_gib"] == pytest.approx(1.5)
    # the two TP ranks loaded in different times: the scalar is the slower one, both are kept
    assert got["model_load_s"] == pytest.approx(2.258113)
    assert got["per_rank"] == {"model_load_s": {"TP0": 2.258113, "TP1": 1.757136}}
    assert got["allreduce_backends"] == ["CUSTOM", "PYNCCL"]
    assert "FLASHINFER" in got["allreduce_backends_possible"]
    assert got["nccl_version"] == "2.28.9"
    assert got["engine_init_s"] == pytest.approx(53.12)
    assert got["kv_cache_gib"] == pytest.approx(70.5)
    assert got["gpu_memory_utilization"] == pytest.approx(0.92)
    assert got["tensor_parallel_size"] == 2 and got["max_model_len"] == 4096
    assert got["max_num_batched_tokens"] == 8192
    assert got["attention_backend"] == "FLASH_ATTN"
    assert got["max_cudagraph_capture_size"] == 512
    assert got["server_url"] == "http://0.0.0.0:8011"
    assert got["ready_at"] == "11-27 00:37:26"
    assert got["startup_s"] == 107.0  # 00:35:39 → 00:37:26
    assert "errors" not in got


def test_serve_tp2_ray_log_reads_the_workers_behind_rays_prefixes():
    """Under the Ray executor worker lines come as "(EngineCore pid=…) \\x1b[36m(RayWorkerProc
    pid=…)\\x1b[0m (Worker_TP0 pid=…) INFO …" (captured on 2× H100, gpucert's own TP=2 run)."""
    got = vllm_log.parse_file(FIXTURES / "vllm-0.26.0-serve-tp2-ray.log")
    assert got["compile_s"] == pytest.approx(20.59) and got["cuda_graph_s"] == 7.0
    assert got["allreduce_backends"] == ["CUSTOM", "PYNCCL"] and got["nccl_version"] == "2.28.9"
    assert got["per_rank"] == {"model_load_s": {"TP0": 1.761327, "TP1": 1.538803}}
    assert got["kv_cache_tokens"] == 5_280_176 and got["engine_init_s"] == pytest.approx(51.5)
    assert got["startup_s"] == 118.0


def test_offline_tp2_log():
    got = vllm_log.parse_file(FIXTURES / "vllm-0.26.0-offline-tp2.log")
    assert got["vllm_version"] == "0.26.0"  # no banner offline: from the engine's config line
    assert got["kv_cache_tokens"] == 4_863_296
    assert got["max_concurrency"] == pytest.approx(1187.33)
    assert got["compile_s"] == pytest.approx(23.34)
    assert got["cuda_graph_s"] == 7.0
    assert got["engine_init_s"] == pytest.approx(53.96)
    assert got["per_rank"]["model_load_s"] == {"TP0": 1.886798, "TP1": 2.471276}
    assert "ready_at" not in got and "server_url" not in got


@pytest.mark.skipif(not (SHARED / "vllm-0.26.0-offline-tp1-flashinfer.log").exists(), reason="shared fixture absent")
def test_offline_tp1_log_has_no_allreduce_and_no_per_rank():
    got = vllm_log.parse_file(SHARED / "vllm-0.26.0-offline-tp1-flashinfer.log")
    assert got["tensor_parallel_size"] == 1
    assert got["kv_cache_tokens"] == 2_361_488
    assert got["max_concurrency"] == pytest.approx(576.54)
    assert got["model_load_gib"] == pytest.approx(2.98) and got["model_load_s"] == pytest.approx(2.896741)
    assert got["engine_init_s"] == pytest.approx(151.90)
    assert "allreduce_backends" not in got and "per_rank" not in got and "nccl_version" not in got


def test_error_lines_are_collected_and_units_declared():
    text = ("(EngineCore pid=7) ERROR 11-27 01:00:00 [core.py:1] EngineCore failed to start.\n"
            "(EngineCore pid=7) ERROR 11-27 01:00:00 [core.py:2] torch.OutOfMemoryError: CUDA out of memory\n")
    assert vllm_log.parse(text)["errors"] == ["EngineCore failed to start.", "torch.OutOfMemoryError: CUDA out of memory"]
    assert vllm_log.UNITS["kv_cache_tokens"] == "tokens" and vllm_log.UNITS["cuda_graph_gib"] == "GiB"
    assert vllm_log.parse("") == {}
