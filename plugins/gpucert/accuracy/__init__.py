"""The accuracy engine of the precision study: what a lower precision (bfloat16, float16, a
quantization, an FP8 KV cache) costs in accuracy on REAL weights, against a higher-precision
reference, on a fixed text set.

    texts      the versioned text set (package data) and its tokenization, once, for every backend
    scores     the result type: per document, per position, the token, its log-probability, the top-1
    transformers_backend   scoring with transformers, CPU or CUDA (run on CPU in the self-tests)
    vllm_backend / vllm_worker   scoring with vLLM in the engine's Python (GPU node only)
    compare    candidate against reference: perplexity, delta NLL, greedy agreement, each with its interval
    intervals  the 95 % intervals, documents as the unit of independence

From a pytest check (any backend; compare within one backend where you can, so that the delta
is the precision's and not also the kernels'):

    docs = tokenize(load_texts(), model_dir)                      # once: the same ids everywhere
    ref = score_with_vllm(model_dir, docs, dtype="float32", workdir=w, python=engine_python,
                          text_set=TEXT_SET_VERSION)
    cands = {"bfloat16": score_with_vllm(model_dir, docs, dtype="bfloat16", workdir=w, ...),
             "fp8-kv": score_with_vllm(model_dir, docs, dtype="bfloat16", kv_cache_dtype="fp8", ...)}
    for name, m in compare_candidates(ref, cands).items():
        m["delta_ppl_pct"], m["delta_ppl_pct_ci"], m["delta_ppl_pct_ci_method"], ...

On the CPU (the self-tests): score_with_transformers(model_dir, docs, dtype="float32"), or
load_model + score_model to plant a fault in the loaded weights first.
"""

from .compare import METRICS, AccuracyComparison, compare, compare_candidates
from .intervals import Interval, clustered_wilson, paired_t
from .scores import DocumentScores, NonFiniteScores, ScoringResult, check_same_tokens
from .texts import TEXT_SET_VERSION, TextDocument, TokenDocument, load_texts, text_set_label, tokenize
from .transformers_backend import load_model, score_model, score_with_transformers
from .vllm_backend import VllmScoringError, score_with_vllm

__all__ = [
    "METRICS", "TEXT_SET_VERSION", "AccuracyComparison", "DocumentScores", "Interval", "NonFiniteScores",
    "ScoringResult", "TextDocument", "TokenDocument", "VllmScoringError", "check_same_tokens", "clustered_wilson",
    "compare", "compare_candidates", "load_model", "load_texts", "paired_t", "score_model", "score_with_transformers",
    "score_with_vllm", "text_set_label", "tokenize",
]
