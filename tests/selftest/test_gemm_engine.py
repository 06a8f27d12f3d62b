"""The GEMM engine on CPU tensors: FLOP formula, correctness check, model shapes, the search."""

import pytest
import torch

from gpucert.physics import gemm
from gpucert.physics.core import measure
from gpucert.physics.gemm import Gemm, GemmShape, model_preset, projection_shapes, search_max

FAST = {"warmup": 1, "reps": 3}


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_cpu_gemm_measures_and_passes_its_own_check(dtype):
    result = measure(Gemm(dtype, 64, 48, 32), "cpu", **FAST)
    assert result.status == "ok", result.error
    assert result.flops == 2 * 64 * 48 * 32
    assert result.tflops > 0 and len(result.rate_samples("tflops")) == 3
    assert result.params == {"dtype": dtype, "m": 64, "n": 48, "k": 32, "shape": "64x48x32"}


@pytest.mark.parametrize("dtype,why", [("fp8", "compute capability >= 8.9"), ("tf32", "plain fp32")])
def test_tensor_core_only_dtypes_skip_on_cpu_with_the_reason(dtype, why):
    result = measure(Gemm(dtype, 32, 32, 32), "cpu", **FAST)
    assert result.status == "skipped" and why in result.error


class Sabotaged(Gemm):
    """Writes C = 1.1 · (A @ B): the timings look fine, the numbers are wrong."""

    def op(self):
        torch.mm(self.a, self.b, out=self.c)
        self.c.mul_(1.1)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.fault('engine', 'a GEMM that returns a wrong product', 'status error: relative error against an fp64 reference')
def test_the_correctness_check_catches_a_wrong_product(dtype):
    result = measure(Sabotaged(dtype, 64, 64, 64), "cpu", **FAST)
    assert result.status == "error"
    assert result.error.startswith("wrong result: relative error ")
    assert f"against an fp64 reference exceeds {gemm.TOLERANCE[dtype]:g} for {dtype}" in result.error


def test_the_check_sums_over_all_of_k_on_a_slice():
    bench = Gemm("fp32", 200, 150, 300)
    bench.setup("cpu")
    bench.op()
    assert bench.check() is None
    bench.c[10, 20] += 1.0  # one wrong element inside the checked 64 x 64 slice
    assert "relative error" in bench.check()


def test_inputs_are_random_normal_never_zeros():
    bench = Gemm("bf16", 128, 128, 128)
    bench.setup("cpu")
    assert bench.a.float().std() == pytest.approx(1.0, abs=0.1)
    assert (bench.b != 0).float().mean() > 0.99


@pytest.mark.fault('bad-input', 'GEMM with an unknown dtype or a zero dimension', 'ValueError naming the bad parameter, nothing runs')
def test_bad_parameters_fail_before_running():
    with pytest.raises(ValueError, match="unknown dtype 'int4'"):
        Gemm("int4", 8, 8, 8)
    with pytest.raises(ValueError, match="must be >= 1"):
        Gemm("bf16", 0, 8, 8)


def test_qwen25_15b_projection_shapes_at_tp2_hand_computed():
    # hidden 1536, 12 heads, 2 KV heads, head_dim 128, intermediate 8960; per TP=2 rank:
    # QKV n = (12/2 + 2·(2/2))·128 = 1024, k = 1536;  O n = 1536, k = 12/2·128 = 768;
    # up (gate+up) n = 2·8960/2 = 8960, k = 1536;     down n = 1536, k = 8960/2 = 4480
    shapes = projection_shapes(model_preset("qwen2.5-1.5b"), tp=2, tokens=(1, 4096))
    assert shapes == [
        GemmShape("qwen2.5-1.5b-qkv-m1", 1, 1024, 1536), GemmShape("qwen2.5-1.5b-qkv-m4096", 4096, 1024, 1536),
        GemmShape("qwen2.5-1.5b-o-m1", 1, 1536, 768), GemmShape("qwen2.5-1.5b-o-m4096", 4096, 1536, 768),
        GemmShape("qwen2.5-1.5b-up-m1", 1, 8960, 1536), GemmShape("qwen2.5-1.5b-up-m4096", 4096, 8960, 1536),
        GemmShape("qwen2.5-1.5b-down-m1", 1, 1536, 4480), GemmShape("qwen2.5-1.5b-down-m4096", 4096, 1536, 4480),
    ]
    assert shapes[1].flops == 2 * 4096 * 1024 * 1536


def test_tp1_is_the_whole_layer_and_kv_heads_replicate_beyond_their_count():
    qkv_tp1 = projection_shapes(model_preset("qwen2.5-1.5b"), tp=1, tokens=(16,))[0]
    assert (qkv_tp1.n, qkv_tp1.k) == ((12 + 2 * 2) * 128, 1536)
    qkv_tp4 = projection_shapes(model_preset("qwen2.5-1.5b"), tp=4, tokens=(16,))[0]
    assert qkv_tp4.n == (12 // 4 + 2 * 1) * 128  # 2 KV heads over 4 ranks: one replicated per rank


def test_every_preset_matches_its_published_config():
    expected = {  # hidden, heads, kv heads, head_dim, intermediate (config.json)
        "qwen2.5-1.5b": (1536, 12, 2, 128, 8960), "qwen2.5-7b": (3584, 28, 4, 128, 18944),
        "llama-3.1-8b": (4096, 32, 8, 128, 14336), "qwen3-8b": (4096, 32, 8, 128, 12288),
    }
    presets = gemm.model_presets()
    assert sorted(presets) == sorted(expected)
    for name, fields in expected.items():
        p = presets[name]
        assert (p.hidden_size, p.num_attention_heads, p.num_key_value_heads, p.head_dim, p.intermediate_size) == fields
        assert p.source.startswith("https://huggingface.co/")
        # the default sweep's shapes exist for every preset at TP=2, and fp8 can take them all
        assert all(s.n % 16 == 0 and s.k % 16 == 0 for s in projection_shapes(p, 2))


def test_bad_presets_and_tp_say_what_is_valid():
    with pytest.raises(ValueError, match="valid: llama-3.1-8b, qwen2.5-1.5b"):
        model_preset("gpt-5")
    with pytest.raises(ValueError, match="do not split evenly over TP=5"):
        projection_shapes(model_preset("qwen2.5-1.5b"), tp=5)


def test_search_keeps_the_fastest_shape_of_the_grid():
    found = search_max("fp32", "cpu", [16, 96], [64], [64, 128], budget_s=30, warmup=1, reps=3)
    assert found.status == "ok" and found.total == 4 and len(found.tried) == 4
    assert found.best.tflops == max(r.tflops for r in found.tried)
    assert found.best_shape == "{m}x{n}x{k}".format(**found.best.params)
    assert found.note is None


def test_search_stops_at_its_budget_and_says_so():
    found = search_max("fp32", "cpu", [32] * 50, [32], [32], budget_s=0.0, warmup=0, reps=1)
    assert len(found.tried) == 1 and found.best is not None
    assert found.note == "time budget 0 s reached after 1 of 50 shapes"


def test_search_of_an_unsupported_dtype_is_skipped_without_work():
    found = search_max("fp8", "cpu", [16], [16], [16])
    assert found.status == "skipped" and found.tried == [] and "8.9" in found.error


def test_span_includes_both_ends():
    assert gemm.span(4096, 16384, 4096) == [4096, 8192, 12288, 16384]
    with pytest.raises(ValueError):
        gemm.span(8, 4, 1)


def _tf32_state():
    matmul = torch.backends.cuda.matmul  # the new getter never raises; the legacy one may
    return matmul.fp32_precision if hasattr(matmul, "fp32_precision") else matmul.allow_tf32


def test_the_tf32_switch_restores_what_was_set_before():
    before = _tf32_state()
    undo = gemm.set_cublas_tf32(True)
    assert _tf32_state() in ("tf32", True)
    undo()
    assert _tf32_state() == before
    undo = gemm.set_cublas_tf32(False)
    assert _tf32_state() in ("ieee", False)
    undo()
    assert _tf32_state() == before


@pytest.mark.parametrize("b_bytes, l2_bytes, copies", [
    (4_718_592, 50 * 2**20, 23),      # an H100's 50 MiB L2, a 1536² bf16 weight: 23 copies fill 2× L2
    (536_870_912, 50 * 2**20, 1),     # a 16384² bf16 B is 10× the L2 already: itself only
    (2048, 60 * 2**20, 64),           # a tiny B stops at 64 copies
    (4096, 0, 1),                     # no L2 figure (a CPU): one
])
def test_a_sustained_gemm_reads_its_weights_from_memory_not_from_l2(b_bytes, l2_bytes, copies):
    """Back-to-back iterations cannot flush L2 between them: each reads the next copy of B instead,
    so a small projection's weights come from HBM as a model's do (fails if they would fit L2)."""
    assert gemm.weight_copies(b_bytes, l2_bytes) == copies


def test_a_gemm_on_the_cpu_keeps_one_b_and_checks_its_result():
    bench = gemm.Gemm("fp32", 32, 48, 64)
    bench.setup("cpu")
    try:
        assert len(bench._weights) == 1
        bench.op()
        assert bench.check() is None
    finally:
        bench.teardown()
