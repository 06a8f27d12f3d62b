"""What a vLLM server says about its engine on its own /metrics, preferred to what its log says.

vLLM publishes its CacheConfig as an info gauge (value 1): `vllm:cache_config_info`, one sample per
engine (label `engine`), every field of vLLM's CacheConfig a label holding its `str()` ("16",
"True", "None", "[]"). Behind vLLM's multiprocess collector the labels come sorted by name:

    # HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
    # TYPE vllm:cache_config_info gauge
    vllm:cache_config_info{_block_size_resolved="True",block_size="16",cache_dtype="auto",…,engine="0",…,
        num_gpu_blocks="330011",…} 1.0

Labels read here (exact names: vLLM also has `mamba_block_size`, `hash_block_size`,
`user_specified_block_size`, … which are not the block size):
- `num_gpu_blocks`, `block_size`: the KV cache's blocks and tokens per block;
- `kv_cache_size_tokens`, `kv_cache_max_concurrency`: vLLM's own capacity figures (the numbers its
  log prints as "GPU KV cache size" / "Maximum concurrency"), group-aware, so right for hybrid
  models where blocks × block size overstates; newer releases only (seen from 0.28);
- `cache_dtype`, `gpu_memory_utilization`, `enable_prefix_caching`.

KV capacity in tokens: `kv_cache_size_tokens` where published, else num_gpu_blocks × block_size —
unless the log's "GPU KV cache size" (group-aware) disagrees with that product, then the log's.
Whatever /metrics lacks (compile and CUDA-graph times, start-up, backends, versions) comes from the
log (vllm_log). `engine_facts` returns the log's facts with the metrics' over them, `sources` naming
where each came from, and `metrics_problems` saying why /metrics gave less than it could: one line
each, never an exception (an engine that serves is not failed for a label it wrote oddly).
"""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path
from typing import Any

from gpucert.monitor.sources import family_prefixes, metric_families
from gpucert.serving import vllm_log

logger = logging.getLogger(__name__)

CACHE_CONFIG_INFO = "vllm:cache_config_info"
_PREFIXES = family_prefixes([CACHE_CONFIG_INFO])
LOG = "the engine log"
FROM_METRICS = f"vLLM's /metrics ({CACHE_CONFIG_INFO}"
_NO_VALUE = {"None", ""}  # str(None): a field vLLM has not set (num_gpu_blocks before profiling)


class MetricsError(ValueError):
    """/metrics could not be read or its cache_config_info is unusable: one line, for the card."""


def _positive(labels: dict[str, str], name: str, kind: type) -> int | float | None:
    """A label as a positive int (a count) or float; None where vLLM left it unset."""
    value = labels.get(name)
    if value is None or value in _NO_VALUE:
        return None
    what = "a whole number" if kind is int else "a number"
    try:
        number = kind(value)
    except ValueError:
        raise MetricsError(f"{CACHE_CONFIG_INFO} label {name}={value!r} is not {what}") from None
    if not number > 0 or number == float("inf"):
        raise MetricsError(f"{CACHE_CONFIG_INFO} label {name}={value!r} is not a positive "
                           + ("count" if kind is int else "number"))
    return number


def _count(labels: dict[str, str], name: str) -> int | None:
    return _positive(labels, name, int)


def _number(labels: dict[str, str], name: str) -> float | None:
    return _positive(labels, name, float)


def _flag(labels: dict[str, str], name: str) -> bool | None:
    value = labels.get(name)
    if value is None or value in _NO_VALUE:
        return None
    if value not in ("True", "False"):
        raise MetricsError(f"{CACHE_CONFIG_INFO} label {name}={value!r} is not True or False")
    return value == "True"


def _text(labels: dict[str, str], name: str) -> str | None:
    value = labels.get(name)
    return None if value is None or value in _NO_VALUE else value


def cache_config(text: str) -> dict[str, dict[str, str]]:
    """The labels of each engine's `vllm:cache_config_info` sample ({} when the server publishes
    none: an older vLLM, or not vLLM), by engine label ("0" when there is none)."""
    try:
        families = metric_families(text, _PREFIXES)
    except ValueError as err:
        raise MetricsError(f"{CACHE_CONFIG_INFO}: not Prometheus text ({err})") from None
    engines: dict[str, dict[str, str]] = {}
    for family in families:
        for sample in family.samples:
            if sample.name == CACHE_CONFIG_INFO:
                engines.setdefault(sample.labels.get("engine", "0"), dict(sample.labels))
    return engines


def _engine_facts(labels: dict[str, str]) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(facts, their sources, problems) of one engine's labels; a malformed label loses only the
    facts that need it."""
    facts: dict[str, Any] = {}
    sources: dict[str, str] = {}
    problems: list[str] = []

    def take(key: str, read, label: str) -> None:
        try:
            value = read(labels, label)
        except MetricsError as err:
            problems.append(str(err))
            return
        if value is not None:
            facts[key] = value
            sources[key] = f"{FROM_METRICS}: {label})"

    take("num_gpu_blocks", _count, "num_gpu_blocks")
    take("block_size", _count, "block_size")
    take("kv_cache_tokens", _count, "kv_cache_size_tokens")
    if "kv_cache_tokens" not in facts and {"num_gpu_blocks", "block_size"} <= facts.keys():
        facts["kv_cache_tokens"] = facts["num_gpu_blocks"] * facts["block_size"]
        sources["kv_cache_tokens"] = f"{FROM_METRICS}: num_gpu_blocks × block_size)"
    elif "kv_cache_tokens" not in facts and not problems:  # e.g. num_gpu_blocks="None": not profiled yet
        problems.append(f"{CACHE_CONFIG_INFO} gives no KV capacity (num_gpu_blocks="
                        f"{labels.get('num_gpu_blocks')!r}, block_size={labels.get('block_size')!r})")
    take("max_concurrency", _number, "kv_cache_max_concurrency")
    take("kv_cache_dtype", _text, "cache_dtype")
    take("gpu_memory_utilization", _number, "gpu_memory_utilization")
    take("enable_prefix_caching", _flag, "enable_prefix_caching")
    return facts, sources, problems


def parse(text: str) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(facts, sources, problems) from a /metrics exposition. Several engines (data parallel): the
    lowest-numbered engine's facts, `per_engine` where the engines differ."""
    engines = cache_config(text)
    if not engines:
        return {}, {}, [f"{CACHE_CONFIG_INFO} not published on /metrics"]
    order = sorted(engines, key=lambda e: (not e.isdigit(), int(e) if e.isdigit() else 0, e))
    readings = {engine: _engine_facts(engines[engine]) for engine in order}
    facts, sources, problems = readings[order[0]]
    if len(order) > 1:
        differ = {key: {engine: readings[engine][0].get(key) for engine in order} for key in facts}
        differ = {key: values for key, values in differ.items() if len(set(values.values())) > 1}
        if differ:
            facts["per_engine"] = differ
    return facts, sources, problems


def fetch(base_url: str, timeout_s: float = 10.0) -> str:
    """GET <base_url>/metrics (vLLM serves it at the root, with no key); MetricsError otherwise."""
    from gpucert.serving.vllm_server import http_get

    url = f"{base_url.rstrip('/')}/metrics"
    try:
        status, body = http_get(url, timeout_s)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise MetricsError(f"GET /metrics failed ({reason})") from None
    if status != 200:
        raise MetricsError(f"GET /metrics answered HTTP {status}")
    return body.decode("utf-8", "replace")


def engine_facts(base_url: str, log_path: str | Path, timeout_s: float = 10.0) -> dict[str, Any]:
    """What the engine reports at start: the log's facts (vllm_log.parse), with what /metrics
    publishes over them. `sources` names each fact's origin; `metrics_problems` (when any) says in
    one line each why a fact came from the log although /metrics could have had it."""
    facts = vllm_log.parse_file(log_path) if Path(log_path).exists() else {}
    sources = {key: LOG for key, value in facts.items()
               if key not in ("per_rank", "errors", "ready_at") and value is not None}
    try:
        metrics, metric_sources, problems = parse(fetch(base_url, timeout_s))
    except MetricsError as err:
        metrics, metric_sources, problems = {}, {}, [str(err)]
    logged_tokens = facts.get("kv_cache_tokens")
    if (metric_sources.get("kv_cache_tokens", "").endswith("num_gpu_blocks × block_size)")
            and logged_tokens is not None and logged_tokens != metrics["kv_cache_tokens"]):
        # blocks shared between KV groups (hybrid attention/mamba, sliding window): the product
        # overstates, and without kv_cache_size_tokens the log's group-aware figure is vLLM's own
        problems.append(f"num_gpu_blocks × block_size = {metrics['kv_cache_tokens']:,} tokens, the log's "
                        f"'GPU KV cache size' {logged_tokens:,} (KV cache groups share the blocks): the log's kept")
        del metrics["kv_cache_tokens"], metric_sources["kv_cache_tokens"]
    facts.update(metrics)
    sources.update(metric_sources)
    facts["sources"] = sources
    if problems:
        facts["metrics_problems"] = problems
        for problem in problems:
            logger.warning("engine facts: %s", problem)
    return facts


def source_note(facts: dict[str, Any], key: str) -> str:
    """'from …' for a fact on the card: its source, and for a fact from the log why not /metrics."""
    source = facts.get("sources", {}).get(key, LOG)
    note = f"from {source}"
    if source == LOG and facts.get("metrics_problems"):
        note += f" ({'; '.join(facts['metrics_problems'])})"
    return note
