"""Built-in model presets: the published config.json of common architectures, so a node can be
certified with `vllm serve <folder> --load-format dummy --skip-tokenizer-init` — no weights, no
tokenizer, no network (air-gapped bring-up).

A preset is one file in gpucert/data/models/: {name, hf_id, source, config, generation_config}.
`config` is the model's full config.json; physics/gemm.py reads the same files for its GEMM shapes.
A model option that is not a preset name (a local path or a hub id) is passed to vLLM unchanged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

# Fields vLLM needs to build a decoder with dummy weights; every preset must carry them.
REQUIRED_FIELDS = (
    "architectures", "model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings",
    "rope_theta", "rms_norm_eps", "tie_word_embeddings", "torch_dtype", "bos_token_id", "eos_token_id",
)


@dataclass(frozen=True)
class Preset:
    name: str
    hf_id: str
    source: str
    config: dict = field(repr=False)
    generation_config: dict = field(default_factory=dict, repr=False)

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    @property
    def head_dim(self) -> int:
        return int(self.config.get("head_dim") or self.config["hidden_size"] // self.config["num_attention_heads"])


@lru_cache(maxsize=1)
def _load_all() -> dict[str, Preset]:
    folder = resources.files("gpucert") / "data" / "models"
    presets: dict[str, Preset] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".json"):
            continue
        doc = json.loads(entry.read_text())
        missing = [k for k in REQUIRED_FIELDS if k not in doc.get("config", {})]
        if missing:
            raise ValueError(f"model preset {entry.name}: config lacks {', '.join(missing)}")
        presets[doc["name"]] = Preset(name=doc["name"], hf_id=doc["hf_id"], source=doc["source"],
                                      config=doc["config"], generation_config=doc.get("generation_config", {}))
    return presets


def names() -> list[str]:
    return list(_load_all())


def is_preset(model: str) -> bool:
    return model in _load_all()


def get(name: str) -> Preset:
    presets = _load_all()
    if name not in presets:
        raise ValueError(f"unknown model preset {name!r} (valid: {', '.join(presets)})")
    return presets[name]


def materialize(name: str, directory: str | Path) -> Path:
    """Write <directory>/<name>/ with config.json (and generation_config.json) and return it.

    The folder is what `vllm serve <folder> --load-format dummy --skip-tokenizer-init` needs:
    the architecture from config.json, random weights, token-id prompts. Rewriting an existing
    folder is harmless (same content), so a session may call this every run."""
    preset = get(name)
    folder = Path(directory) / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(preset.config, indent=2) + "\n")
    if preset.generation_config:
        (folder / "generation_config.json").write_text(json.dumps(preset.generation_config, indent=2) + "\n")
    return folder


def resolve_model(model: str, directory: str | Path) -> str:
    """A preset name becomes a materialized folder; a path or hub id passes through unchanged."""
    return str(materialize(model, directory)) if is_preset(model) else model
