"""What a serving figure was measured under: the engine's settings and the load's, kept as an
artifact of the sanity check's baseline. A later run under other settings (Ray instead of mp, CUDA
graphs to 1,024, another request count) is then said to be one — its verdicts against that
baseline compare two configurations, and the card names the difference before anyone reads the
deltas as a regression (session 5: a Ray sweep judged against mp baselines "failed" 5 levels)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .settings import LoadSettings
from .vllm_config import EngineConfig
from .vllm_server import redacted

# where and how the engine runs, not what it is: never a difference of configuration
# (`launcher`: the forensics checks' nsys wrapper; their baselines are their own)
_NOT_CONFIG = ("host", "port", "env", "engine_python", "served_model_name", "launcher")
# the load's fields that change what a level measures (the levels themselves are check parameters)
_LOAD_FIELDS = ("endpoint", "dataset", "dataset_path", "token_ids", "input_len", "output_len", "range_ratio",
                "requests_per_level", "min_requests", "warmup", "repeats", "ignore_eos", "extra_body",
                "ramp_up_s", "vocab_size")


def measured_with(load: LoadSettings, engine: EngineConfig | None = None, endpoint: str | None = None,
                  model: str | None = None) -> dict:
    """{"engine": {...} | {"endpoint": url, "model": name}, "load": {...}}: plain JSON, no secrets
    (the endpoint's URL is given without its password or key)."""
    if engine is not None:
        settings = {f.name: getattr(engine, f.name) for f in dataclasses.fields(engine) if f.name not in _NOT_CONFIG}
        settings["extra_args"] = redacted(list(engine.extra_args))  # may carry an --api-key
    else:
        settings = {"endpoint": endpoint, "model": model}  # another model behind the URL is another configuration
    return {"engine": settings, "load": {name: getattr(load, name) for name in _LOAD_FIELDS}}


def changes(baseline: dict, current: dict) -> list[dict[str, Any]]:
    """[{"setting": "engine.distributed_executor_backend", "baseline": "mp", "now": "ray"}, …]"""
    out = []
    for section in ("engine", "load"):
        old, new = baseline.get(section) or {}, current.get(section) or {}
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                out.append({"setting": f"{section}.{name}", "baseline": old.get(name), "now": new.get(name)})
    return out
