"""Scoring with transformers (CPU or CUDA): one forward pass per document, teacher forcing.

The logits at position t−1 predict token t; log_softmax is taken in float32 whatever the model's
dtype (as vLLM does for its logprobs), so the candidate's precision shows in its logits, not in a
lossy softmax on top of them; the top-1 is the argmax of those logits (ties, more common in
bfloat16's 7-bit mantissa, go to the lowest id, torch.argmax's rule). One document at a time: no
padding and no attention mask, so nothing but the precision differs between two runs.

On a CPU without native bfloat16/float16 (no AVX512-BF16/AMX; CI's), PyTorch's matmul in those
dtypes is a scalar loop 5-28× a float32 one; there each linear layer is widened (_widened_linear):
float32 operands and sum, one rounding to the model's dtype — what bfloat16 hardware computes, at
float32 speed. Norms, attention and activations stay in the model's dtype.

Run for real on CPU by the self-tests (SmolLM2-135M, float32 against bfloat16, and with one
layer's weights corrupted). On CUDA (device="cuda") the code path is the same, TF32 held off for
the float32 reference, but it has not been run yet: no GPU time was left to this work. Loading
goes through host memory first (from_pretrained, then .to(device)): an 8B model at float32 needs
~32 GB of host RAM for a moment.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from .scores import DocumentScores, ScoringResult, check_documents
from .texts import TokenDocument

DTYPES = ("float32", "bfloat16", "float16")


def _torch_dtype(dtype: str):
    import torch
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def load_model(model_dir: str | Path, dtype: str = "float32", device: str = "cpu") -> Any:
    """The model at `dtype` on `device`, in eval mode. Weights are cast on load: a bfloat16
    checkpoint loaded at float32 is exact (every bfloat16 value is a float32 value), so a float32
    reference differs from a bfloat16 candidate in its arithmetic only."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=_torch_dtype(dtype))
    return model.to(device).eval()


def _slow_reduced_precision_cpu(model: Any, device: Any) -> bool:
    """A bfloat16/float16 model on a CPU without native support for them (no AVX512-BF16/AMX:
    oneDNN says so): PyTorch's matmul falls back there to a scalar loop, 5-28× a float32 one."""
    import torch
    dtype = next(model.parameters()).dtype
    if device.type != "cpu" or dtype not in (torch.bfloat16, torch.float16):
        return False
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported if dtype == torch.bfloat16 else \
        torch.ops.mkldnn._is_mkldnn_fp16_supported
    return not native()


def _widened_linear():
    """F.linear for reduced-precision CPU tensors as the hardware computes it: the operands widened
    to float32 (exact: every bfloat16/float16 value is a float32 value), the products summed in
    float32 (as cuBLAS and oneDNN accumulate), the result rounded once to the operands' dtype. The
    same arithmetic as a native bfloat16 GEMM up to the order of the float32 sum — far below the
    output's own rounding (tests/selftest/test_accuracy_real_model.py measures it) — at float32
    speed. Everything else (norms, attention, activations) stays in the model's dtype."""
    import torch
    from torch.overrides import TorchFunctionMode

    linear = torch.nn.functional.linear

    class WidenedLinear(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is linear:
                x, weight = args[0], args[1]
                bias = args[2] if len(args) > 2 else kwargs.get("bias")
                if x.dtype in (torch.bfloat16, torch.float16) and x.device.type == "cpu":
                    out = linear(x.float(), weight.float(), None if bias is None else bias.float())
                    return out.to(x.dtype)
            return func(*args, **kwargs)

    return WidenedLinear()


def _forward_all(model: Any, documents: Sequence[TokenDocument], device: Any) -> list[DocumentScores]:
    import torch
    scored = []
    widened = _widened_linear() if _slow_reduced_precision_cpu(model, device) else nullcontext()
    with torch.inference_mode(), widened:
        for doc in documents:
            ids = torch.tensor([doc.token_ids], dtype=torch.long, device=device)
            logits = model(input_ids=ids).logits[0, :-1]  # position t−1 predicts token t
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            chosen = logprobs.gather(-1, ids[0, 1:, None])[:, 0]
            scored.append(DocumentScores(doc.id, np.asarray(doc.token_ids), chosen.double().cpu().numpy(),
                                         logits.argmax(dim=-1).cpu().numpy()))
    return scored


def score_model(model: Any, documents: Sequence[TokenDocument], *, model_name: str, dtype: str,
                text_set: str | None = None, settings: dict[str, Any] | None = None) -> ScoringResult:
    """Score `documents` with an already loaded model (the self-tests plant a fault in one)."""
    import torch

    from gpucert.physics.gemm import set_cublas_tf32
    check_documents(documents)
    device = next(model.parameters()).device
    # a float32 reference must be float32 arithmetic: cuBLAS may run fp32 matmuls on TF32 tensor
    # cores (10-bit mantissa, close to bfloat16's 7) when anything in the process allowed it — the
    # GEMM checks do, for their tf32 case. Off while scoring, whatever the dtype; restored after.
    restore = set_cublas_tf32(False)
    try:
        scored = _forward_all(model, documents, device)
    finally:
        restore()
    info = {"device": str(device), "torch": torch.__version__}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError:  # pragma: no cover - the model came from somewhere
        pass
    return ScoringResult(tuple(scored), model_name, "transformers", dtype, {**info, **(settings or {})}, text_set)


def score_with_transformers(model_dir: str | Path, documents: Sequence[TokenDocument], *, dtype: str = "float32",
                            device: str = "cpu", text_set: str | None = None) -> ScoringResult:
    """Load `model_dir` at `dtype` on `device` and score `documents` (token ids from
    texts.tokenize, the same list for the reference and every candidate)."""
    check_documents(documents)
    model = load_model(model_dir, dtype, device)
    try:
        return score_model(model, documents, model_name=str(model_dir), dtype=dtype, text_set=text_set)
    finally:
        del model
