"""Typed vLLM engine config → the `vllm serve` command line.

Defaults come from gpucert/data/serving.yaml; options override single keys (`with_overrides`),
validated here so a typo fails in one line before a two-minute engine start.

The command is `<python> -m vllm.entrypoints.cli.main serve MODEL …`: the same entry point as the
`vllm` console script (so vLLM logs the same `non-default args`), but it needs only the Python
that has vLLM, not a console script on PATH — the device bundle puts vLLM on PYTHONPATH only.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import sys
import types
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import yaml

DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
BOOLEAN_FLAGS = ("enable_prefix_caching", "enable_chunked_prefill", "async_scheduling")
EXECUTOR_BACKENDS = ("mp", "ray")


@dataclass(frozen=True)
class EngineConfig:
    model: str = "qwen2.5-1.5b"
    served_model_name: str | None = None
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    dtype: str = "auto"
    max_model_len: int | None = None
    gpu_memory_utilization: float | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    # CUDA graphs are captured up to this batch (vLLM: min(2 × max_num_seqs, 512)); larger decode
    # batches run without them — the likely cause of the offline drop past 512 on 2× H100
    max_cudagraph_capture_size: int | None = None
    kv_cache_dtype: str | None = None
    # tokens per KV block (vLLM: 16 on CUDA)
    block_size: int | None = None
    # weight quantization, e.g. fp8 (vLLM quantizes bf16 weights at load: dynamic per-tensor)
    quantization: str | None = None
    # None: vLLM's own default (on in V1); True/False: forced on/off
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    # the scheduler plans step n+1 while the GPU runs step n
    async_scheduling: bool | None = None
    # True: no CUDA graphs, every kernel launched from Python (the forensics checks' contrast)
    enforce_eager: bool | None = None
    distributed_executor_backend: str | None = None
    api_server_count: int | None = None
    load_format: str | None = None
    skip_tokenizer_init: bool = False
    host: str = "127.0.0.1"
    # 0: the lifecycle picks a free port on host
    port: int = 0
    # vLLM's --profiler-config (a JSON object): the forensics checks' trace capture, e.g.
    # {"profiler": "torch", "torch_profiler_dir": "/abs/dir"} or {"profiler": "cuda"} under nsys
    profiler_config: str | None = None
    # a command the engine runs under (`nsys profile … --`): the forensics checks' nsys capture
    launcher: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    # environment for the engine process (added to the caller's)
    env: dict[str, str] = field(default_factory=dict)
    # the Python that has vLLM (--engine-python); None: this interpreter
    engine_python: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def world_size(self) -> int:
        return self.tensor_parallel_size * self.pipeline_parallel_size * self.data_parallel_size

    def with_overrides(self, overrides: dict[str, Any]) -> EngineConfig:
        """A copy with `overrides` applied; values may be strings (from the command line)."""
        hints = get_type_hints(EngineConfig)
        changes = {}
        for key, value in overrides.items():
            if key not in hints:
                raise ValueError(f"unknown engine option {key!r} (valid: {', '.join(field_names())})")
            changes[key] = _coerce(key, value, hints[key])
        return dataclasses.replace(self, **changes)

    def argv(self, model_path: str | None = None, python: str | None = None) -> list[str]:
        """The engine command. `model_path` replaces `model` (a materialized preset folder)."""
        exe = python or self.engine_python or sys.executable
        args = [exe, "-m", "vllm.entrypoints.cli.main", "serve", model_path or self.model,
                "--host", self.host, "--port", str(self.port)]
        if self.served_model_name:
            args += ["--served-model-name", self.served_model_name]
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            if getattr(self, name) != 1:
                args += [_flag(name), str(getattr(self, name))]
        if self.dtype != "auto":
            args += ["--dtype", self.dtype]
        for name in ("max_model_len", "gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens",
                     "max_cudagraph_capture_size", "kv_cache_dtype", "block_size", "quantization",
                     "distributed_executor_backend", "api_server_count", "load_format"):
            value = getattr(self, name)
            if value is not None:
                args += [_flag(name), str(value)]
        for name in BOOLEAN_FLAGS:  # vLLM's --x / --no-x; None leaves vLLM's default
            value = getattr(self, name)
            if value is not None:
                args.append(_flag(name) if value else "--no-" + _flag(name).removeprefix("--"))
        if self.skip_tokenizer_init:
            args.append("--skip-tokenizer-init")
        if self.enforce_eager:
            args.append("--enforce-eager")
        if self.profiler_config is not None:
            args += ["--profiler-config", self.profiler_config]
        args += list(self.extra_args)
        return list(self.launcher) + args

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["extra_args"] = list(self.extra_args)
        out["launcher"] = list(self.launcher)
        return out


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(EngineConfig)]


def parse_bool(text: str) -> bool:
    """'true'/'yes'/'on'/'1' and 'false'/'no'/'off'/'0', as command-line options give them."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Strings from the command line → the field's type; other values pass through to _validate."""
    optional = get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)
    base = next((a for a in get_args(hint) if a is not type(None)), hint) if optional else hint
    if isinstance(value, str):
        if optional and value.lower() in ("none", "null", ""):
            return None
        if base is bool:
            try:
                return parse_bool(value)
            except ValueError as err:
                raise ValueError(f"engine option {key}: {err}") from None
        try:
            if base is int:
                return int(value)
            if base is float:
                return float(value)
        except ValueError:
            raise ValueError(f"engine option {key}: expected {base.__name__}, got {value!r}") from None
        if get_origin(base) is tuple:
            return tuple(shlex.split(value))
        if get_origin(base) is dict:
            raise ValueError(f"engine option {key}: give a mapping (in serving.yaml), not {value!r}")
    if key in ("extra_args", "launcher") and isinstance(value, list):
        return tuple(str(v) for v in value)
    if key == "env" and isinstance(value, dict):
        return {str(k): str(v) for k, v in value.items()}
    return value


def _validate(cfg: EngineConfig) -> None:
    def need(cond: bool, message: str) -> None:
        if not cond:
            raise ValueError(f"engine option {message}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    need(isinstance(cfg.model, str) and cfg.model != "", "model: must be a preset name, a path or a hub id")
    for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
        need(is_int(getattr(cfg, name)) and getattr(cfg, name) >= 1, f"{name}: must be an int >= 1")
    need(cfg.dtype in DTYPES, f"dtype: {cfg.dtype!r} not one of {', '.join(DTYPES)}")
    for name in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "max_cudagraph_capture_size",
                 "api_server_count", "block_size"):
        value = getattr(cfg, name)
        need(value is None or (is_int(value) and value >= 1), f"{name}: must be an int >= 1, got {value!r}")
    gmu = cfg.gpu_memory_utilization
    need(gmu is None or (isinstance(gmu, (int, float)) and not isinstance(gmu, bool) and 0 < gmu <= 1),
         f"gpu_memory_utilization: must be in (0, 1], got {gmu!r}")
    for name in BOOLEAN_FLAGS:
        need(getattr(cfg, name) in (None, True, False), f"{name}: must be true, false or none")
    need(cfg.quantization is None or (isinstance(cfg.quantization, str) and cfg.quantization != ""),
         "quantization: must be a vLLM quantization method, e.g. fp8")
    need(cfg.distributed_executor_backend in (None, *EXECUTOR_BACKENDS),
         f"distributed_executor_backend: {cfg.distributed_executor_backend!r} not one of {', '.join(EXECUTOR_BACKENDS)}")
    need(isinstance(cfg.skip_tokenizer_init, bool), "skip_tokenizer_init: must be true or false")
    need(cfg.enforce_eager in (None, True, False), "enforce_eager: must be true, false or none")
    need(is_int(cfg.port) and 0 <= cfg.port <= 65535, f"port: must be 0..65535, got {cfg.port!r}")
    need(isinstance(cfg.host, str) and cfg.host != "", "host: must be a host name or address")
    need(isinstance(cfg.extra_args, tuple) and all(isinstance(a, str) for a in cfg.extra_args),
         "extra_args: must be a list of strings")
    need(isinstance(cfg.env, dict), "env: must be a mapping of names to strings")
    need(isinstance(cfg.launcher, tuple) and all(isinstance(a, str) for a in cfg.launcher),
         "launcher: must be a list of strings")
    if cfg.profiler_config is not None:
        try:
            parsed = json.loads(cfg.profiler_config) if isinstance(cfg.profiler_config, str) else None
        except ValueError:
            parsed = None
        need(isinstance(parsed, dict), f"profiler_config: must be a JSON object, got {cfg.profiler_config!r}")


@lru_cache(maxsize=1)
def serving_defaults() -> dict[str, Any]:
    """The parsed gpucert/data/serving.yaml (engine and lifecycle sections)."""
    text = (resources.files("gpucert") / "data" / "serving.yaml").read_text()
    return yaml.safe_load(text)


AUTO = "auto"


def _model_config(model: str) -> dict:
    """A preset's or a local folder's config.json ({} for a hub id: not fetched, the node may be
    air-gapped); a multimodal config's decoder part."""
    from . import presets
    config: dict = {}
    if presets.is_preset(model):
        config = presets.get(model).config
    elif (Path(model) / "config.json").is_file():
        try:
            config = json.loads((Path(model) / "config.json").read_text())
        except (OSError, ValueError):
            config = {}
    return config.get("text_config", config)  # multimodal configs nest the decoder's


def _positive(config: dict, name: str) -> int | None:
    value = config.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _shard_dims(model: str) -> tuple[int | None, int | None, int | None]:
    """(attention heads, KV heads, MLP intermediate size); Nones where the config is not known here."""
    config = _model_config(model)
    heads = _positive(config, "num_attention_heads")
    return heads, _positive(config, "num_key_value_heads") or heads, _positive(config, "intermediate_size")


def auto_tensor_parallel(model: str, gpu_count: int, found: str | None = None) -> tuple[int, str]:
    """`tensor_parallel_size: auto`: the node's GPU count, lowered to the largest size vLLM can
    shard the model over — attention heads divisible by it, KV heads either divisible by it or
    replicated evenly, the MLP's intermediate size divisible by it (vLLM's column/row-parallel
    layers assert each) — and why. `found` words where the count came from (default: the node's)."""
    limit = max(gpu_count, 1)
    heads, kv, mlp = _shard_dims(model)
    found = found or f"the node's {gpu_count} GPU(s)"
    if heads is None:
        return limit, f"{found}; the model's attention heads are not known here"
    for size in range(limit, 0, -1):
        if heads % size == 0 and (kv % size == 0 or size % kv == 0) and (mlp is None or mlp % size == 0):
            return size, found + ("" if size == limit else f", lowered: {heads} attention / {kv} KV heads"
                                  + (f" / MLP {mlp}" if mlp else "") + f" do not shard over {limit}")
    return 1, found  # unreachable: size 1 always divides


def auto_pipeline_parallel(model: str, node_count: int) -> tuple[int, str]:
    """`pipeline_parallel_size: auto` under the Ray backend: one stage per GPU node, at most one
    per hidden layer (vLLM splits the layers unevenly where they do not divide, so no divisor is
    needed) — and why, where lowered."""
    limit = max(node_count, 1)
    layers = _positive(_model_config(model), "num_hidden_layers")
    if layers is not None and layers < limit:
        return layers, f"pipeline parallel lowered: the model's {layers} layer(s) do not make {limit} stages"
    return limit, ""


@dataclass(frozen=True)
class AutoParallel:
    """What `auto` resolves to, and why, in words for the card."""
    tensor: int
    pipeline: int
    found: str  # "the node's 2 GPU(s)", "8 GPU(s) per node on 2 node(s)"
    tensor_why: str = ""  # where the tensor size is lowered below the GPUs found
    pipeline_why: str = ""
    ray_nodes: int | None = None  # the Ray cluster's GPU nodes; None: one node (mp, or a private Ray)

    def reason(self, tensor_auto: bool, pipeline_auto: bool) -> str:
        return "; ".join(part for part in (self.found + (self.tensor_why if tensor_auto else ""),
                                           self.pipeline_why if pipeline_auto else "") if part)


def auto_parallel(model: str, engine_python: str | None, backend: str | None, env: dict | None) -> AutoParallel:
    """Tensor and pipeline parallel sizes for `auto`. mp (or Ray without RAY_ADDRESS: vLLM starts
    a one-node Ray of its own): tensor over the GPUs the engine's Python sees, one stage. The Ray
    backend with RAY_ADDRESS in the engine's environment: tensor over the GPUs of a node of that
    cluster (its smallest GPU node), one stage per GPU node — vLLM's advice for many nodes."""
    address = (env or {}).get("RAY_ADDRESS")
    if backend == "ray" and address:
        from . import ray_cluster
        per_node = ray_cluster.gpus_per_node(address)
        found = ray_cluster.in_words(per_node)
        tensor, why = auto_tensor_parallel(model, min(per_node, default=0), found)
        pipeline, pipeline_why = auto_pipeline_parallel(model, len(per_node))
        return AutoParallel(tensor, pipeline, found, why.removeprefix(found), pipeline_why, ray_nodes=len(per_node))
    from .. import gpus
    count = gpus.visible_to(engine_python)[0]  # the GPUs the engine's Python sees, not ours
    found = f"the node's {count} GPU(s)"
    tensor, why = auto_tensor_parallel(model, count, found)
    return AutoParallel(tensor, 1, found, why.removeprefix(found))


def _is_auto(value: Any) -> bool:
    return str(value).lower() == AUTO


def _resolved(settings: dict[str, Any]) -> dict[str, Any]:
    wanted = [name for name in ("tensor_parallel_size", "pipeline_parallel_size") if _is_auto(settings.get(name))]
    if not wanted:
        return settings
    plan = auto_parallel(str(settings.get("model") or EngineConfig.model), settings.get("engine_python"),
                         settings.get("distributed_executor_backend"), settings.get("env"))
    sizes = {"tensor_parallel_size": plan.tensor, "pipeline_parallel_size": plan.pipeline}
    return {**settings, **{name: sizes[name] for name in wanted}}


def default_config(overrides: dict[str, Any] | None = None) -> EngineConfig:
    """serving.yaml's engine section, then `overrides` on top; `tensor_parallel_size: auto` and
    `pipeline_parallel_size: auto` become numbers here (auto_parallel)."""
    return EngineConfig().with_overrides(_resolved({**serving_defaults()["engine"], **(overrides or {})}))


def parallelism(engine: EngineConfig, overrides: dict[str, Any] | None = None) -> str:
    """How the engine is split, in words for the card: "tensor parallel 1 (auto: the node's 1 GPU(s))",
    "tensor parallel 8, pipeline parallel 2 across 2 Ray nodes (auto: 8 GPU(s) per node on 2 node(s))"."""
    requested = {**serving_defaults()["engine"], **(overrides or {})}
    tensor_auto, pipeline_auto = (_is_auto(requested.get(name)) for name in ("tensor_parallel_size",
                                                                           "pipeline_parallel_size"))
    auto = tensor_auto or pipeline_auto
    plan = None
    if auto or engine.distributed_executor_backend == "ray":
        plan = auto_parallel(engine.model, engine.engine_python, engine.distributed_executor_backend, engine.env)
    text = f"tensor parallel {engine.tensor_parallel_size}"
    if plan is not None and plan.ray_nodes is not None:
        if engine.pipeline_parallel_size > 1:
            text += f", pipeline parallel {engine.pipeline_parallel_size}"
        if engine.data_parallel_size > 1:
            text += f", data parallel {engine.data_parallel_size}"
        text += f" across {plan.ray_nodes} Ray node{'' if plan.ray_nodes == 1 else 's'}"
    elif engine.pipeline_parallel_size > 1 or engine.data_parallel_size > 1:
        text += f", pipeline parallel {engine.pipeline_parallel_size}, data parallel {engine.data_parallel_size}"
    if auto and plan is not None:
        text += f" (auto: {plan.reason(tensor_auto, pipeline_auto)})"
    return text


_PLACEHOLDER = re.compile(r"\{(\w+)(?::([^{}]*))?\}")


def engine_command(text: str, port: int | None = None, engine: EngineConfig | None = None) -> list[str]:
    """`--engine-cmd`: a JSON list of strings, `{port}` replaced by `port` (when given) and, with
    `engine`, `{name}` by that engine option's value (`{max_num_seqs}`: a study point's setting
    reaches an engine gpucert does not know). `{name:text}` gives the text where the option is
    unset; an unset option without one is an error. Other braces are left as they are."""
    try:
        argv = json.loads(text)
    except ValueError:
        argv = None
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError(f"--engine-cmd: expected a JSON list of strings, got {text!r}")
    if port is None:
        return argv
    values: dict[str, Any] = {}
    if engine is not None:
        values.update({name: getattr(engine, name) for name in field_names()
                       if name not in ("env", "extra_args", "launcher")})
    values["port"] = port

    def fill(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name not in values:
            return match.group(0)
        if values[name] is None:
            if default is None:
                raise ValueError(f"--engine-cmd uses {{{name}}}, which this engine configuration leaves unset "
                                 f"(give a default: {{{name}:VALUE}})")
            return default
        return str(values[name])
    return [_PLACEHOLDER.sub(fill, arg) for arg in argv]
