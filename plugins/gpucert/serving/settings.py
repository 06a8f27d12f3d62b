"""The load a serving check puts on its server: serving.yaml's `load` section plus overrides
(`--load-opt key=value`), validated the way the engine settings are: an unknown key or a bad
value is one line naming it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .datasets import DATASETS, FILE_DATASETS
from .summary import SLO_NAMES
from .vllm_config import parse_bool, serving_defaults


@dataclass(frozen=True)
class LoadSettings:
    endpoint: str = "completions"
    # random (token ids, or text without token_ids) | synthetic | sharegpt | jsonl | prefix | trace
    # (datasets.for_load)
    dataset: str = "random"
    dataset_path: str = ""
    # prefix: this many groups, each sharing a prefix of prefix_len tokens (then input_len of its own)
    prefix_groups: int = 16
    prefix_len: int = 1024
    # multiturn: turns per conversation, and the think time between an answer and the next turn (s)
    turns: int = 4
    think_s: float = 0.0
    # trace: its timestamps divided by this (2: twice as fast); tokens per hash id (Mooncake: 512)
    trace_speed: float = 1.0
    trace_block_size: int = 512
    token_ids: bool = True
    input_len: int = 128
    output_len: int = 256
    # lengths uniform in [len·(1−r), len·(1+r)] (vLLM's --random-range-ratio); 0: fixed
    range_ratio: float = 0.0
    concurrency: tuple[int, ...] = (1,)
    requests_per_level: int = 4
    # each level measured this many times, each with its own prompts: a level's metrics are then
    # the mean of its repeats, with the repeats as samples (their t interval judges the change)
    repeats: int = 1
    min_requests: int = 16
    warmup: int = 2
    ignore_eos: bool = True
    vocab_size: int = 151936
    seed: int = 0
    extra_body: dict = field(default_factory=dict)
    # per-request SLOs in ms (ttft_ms, tpot_ms, e2e_ms): goodput and SLO attainment per level
    slo: dict = field(default_factory=dict)
    request_timeout_s: float = 900.0
    # each level (each repeat) ends this many s after it starts, failing what is still in flight;
    # 0: from the level's load (loadgen.default_deadline_s), so a server that never answers
    # cannot hold a check forever
    level_timeout_s: float = 0.0
    # client processes: "auto" spreads past one process's limit (loadgen_workers), or a count
    client_workers: str = "auto"
    # seconds over which each level's streams start (0: all at once, as `vllm bench serve`)
    ramp_up_s: float = 0.0

    def requests_at(self, concurrency: int) -> int:
        return max(self.min_requests, self.requests_per_level * concurrency)

    @property
    def label(self) -> str:
        """The dataset in a few words, for notes on the card."""
        if self.dataset == "trace":
            speed = f" at {self.trace_speed:g}× speed" if self.trace_speed != 1 else ""
            return f"trace {Path(self.dataset_path).name}{speed}"
        if self.dataset in FILE_DATASETS:
            return f"{self.dataset} {Path(self.dataset_path).name}"
        if self.dataset == "multiturn":
            think = f", {self.think_s:g} s think time" if self.think_s else ""
            return (f"conversations of {self.turns} turns, {self.input_len} new in / {self.output_len} out per turn"
                    f"{think} ({'token ids' if self.token_ids else 'text'})")
        if self.dataset == "prefix":
            return (f"{self.prefix_groups} groups sharing {self.prefix_len} tokens + {self.input_len} own in / "
                    f"{self.output_len} out ({'token ids' if self.token_ids else 'text'})")
        spread = f" ±{self.range_ratio:.0%}" if self.range_ratio else ""
        kind = "token ids" if self.dataset == "random" and self.token_ids else "text"
        return f"{self.input_len} in / {self.output_len} out{spread} ({kind})"


_FIELDS = {f.name: f for f in fields(LoadSettings)}
# numbers that may be 0 (every other number must be > 0)
_ZERO_ALLOWED = ("warmup", "seed", "ramp_up_s", "range_ratio", "level_timeout_s", "think_s")


def _coerce(key: str, value: Any) -> Any:
    kind = _FIELDS[key].type
    try:
        if key == "concurrency":
            items = value.split(",") if isinstance(value, str) else value
            levels = tuple(int(v) for v in items)
            if not levels or min(levels) < 1:
                raise ValueError
            return levels
        if key in ("extra_body", "slo"):
            parsed = json.loads(value) if isinstance(value, str) else value
            if not isinstance(parsed, dict):
                raise ValueError
            if key == "slo" and not all(name in SLO_NAMES and isinstance(limit, (int, float))
                                        and not isinstance(limit, bool) and limit > 0
                                        for name, limit in parsed.items()):
                raise ValueError
            return parsed
        if kind == "bool":
            return value if isinstance(value, bool) else parse_bool(str(value))
        if kind == "int":
            number = int(value)
            if number < 0 or (number == 0 and key not in _ZERO_ALLOWED):
                raise ValueError
            return number
        if kind == "float":
            number = float(value)
            if not (number > 0 or (number == 0 and key in _ZERO_ALLOWED)) or (key == "range_ratio" and number >= 1):
                raise ValueError
            return number
        if key == "endpoint" and value not in ("completions", "chat"):
            raise ValueError
        if key == "dataset" and value not in DATASETS:
            raise ValueError
        if key == "client_workers" and not (str(value) == "auto" or (str(value).isdigit() and int(value) >= 1)):
            raise ValueError
        return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"load setting {key}: bad value {value!r}") from None


def load_settings(overrides: dict[str, Any] | None = None) -> LoadSettings:
    values = dict(serving_defaults().get("load") or {})
    for key, value in (overrides or {}).items():
        if key not in _FIELDS:
            raise ValueError(f"unknown load setting {key!r} (valid: {', '.join(_FIELDS)})")
        values[key] = value
    settings = LoadSettings(**{key: _coerce(key, value) for key, value in values.items()})
    if settings.dataset in FILE_DATASETS and not Path(settings.dataset_path).is_file():
        raise ValueError(f"load setting dataset_path: dataset {settings.dataset} needs a file; "
                         f"{settings.dataset_path or 'none given'} is not one")
    return settings


def parse_assignments(items: list[str] | None, option: str) -> dict[str, str]:
    """['a=1', 'b=x'] → {'a': '1', 'b': 'x'}; a malformed item is one line naming the option."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value
    return out
