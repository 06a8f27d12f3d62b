"""GEMM: C = A @ B, A (m×k), B (k×n), FLOPs = 2·m·n·k, in the dtypes inference runs.

- fp8: e4m3 inputs with per-tensor scales through `torch._scaled_mm` (B column-major, as cuBLASLt
  wants it; bf16 output; fast accumulation, as inference forward passes use it); needs compute
  capability >= 8.9.
- bf16, fp16: tensor cores with the PyTorch defaults.
- tf32: fp32 inputs with cuBLAS TF32 allowed (`torch.backends.cuda.matmul.allow_tf32`, or its
  successor `fp32_precision = "tf32"`); fp32: the same flag off (the FFMA peak). The flag is set
  for the benchmark's life only (setup → teardown, outside the timed region) and restored.

Inputs are random normal (a matrix of zeros draws less power and flatters the clock), the L2
cache is flushed between iterations, and a small slice of C is checked against an fp64 reference
of the same inputs. Shapes: squares, the projection GEMMs of a model preset at a tensor-parallel
degree (data/models/*.json, the models' published config.json), and a max-achievable search over
a grid of shapes (Stas Bekman's mamf-finder, ml-engineering: best TFLOP/s and its shape).
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from collections.abc import Callable

from .core import Benchmark, BenchmarkSkipped, Result, is_cuda, measure

DTYPES = ("fp8", "bf16", "fp16", "tf32", "fp32")
# Relative (Frobenius) error of the checked slice against fp64 on the same inputs: fp32 only
# accumulates rounding; tf32 rounds inputs to 10 mantissa bits; 16-bit outputs round to 8 or 11
# bits; fp8 with fast accumulation is the loosest.
TOLERANCE = {"fp32": 1e-4, "tf32": 5e-3, "bf16": 2e-2, "fp16": 2e-2, "fp8": 1e-1}
CHECK_ROWS = CHECK_COLS = 64  # the checked slice: cheap next to the GEMM, still sums over all of k
E4M3_MAX = 448.0  # largest finite float8_e4m3fn: per-tensor scale = amax / 448

# Shipped defaults (the hardware check and `gpucert bench gemm`); fp32 runs at FFMA speed, so
# its squares stop at 8192 to keep `pytest -m hardware` inside its time budget.
SQUARE_SIZES = {"fp8": (4096, 8192, 16384), "bf16": (4096, 8192, 16384), "fp16": (4096, 8192, 16384),
                "tf32": (4096, 8192), "fp32": (4096, 8192)}
TOKEN_COUNTS = (1, 16, 128, 1024, 4096, 16384)
DEFAULT_MODEL = "qwen2.5-1.5b"
DEFAULT_TP = 2
# Search grid per dtype, (start, stop, step) with both ends included (mamf-finder's --m_range
# excludes its stop: give it stop + 1 to time the same shapes).
SEARCH_RANGES = {"fp8": (4096, 16384, 4096), "bf16": (4096, 16384, 4096), "fp16": (4096, 16384, 4096),
                 "tf32": (2048, 8192, 2048), "fp32": (2048, 8192, 2048)}
SEARCH_BUDGET_S = 10.0
# `make certify`'s GEMM figures are sustained ones (issue 17 point 4): a burst of 10-20 sub-ms
# repetitions with syncs between them finishes inside the GPU's power-averaging window, at boost
# clocks — 829 TFLOP/s on an H200 whose back-to-back figure for the same shape was 687. Each shape
# runs back to back for `sustain_s` after `warmup_s` of its own, the GPU preheated once before the
# first (PREHEAT_S of untimed bf16 GEMMs, as mamf-finder's 30 s warm-up); the search ranks its grid
# by bursts and times its SEARCH_SUSTAIN_TOP fastest shapes sustained.
SQUARE_SUSTAIN = {"sustain_s": 1.0, "warmup_s": 0.5}
# 48 shapes, many of them µs kernels: shorter, but ≥ 6 blocks of ~100 ms (thresholds.yaml's
# min_samples for a baseline is 5)
PROJECTION_SUSTAIN = {"sustain_s": 0.7, "warmup_s": 0.2}
SEARCH_SUSTAIN = {"sustain_s": 1.0, "warmup_s": 0.5}
SEARCH_SUSTAIN_TOP = 3
PREHEAT_S = 15.0
# Sustained GEMMs of less work than this replay from a CUDA graph (core.time_sustained): under
# ~25-50 µs a kernel (fp8 or bf16 at an H100's sustained rates) is not much longer than torch's
# launch of it, so eager launches would time the host. Decided by size, so a shape's method is the
# same in every run: of certify's shapes, the projections up to m = 1,024 (and small ones at 4,096).
GRAPH_BELOW_FLOP = 32e9


@dataclass(frozen=True)
class GemmShape:
    name: str
    m: int
    n: int
    k: int

    @property
    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k


def square(size: int) -> GemmShape:
    return GemmShape(f"square-{size}", size, size, size)


def span(start: int, stop: int, step: int) -> list[int]:
    """start, start+step, … up to stop included. mamf-finder's --m_range START STOP STEP is numpy's
    arange, which stops before STOP: its 4096 16384 4096 is 4096:12288:4096 here (session 30)."""
    if start < 1 or stop < start or step < 1:
        raise ValueError(f"bad range {start}:{stop}:{step} (want 1 <= start <= stop, step >= 1)")
    return list(range(start, stop + 1, step))


# ---- model presets ---------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelPreset:
    """The config.json fields that fix a decoder layer's projection GEMMs."""

    name: str
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    source: str = ""


@lru_cache(maxsize=1)
def model_presets() -> dict[str, ModelPreset]:
    folder = resources.files("gpucert") / "data" / "models"
    presets = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            doc = json.loads(entry.read_text())
            cfg = doc["config"]  # the model's full published config.json (serving.presets writes it out)
            presets[doc["name"]] = ModelPreset(
                name=doc["name"], source=doc.get("source", ""),
                hidden_size=cfg["hidden_size"], num_attention_heads=cfg["num_attention_heads"],
                num_key_value_heads=cfg["num_key_value_heads"],
                # Qwen2 and Llama configs carry no head_dim: transformers and vLLM derive it the same way
                head_dim=cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"],
                intermediate_size=cfg["intermediate_size"])
    return presets


def model_preset(name: str) -> ModelPreset:
    presets = model_presets()
    if name not in presets:
        raise ValueError(f"unknown model preset {name!r} (valid: {', '.join(presets)})")
    return presets[name]


def projection_shapes(model: ModelPreset, tp: int = DEFAULT_TP, tokens=TOKEN_COUNTS) -> list[GemmShape]:
    """QKV, O, MLP up (gate and up fused) and MLP down of one tensor-parallel rank, as vLLM shards
    them: column-parallel QKV/up split N, row-parallel O/down split K; m = tokens in the batch.
    KV heads fewer than TP ranks are replicated (one per rank), as vLLM does."""
    heads, kv, d, inter = model.num_attention_heads, model.num_key_value_heads, model.head_dim, model.intermediate_size
    if tp < 1 or heads % tp or inter % tp:
        raise ValueError(f"{model.name}: {heads} attention heads and intermediate size {inter} "
                         f"do not split evenly over TP={tp}")
    if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
        raise ValueError(f"{model.name}: {kv} KV heads neither split over nor replicate onto TP={tp}")
    kv_per_rank = max(kv // tp, 1)
    projections = (
        ("qkv", (heads // tp + 2 * kv_per_rank) * d, model.hidden_size),
        ("o", model.hidden_size, heads // tp * d),
        ("up", 2 * inter // tp, model.hidden_size),
        ("down", model.hidden_size, inter // tp),
    )
    return [GemmShape(f"{model.name}-{proj}-m{m}", m, n, k) for proj, n, k in projections for m in tokens]


# ---- the benchmark ---------------------------------------------------------------------------

def unsupported_reason(dtype: str, device: str) -> str | None:
    """Why this dtype cannot run on this device (None: it can)."""
    import torch
    if not is_cuda(device):
        if dtype == "fp8":
            return f"fp8 GEMM (torch._scaled_mm, e4m3) needs a CUDA GPU of compute capability >= 8.9; {device} is not one"
        if dtype == "tf32":
            return f"TF32 is a tensor-core mode of CUDA GPUs (compute capability >= 8.0); on {device} it would be plain fp32"
        return None
    capability = torch.cuda.get_device_capability(device)
    gpu = f"{torch.cuda.get_device_name(device)} (compute capability {capability[0]}.{capability[1]})"
    if dtype == "fp8":
        if capability < (8, 9):
            return f"fp8 tensor cores need compute capability >= 8.9 (Ada, Hopper, Blackwell); {gpu} has none"
        if not (hasattr(torch, "_scaled_mm") and hasattr(torch, "float8_e4m3fn")):
            return f"PyTorch {torch.__version__} has no torch._scaled_mm / float8_e4m3fn"
    if dtype == "tf32" and capability < (8, 0):
        return f"TF32 tensor cores need compute capability >= 8.0; on {gpu} it would be plain fp32"
    return None


def set_cublas_tf32(enabled: bool) -> Callable[[], None]:
    """Let cuBLAS run fp32 matmuls on TF32 tensor cores (or not); returns the undo.
    PyTorch >= 2.9 has the per-backend `fp32_precision` ("tf32" | "ieee"); there the legacy
    `allow_tf32` getter raises once anything set the new API, so the new one is used where it
    exists. Both set the same cuBLAS flag."""
    import torch
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        saved = matmul.fp32_precision
        matmul.fp32_precision = "tf32" if enabled else "ieee"
        return lambda: setattr(matmul, "fp32_precision", saved)
    saved = matmul.allow_tf32
    matmul.allow_tf32 = enabled
    return lambda: setattr(matmul, "allow_tf32", saved)


def weight_copies(b_bytes: int, l2_bytes: int, most: int = 64) -> int:
    """How many copies of B a GEMM cycles through so that B is never in L2 from the iteration
    before: enough to fill twice the L2 (what L2Flusher writes), at least one, at most `most`."""
    if b_bytes <= 0 or l2_bytes <= 0:
        return 1
    return max(1, min(most, -(-2 * l2_bytes // b_bytes)))


class Gemm(Benchmark):
    """C = A @ B. On CUDA each iteration reads the next of `weight_copies` identical copies of B:
    back-to-back iterations (the sustained mode, where no L2 flush can sit between them) then read
    B from HBM, as a model's forward pass reads each layer's own weights, instead of from the L2
    the previous iteration left it in (a small-m projection's B of a few MB would fit)."""
    name = "gemm"
    flush_l2 = True

    def __init__(self, dtype: str, m: int, n: int, k: int, shape: str | None = None, seed: int = 0):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (valid: {', '.join(DTYPES)})")
        if min(m, n, k) < 1:
            raise ValueError(f"GEMM dimensions must be >= 1, got m={m} n={n} k={k}")
        super().__init__(dtype=dtype, m=m, n=n, k=k, shape=shape or f"{m}x{n}x{k}")
        self.dtype, self.m, self.n, self.k, self.seed = dtype, m, n, k, seed
        self._restore_precision = None

    def setup(self, device: str) -> None:
        import torch
        reason = unsupported_reason(self.dtype, device)
        if reason:
            raise BenchmarkSkipped(reason)
        gen = torch.Generator(device=device).manual_seed(self.seed)
        if self.dtype == "fp8":
            self._setup_fp8(torch, device, gen)
        else:
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.dtype, torch.float32)
            self.a = torch.randn(self.m, self.k, generator=gen, device=device, dtype=dtype)
            self.b = torch.randn(self.k, self.n, generator=gen, device=device, dtype=dtype)
            self.c = torch.empty(self.m, self.n, device=device, dtype=dtype)
            if is_cuda(device) and self.dtype in ("tf32", "fp32"):
                self._restore_precision = set_cublas_tf32(self.dtype == "tf32")
        self._weights, self._turn = [self.b], 0
        if is_cuda(device):
            l2 = int(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 0)
            copies = weight_copies(self.b.numel() * self.b.element_size(), l2)
            self._weights += [self.b.clone() for _ in range(copies - 1)]  # clone keeps fp8's column-major strides
        self.cycle = len(self._weights)
        self.graph_sustained = is_cuda(device) and self.flops() < GRAPH_BELOW_FLOP

    def _setup_fp8(self, torch, device, gen) -> None:
        if self.n % 16 or self.k % 16:
            raise BenchmarkSkipped(f"torch._scaled_mm needs n and k divisible by 16, got n={self.n} k={self.k}")
        fp8 = torch.float8_e4m3fn

        def quantized(rows, cols):
            high = torch.randn(rows, cols, generator=gen, device=device, dtype=torch.bfloat16)
            scale = high.abs().amax().float() / E4M3_MAX
            return (high / scale).to(fp8), scale

        self.a, self.scale_a = quantized(self.m, self.k)
        b_rows, self.scale_b = quantized(self.n, self.k)
        self.b = b_rows.t()  # k×n, column-major: the layout _scaled_mm requires for mat2
        self.c = None

    def op(self) -> None:
        import torch
        b = self._weights[self._turn]
        self._turn = (self._turn + 1) % len(self._weights)
        if self.dtype == "fp8":
            out = torch._scaled_mm(self.a, b, scale_a=self.scale_a, scale_b=self.scale_b,
                                   out_dtype=torch.bfloat16, use_fast_accum=True)
            self.c = out[0] if isinstance(out, tuple) else out  # PyTorch < 2.5 returned (out, amax)
        else:
            torch.mm(self.a, b, out=self.c)

    def flops(self) -> float:
        return 2.0 * self.m * self.n * self.k

    def check(self) -> str | None:
        import torch
        rows, cols = min(self.m, CHECK_ROWS), min(self.n, CHECK_COLS)
        a, b = self.a[:rows].to(torch.float64), self.b[:, :cols].to(torch.float64)
        if self.dtype == "fp8":
            a, b = a * self.scale_a.double(), b * self.scale_b.double()
        reference = a @ b
        got = self.c[:rows, :cols].to(torch.float64)
        error = float((got - reference).norm() / reference.norm().clamp_min(1e-300))
        tolerance = TOLERANCE[self.dtype]
        if not error <= tolerance:  # also catches NaN
            return (f"relative error {error:.3g} of a {rows}x{cols} slice against an fp64 reference "
                    f"exceeds {tolerance:g} for {self.dtype}")
        return None

    def teardown(self) -> None:
        if self._restore_precision is not None:
            self._restore_precision()
        super().teardown()


def preheat(device: str, seconds: float, dtype: str | None = None, m: int = 8192, n: int = 8192,
            k: int = 8192) -> Result:
    """`seconds` of untimed back-to-back GEMMs (default bf16 8192³, or fp32 where bf16 has no
    kernel): the GPU brought to the clocks, power and temperature it holds, before sustained figures."""
    dtype = dtype or ("bf16" if unsupported_reason("bf16", device) is None else "fp32")
    return measure(Gemm(dtype, m, n, k, shape="preheat"), device, sustain_s=seconds)


def run_shape(dtype: str, shape: GemmShape, device: str, **timing) -> Result:
    """One measured GEMM (timing: warmup, reps, max_time_s as core.measure takes them)."""
    return measure(Gemm(dtype, shape.m, shape.n, shape.k, shape=shape.name), device, **timing)


# ---- max-achievable search (mamf-finder) -------------------------------------------------------

@dataclass
class SearchResult:
    dtype: str
    device: str
    best: Result | None = None
    tried: list[Result] = field(default_factory=list)
    sustained: list[Result] = field(default_factory=list)  # with sustain_top: the re-timed fastest shapes
    total: int = 0
    status: str = "ok"
    error: str | None = None
    note: str | None = None

    @property
    def best_shape(self) -> str | None:
        if self.best is None:
            return None
        p = self.best.params
        return f"{p['m']}x{p['n']}x{p['k']}"


def search_max(dtype: str, device: str, m_values, n_values, k_values, *, budget_s: float = SEARCH_BUDGET_S,
               warmup: int = 3, reps: int = 10, sustain_s: float | None = None, warmup_s: float = 0.0,
               preheat_s: float = 0.0, sustain_top: int | None = None) -> SearchResult:
    """Measure every (m, n, k) of the grid until the time budget is spent; keep the fastest.
    As in mamf-finder, the reported figure is the best median TFLOP/s over the shapes tried.
    `sustain_s`: each shape timed in core.time_sustained (after `warmup_s` of its own),
    and before the first shape `preheat_s` of untimed back-to-back GEMMs (mamf-finder warms the GPU
    up for 30 s first): figures of a GPU at the clocks and power it holds, not a burst's.
    `sustain_top` (with `sustain_s`): the grid is ranked by bursts within the budget, and only its
    `sustain_top` fastest shapes are timed sustained — the best of those is the figure (a whole
    grid of sustained shapes is minutes: `gpucert bench gemm --sustain-s` without it)."""
    shapes = list(itertools.product(m_values, n_values, k_values))
    found = SearchResult(dtype, str(device), total=len(shapes))
    reason = unsupported_reason(dtype, device)
    if reason:
        found.status, found.error = "skipped", reason
        return found
    if preheat_s > 0 and shapes:
        preheat(device, preheat_s, dtype, *shapes[0])
    ranked_by_burst = sustain_s is not None and sustain_top is not None
    timing = {} if ranked_by_burst else {"sustain_s": sustain_s, "warmup_s": warmup_s}
    started = time.monotonic()
    for index, (m, n, k) in enumerate(shapes):
        if index and time.monotonic() - started > budget_s:
            found.note = f"time budget {budget_s:g} s reached after {index} of {len(shapes)} shapes"
            break
        result = measure(Gemm(dtype, m, n, k, shape=f"search-{m}x{n}x{k}"), device,
                         warmup=warmup, reps=reps, max_time_s=budget_s, **timing)
        found.tried.append(result)
        if result.status == "ok" and (found.best is None or result.tflops > found.best.tflops):
            found.best = result
    if ranked_by_burst and found.best is not None:
        fastest = sorted((r for r in found.tried if r.status == "ok"), key=lambda r: r.tflops, reverse=True)
        found.best = None
        for burst in fastest[:sustain_top]:
            p = burst.params
            result = measure(Gemm(dtype, p["m"], p["n"], p["k"], shape=p["shape"]), device,
                             sustain_s=sustain_s, warmup_s=warmup_s)
            found.sustained.append(result)
            if result.status == "ok" and (found.best is None or result.tflops > found.best.tflops):
                found.best = result
        found.note = "; ".join(filter(None, (found.note, f"ranked by bursts; the {len(found.sustained)} fastest "
                                             f"shapes timed sustained, the best of them is the figure")))
    if found.best is None:
        failed = [r for r in found.tried + found.sustained if r.status != "ok"]
        found.status = failed[0].status if failed else "error"
        found.error = (f"no shape of the search measured; first: {failed[0].params['shape']}: {failed[0].error}"
                       if failed else "the search grid is empty")
    return found
