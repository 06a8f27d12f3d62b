"""Scoring with vLLM (GPU node only), from gpucert's side: the documents go to `vllm_worker.py`
running in the engine's Python (which has vLLM; gpucert's may not), one process per precision,
and come back as JSON lines — the pattern of serving/offline.py.

The worker runs in a session of its own; a timeout or an interrupt (Ctrl-C, the time budget's
SIGINT) ends its whole process group, vLLM's workers with it, so no GPU stays held.

What was run: this side against the real worker script over a stand-in `vllm` module whose
prompt_logprobs have vLLM 0.26's shape (tests/selftest/test_accuracy_vllm.py). Not run here: a
real vLLM engine (none can be installed on the CPU machines); on a GPU node the same call starts
one.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from gpucert import process_group

from .scores import DocumentScores, ScoringResult, check_documents
from .texts import TokenDocument

WORKER = Path(__file__).with_name("vllm_worker.py")


class VllmScoringError(RuntimeError):
    """The worker did not deliver every document: its exit, its log's tail, or the timeout."""


def engine_kwargs(model: str, dtype: str, quantization: str | None = None, kv_cache_dtype: str | None = None,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """LLM(...) keyword arguments: the precision under study, plus any engine settings
    (tensor_parallel_size, max_model_len, gpu_memory_utilization …) passed through as given."""
    kwargs: dict[str, Any] = {"model": str(model), "dtype": dtype}
    if quantization:
        kwargs["quantization"] = quantization
    if kv_cache_dtype:
        kwargs["kv_cache_dtype"] = kv_cache_dtype
    for key, value in (extra or {}).items():
        if key in kwargs:
            raise ValueError(f"engine setting {key!r} is an argument of score_with_vllm itself")
        kwargs[key] = value
    return kwargs


def score_with_vllm(model: str | Path, documents: Sequence[TokenDocument], *, dtype: str,
                    workdir: str | Path, quantization: str | None = None, kv_cache_dtype: str | None = None,
                    engine: Mapping[str, Any] | None = None, python: str | None = None,
                    env: Mapping[str, str] | None = None, timeout_s: float = 1800.0,
                    text_set: str | None = None, name: str | None = None) -> ScoringResult:
    """Score `documents` with vLLM at `dtype` (and `quantization`, `kv_cache_dtype`), in
    `python` (the engine's; default this one). `workdir` keeps the config and the log
    (`accuracy-<name>.log`: stderr, then vLLM's stdout). Raises VllmScoringError when the worker
    fails or times out, ValueError on bad input."""
    check_documents(documents)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # each setting named: fp8 weights and an fp8 KV cache at one dtype are two runs, two files
    # (session 23: "bfloat16-fp8" for both, the second's config and log overwrote the first's)
    name = name or "-".join([dtype] + [f"{tag}-{value}" for tag, value in (("q", quantization),
                                                                         ("kv", kv_cache_dtype)) if value])
    kwargs = engine_kwargs(str(model), dtype, quantization, kv_cache_dtype, engine)
    config_path = workdir / f"accuracy-{name}.json"
    config_path.write_text(json.dumps({
        "engine": kwargs,
        "documents": [{"id": d.id, "token_ids": list(d.token_ids)} for d in documents],
    }))
    log_path = workdir / f"accuracy-{name}.log"
    with open(log_path, "w") as log:
        run = process_group.run_worker([python or sys.executable, str(WORKER), str(config_path)], stderr=log,
                                       env={**os.environ, **(env or {})}, timeout_s=timeout_s)
    if run.timed_out:
        raise VllmScoringError(f"vLLM accuracy scoring ({name}) exceeded {timeout_s:g} s and was killed; "
                               f"log: {log_path}")
    out = run.stdout
    scored, done, engine_lines = {}, None, []
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and "document" in record:
            doc = DocumentScores.from_dict(record["document"])
            scored[doc.id] = doc
        elif isinstance(record, dict) and "done" in record:
            done = record["done"]
        else:
            engine_lines.append(line)  # vLLM logs to stdout: its lines belong in the log
    # the tail of stderr (the traceback) says why; vLLM's stdout goes after it, for the record
    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
    if engine_lines:
        with open(log_path, "a") as log:
            log.write("\n--- engine stdout ---\n" + "\n".join(engine_lines) + "\n")
    if run.returncode != 0 or done is None:
        raise VllmScoringError(f"vLLM accuracy worker ({name}) exited with status {run.returncode} after "
                               f"{len(scored)} of {len(documents)} documents: {' | '.join(tail)} (log: {log_path})")
    missing = [d.id for d in documents if d.id not in scored]
    if missing:
        raise VllmScoringError(f"vLLM accuracy worker ({name}) returned no scores for {len(missing)} document(s), "
                               f"first {missing[0]!r} (log: {log_path})")
    for d in documents:
        if tuple(scored[d.id].token_ids.tolist()) != tuple(d.token_ids):
            raise VllmScoringError(f"vLLM accuracy worker ({name}) scored other token ids in document {d.id!r}")
    settings = {"quantization": quantization, "kv_cache_dtype": kv_cache_dtype, "vllm": done.get("vllm"),
                "engine": {k: v for k, v in kwargs.items() if k != "model"}}
    return ScoringResult(tuple(scored[d.id] for d in documents), str(model), "vllm", dtype, settings, text_set)
