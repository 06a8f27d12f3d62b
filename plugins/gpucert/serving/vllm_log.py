"""What vLLM 0.26 reports about itself in its log, as typed values with units.

Patterns match the lines vLLM 0.26.0 prints (tests/fixtures/h100x2-nvlink/vllm-0.26.0-*.log).
Worker lines appear once per TP rank: a value is reported once, and `per_rank` holds the values by
rank where the ranks differ (the scalar is then the slowest/largest rank: the one startup waited on).
What vLLM also publishes on its /metrics (KV blocks, block size, KV capacity, KV cache dtype …) is
read there first (vllm_metrics.engine_facts); this parse stays the source of the rest (start-up,
compile and CUDA-graph times, backends, versions) and the fallback for an older vLLM.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

# "(Worker_TP0 pid=3768) INFO 11-27 00:36:29 [file.py:284] message"; offline logs have no prefix.
# Under Ray the worker's line comes wrapped by its callers, with colour codes:
# "(EngineCore pid=3112) \x1b[36m(RayWorkerProc pid=5256)\x1b[0m (Worker_TP0 pid=5256) INFO …";
# colours are stripped and the innermost (last) prefix names the process.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_LINE = re.compile(r"^(?:\((?P<proc>[\w]+) pid=(?P<pid>\d+)\)\s+)*"
                   r"(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+(?P<ts>\d\d-\d\d \d\d:\d\d:\d\d)\s+"
                   r"\[[^\]]+\]\s?(?P<msg>.*)$")


def _num(text: str) -> float:
    return float(text.replace(",", ""))


# name → (pattern, converter of the match to the value); first match wins unless per-rank
_ONCE: dict[str, tuple[re.Pattern, Any]] = {
    "vllm_version": (re.compile(r"(?:version (\d[\w.+-]*)$|V1 LLM engine \(v(\d[\w.+-]*)\))"),
                     lambda m: m.group(1) or m.group(2)),
    "model": (re.compile(r"(?:^.*▀\s+model\s+(\S+)$|Initializing a V1 LLM engine .*? with config: model='([^']+)')"),
              lambda m: m.group(1) or m.group(2)),
    "architecture": (re.compile(r"Resolved architecture: (\w+)"), lambda m: m.group(1)),
    "max_model_len": (re.compile(r"Using max model len (\d+)"), lambda m: int(m.group(1))),
    "max_num_batched_tokens": (re.compile(r"max_num_batched_tokens=(\d+)"), lambda m: int(m.group(1))),
    "tensor_parallel_size": (re.compile(r"with config: .*?tensor_parallel_size=(\d+)"), lambda m: int(m.group(1))),
    "pipeline_parallel_size": (re.compile(r"with config: .*?pipeline_parallel_size=(\d+)"), lambda m: int(m.group(1))),
    "data_parallel_size": (re.compile(r"with config: .*?data_parallel_size=(\d+)"), lambda m: int(m.group(1))),
    "dtype": (re.compile(r"with config: .*?dtype=torch\.(\w+)"), lambda m: m.group(1)),
    "kv_cache_dtype": (re.compile(r"with config: .*?kv_cache_dtype=(\w+)"), lambda m: m.group(1)),
    "enable_prefix_caching": (re.compile(r"with config: .*?enable_prefix_caching=(True|False)"),
                              lambda m: m.group(1) == "True"),
    "nccl_version": (re.compile(r"vLLM is using nccl==(\S+)"), lambda m: m.group(1)),
    "allreduce_backends": (re.compile(r"Using \[([^\]]*)\] all-reduce backends"),
                           lambda m: re.findall(r"'(\w+)'", m.group(1))),
    "allreduce_backends_possible": (re.compile(r"all-reduce backends .*?out of potential backends: \[([^\]]*)\]"),
                                    lambda m: re.findall(r"'(\w+)'", m.group(1))),
    "attention_backend": (re.compile(r"Using (\w+) attention backend"), lambda m: m.group(1)),
    # the largest decode batch replayed as a CUDA graph (the config line's compilation_config):
    # bigger batches launch every kernel eagerly
    "max_cudagraph_capture_size": (re.compile(r"'max_cudagraph_capture_size': (\d+)"), lambda m: int(m.group(1))),
    "kv_cache_tokens": (re.compile(r"GPU KV cache size: ([\d,]+) tokens"), lambda m: int(_num(m.group(1)))),
    "max_concurrency": (re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.,]+)x"),
                        lambda m: _num(m.group(2))),
    "max_concurrency_request_tokens": (re.compile(r"Maximum concurrency for ([\d,]+) tokens per request"),
                                       lambda m: int(_num(m.group(1)))),
    "compile_s": (re.compile(r"torch\.compile took ([\d.]+) s in total"), lambda m: float(m.group(1))),
    "dynamo_transform_s": (re.compile(r"Dynamo bytecode transform time: ([\d.]+) s"), lambda m: float(m.group(1))),
    "graph_compile_s": (re.compile(r"Compiling a graph for compile range .* takes ([\d.]+) s"),
                        lambda m: float(m.group(1))),
    "profile_run_s": (re.compile(r"Initial profiling/warmup run took ([\d.]+) s"), lambda m: float(m.group(1))),
    "engine_init_s": (re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"),
                      lambda m: float(m.group(1))),
    "gpu_memory_utilization": (re.compile(r"Desired GPU memory utilization is \(([\d.]+),"),
                               lambda m: float(m.group(1))),
    "server_url": (re.compile(r"Starting vLLM server on (\S+)"), lambda m: m.group(1)),
}

# per-rank values: name → (pattern, {output name: converter})
_PER_RANK: dict[str, tuple[re.Pattern, dict[str, Any]]] = {
    "model_load": (re.compile(r"Model loading took ([\d.]+) GiB and ([\d.]+) seconds"),
                   {"model_load_gib": lambda m: float(m.group(1)), "model_load_s": lambda m: float(m.group(2))}),
    "cuda_graph": (re.compile(r"Graph capturing finished in ([\d.]+) secs, took ([\d.]+) GiB"),
                   {"cuda_graph_s": lambda m: float(m.group(1)), "cuda_graph_gib": lambda m: float(m.group(2))}),
    "kv_memory": (re.compile(r"Available KV cache memory: ([\d.]+) GiB"),
                  {"kv_cache_gib": lambda m: float(m.group(1))}),
    "peak_activation": (re.compile(r"Actual usage is .*?, ([\d.]+) GiB for peak activation"),
                        {"peak_activation_gib": lambda m: float(m.group(1))}),
}

UNITS = {k: u for u, keys in {
    "tokens": ("kv_cache_tokens", "max_model_len", "max_num_batched_tokens", "max_concurrency_request_tokens"),
    "x": ("max_concurrency",),
    "s": ("compile_s", "dynamo_transform_s", "graph_compile_s", "profile_run_s", "engine_init_s",
          "model_load_s", "cuda_graph_s", "startup_s"),
    "GiB": ("model_load_gib", "cuda_graph_gib", "kv_cache_gib", "peak_activation_gib"),
}.items() for k in keys}


def _rank(proc: str | None, pid: str | None, pid_rank: dict[str, str]) -> str:
    """Worker_TP1 → "TP1"; a "(Worker pid=N)" line takes the rank seen for N elsewhere."""
    if proc and proc.startswith("Worker_"):
        label = proc[len("Worker_"):]
        if pid:
            pid_rank[pid] = label
        return label
    if pid and pid in pid_rank:
        return pid_rank[pid]
    return proc or "main"


def _timestamp(ts: str) -> datetime:
    # vLLM prints month-day without a year; differences within one log are what matter
    return datetime.strptime(f"2000-{ts}", "%Y-%m-%d %H:%M:%S")


def parse(text: str) -> dict[str, Any]:
    """Parse a vLLM log. Absent values are absent keys; `per_rank` only where ranks differ;
    `errors` lists ERROR lines (the reason a crashed engine gives)."""
    out: dict[str, Any] = {}
    ranked: dict[str, dict[str, Any]] = {}
    pid_rank: dict[str, str] = {}
    errors: list[str] = []
    first_ts = ready_ts = None
    for raw in text.splitlines():
        m = _LINE.match(_ANSI.sub("", raw))
        if not m:
            continue
        proc, pid, msg = m.group("proc"), m.group("pid"), m.group("msg").rstrip()
        if first_ts is None:
            first_ts = m.group("ts")
        if m.group("level") in ("ERROR", "CRITICAL"):
            errors.append(msg)
        if proc and proc.startswith("Worker_"):
            _rank(proc, pid, pid_rank)
        for name, (pattern, conv) in _ONCE.items():
            if name not in out:
                hit = pattern.search(msg)
                if hit:
                    out[name] = conv(hit)
        for pattern, fields in _PER_RANK.values():
            hit = pattern.search(msg)
            if hit:
                rank = _rank(proc, pid, pid_rank)
                for key, conv in fields.items():
                    ranked.setdefault(key, {}).setdefault(rank, conv(hit))
        if "Starting vLLM server on" in msg and ready_ts is None:
            ready_ts = m.group("ts")
    per_rank = {}
    for key, by_rank in ranked.items():
        out[key] = max(by_rank.values())
        if len(set(by_rank.values())) > 1:
            per_rank[key] = dict(sorted(by_rank.items()))
    if per_rank:
        out["per_rank"] = per_rank
    if ready_ts is not None:
        out["ready_at"] = ready_ts
        out["startup_s"] = (_timestamp(ready_ts) - _timestamp(first_ts)).total_seconds()
    if errors:
        out["errors"] = errors
    return out


def parse_file(path) -> dict[str, Any]:
    with open(path, errors="replace") as log:
        return parse(log.read())
