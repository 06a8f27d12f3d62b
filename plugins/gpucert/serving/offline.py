"""The offline figure: vLLM's `LLM.generate` over the same datasets and levels as the serving
baseline, in the engine's own Python (`offline_worker.py`), one process for all levels.

A failure mid-sweep keeps the levels measured so far; the rest say why (the worker's exit, its
log's tail, or the timeout)."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

from gpucert import process_group

from . import presets
from .datasets import Prompt
from .vllm_config import EngineConfig

WORKER = Path(__file__).with_name("offline_worker.py")
# EngineConfig fields that are LLM(...) keyword arguments of the same name
_LLM_KWARGS = ("tensor_parallel_size", "pipeline_parallel_size", "dtype", "max_model_len",
               "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens", "max_cudagraph_capture_size",
               "kv_cache_dtype", "enforce_eager",
               "enable_prefix_caching", "distributed_executor_backend", "load_format", "skip_tokenizer_init")


@dataclass
class OfflineResult:
    levels: dict[int, list[dict]] = field(default_factory=dict)  # level → the worker's line per repeat
    # level → the line of its run under the profiler (run_offline's profile_levels): never a rate
    profiled: dict[int, dict] = field(default_factory=dict)
    error: str | None = None  # why the levels not in `levels` are missing
    log_path: Path | None = None

    def rates(self, level: int) -> list[float]:
        """Output tok/s of each repeat of `level`."""
        return [line["output_tokens"] / line["elapsed_s"] for line in self.levels.get(level, []) if line["elapsed_s"] > 0]


def llm_kwargs(engine: EngineConfig, model_dir: str) -> dict:
    kwargs = {"model": model_dir}
    for name in _LLM_KWARGS:
        value = getattr(engine, name)
        if value is not None and not (name == "dtype" and value == "auto"):
            kwargs[name] = value
    if engine.profiler_config:
        kwargs["profiler_config"] = json.loads(engine.profiler_config)
    return kwargs


def run_offline(engine: EngineConfig, levels: list[int], prompts: Callable[..., list[Prompt]],
                workdir: str | Path, *, ignore_eos: bool = True, warmup: int = 4,
                timeout_s: float = 1800.0, repeats: int = 1, profile_levels: tuple[int, ...] = ()) -> OfflineResult:
    """`prompts(count, level, repeat)` gives a level's prompts — the served levels' own (level 0:
    the warm-up), so neither side gets prefix-cache hits the other did not. Each level runs
    `repeats` times, each time on its own prompts (one 256-prompt level is ~2 s of work on 2× H100:
    one sample of it moved ±25 % between runs). Each of `profile_levels` runs once more after
    its repeats, on prompts of its own, between LLM.start_profile() and stop_profile() (the engine's
    profiler_config says where the trace goes and how many steps it keeps)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model = str(presets.materialize(engine.model, workdir / "models")) if presets.is_preset(engine.model) else engine.model

    def requests(count: int, level: int, repeat: int = 0) -> list[dict]:
        return [{"prompt": p.prompt, "max_tokens": p.output_tokens} for p in prompts(count, level, repeat)]
    config = {"engine": llm_kwargs(engine, model), "ignore_eos": ignore_eos,
              "warmup_prompts": requests(warmup, 0),
              "levels": [{"level": level, "repeat": repeat, "prompts": requests(level, level, repeat)}
                         for level in sorted(levels) for repeat in range(repeats)]
              + [{"level": level, "repeat": repeats, "profile": True, "prompts": requests(level, level, repeats)}
                 for level in sorted(profile_levels)]}
    config_path = workdir / "offline-config.json"
    config_path.write_text(json.dumps(config))
    result = OfflineResult(log_path=workdir / "offline.log")
    python = engine.engine_python or sys.executable
    with open(result.log_path, "w") as log:
        # Ctrl-C, a budget's SIGINT, SIGTERM taken as Ctrl-C: run_worker kills the worker's session
        # (its vLLM workers with it), which would go on holding the GPUs, and re-raises
        run = process_group.run_worker([python, str(WORKER), str(config_path)], stderr=log,
                                       env={**os.environ, **engine.env}, timeout_s=timeout_s)
    out = run.stdout
    if run.timed_out:
        result.error = f"offline run exceeded {timeout_s:g} s and was killed"
    engine_lines = []
    for line in out.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            engine_lines.append(line)  # vLLM logs to stdout: its lines belong in the log
            continue
        if isinstance(record, dict) and record.get("profiled"):
            result.profiled[int(record["level"])] = record
        elif isinstance(record, dict) and "level" in record:
            result.levels.setdefault(int(record["level"]), []).append(record)
        else:
            engine_lines.append(line)
    if result.error is None and run.returncode != 0:
        tail = result.log_path.read_text(errors="replace").strip().splitlines()[-3:]
        result.error = f"offline worker exited with status {run.returncode}: {' | '.join(tail)}"
    if engine_lines:  # after stderr's (progress bars, the traceback quoted above): one log, all of it
        with open(result.log_path, "a") as log:
            log.write("\n--- engine stdout ---\n" + "\n".join(engine_lines) + "\n")
    return result
