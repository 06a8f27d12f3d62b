"""Precision: each variant of studies.yaml's `precision` (bf16, fp16, fp8 weights, an fp8 KV
cache) served with the serving load (dummy weights: throughput), and on REAL weights its accuracy
against the higher-precision reference — perplexity on the versioned text set and greedy-token
agreement, each delta with its interval over documents (gpucert.accuracy; docs/METRICS.md). Each
variant's served throughput is also stated against the plan's first variant (the served reference),
with a Welch interval over the level's repeats."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucert import accuracy
from gpucert.studies.analysis import fp8_weights_note

from ..inference.engine_setup import engine_config, no_local_engine
from ..inference.load import measure_level
from .conftest import state_change_against_first, study_load

pytestmark = pytest.mark.study


def test_precision(gpucert, plan, study_target, precision_point, concurrency, request, served_rates):
    load = study_load(request.config, repeats=plan.precision.repeats)
    point = plan.precision.point(precision_point)
    target = study_target(plan.precision.engine, point, load)
    if note := fp8_weights_note(point.engine, gpucert.snapshot):
        gpucert.finding("precision", notice=note)
    measure_level(gpucert, target, concurrency)
    state_change_against_first(gpucert, "precision", plan.precision.points, point, concurrency,
                               plan.precision.repeats, served_rates)


@pytest.fixture(scope="session")
def accuracy_reference(request, plan, gpucert_report_dir: Path, study_engines):
    """The text set tokenized once and scored at the reference precision: (documents, reference,
    how to score a candidate)."""
    acc = plan.precision.accuracy
    if not acc.model:
        pytest.skip("no real model for accuracy (studies.yaml precision.accuracy.model): accuracy is never "
                    "measured on dummy weights")
    workdir = gpucert_report_dir / "accuracy"
    engine = engine_config(request.config, plan.precision.engine)
    if acc.backend == "vllm":
        if request.config.getoption("--engine-cmd"):
            pytest.skip("accuracy with backend vllm needs vLLM itself, not an --engine-cmd engine")
        missing = no_local_engine(engine)
        if missing:
            pytest.skip(missing)
        study_engines.release()  # the scoring engine needs the GPUs the server holds
    try:
        documents = accuracy.tokenize(accuracy.load_texts(acc.documents), acc.model)
    except (OSError, ValueError) as exc:
        pytest.fail(f"accuracy: the text set could not be tokenized with {acc.model}: {exc}", pytrace=False)

    def score(dtype: str, quantization: str | None = None, kv_cache_dtype: str | None = None):
        if acc.backend == "transformers":
            return accuracy.score_with_transformers(acc.model, documents, dtype=dtype,
                                                    text_set=accuracy.TEXT_SET_VERSION)
        extra = {"tensor_parallel_size": engine.tensor_parallel_size, "max_model_len": 4096}
        return accuracy.score_with_vllm(acc.model, documents, dtype=dtype, quantization=quantization,
                                        kv_cache_dtype=kv_cache_dtype, workdir=workdir, engine=extra,
                                        python=engine.engine_python, env=engine.env,
                                        text_set=accuracy.TEXT_SET_VERSION)
    try:
        reference = score(acc.reference)
    except (accuracy.VllmScoringError, ValueError, OSError) as exc:
        pytest.fail(f"accuracy: the {acc.reference} reference could not be scored: {exc}", pytrace=False)
    return documents, reference, score


def test_precision_accuracy(gpucert, plan, accuracy_reference, precision_point):
    acc = plan.precision.accuracy
    point = plan.precision.point(precision_point)
    _, reference, score = accuracy_reference
    dtype = point.engine.get("dtype") or "bfloat16"  # the served model's own (Qwen-class: bfloat16)
    dtype = {"half": "float16", "float": "float32", "auto": "bfloat16"}.get(dtype, dtype)
    quantization, kv_cache_dtype = point.engine.get("quantization"), point.engine.get("kv_cache_dtype")
    if note := fp8_weights_note(point.engine, gpucert.snapshot):
        gpucert.finding("precision", notice=note)
    if acc.backend == "transformers" and (quantization or kv_cache_dtype):
        pytest.skip(f"{point.id}: the transformers backend scores dtypes only (no quantization, no fp8 KV cache)")
    try:
        candidate = score(dtype, quantization, kv_cache_dtype)
        found = accuracy.compare(reference, candidate, point.id).to_dict()
    except (accuracy.VllmScoringError, ValueError, OSError) as exc:
        pytest.fail(f"accuracy of {point.id}: {exc}", pytrace=False)
    where = f"{found['documents']} documents, {found['tokens']:,} tokens of {found['text_set'] or 'the text set'}; " \
            f"against {found['reference']}"
    for name in ("delta_ppl_pct", "delta_nll", "greedy_agreement_pct"):
        meta = accuracy.METRICS[name]
        gpucert.record(name, found[name], unit=meta["unit"], direction=meta["direction"],
                       ci=tuple(found[f"{name}_ci"]) if found.get(f"{name}_ci") else None,
                       ci_method=found[f"{name}_ci_method"], note=where)
    for name in ("ppl", "ppl_ref"):
        gpucert.record(name, found[name], unit="ppl", direction="lower", note=where)
