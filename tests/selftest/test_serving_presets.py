"""Model presets: full published configs, materialized folders, and the GEMM check unchanged."""

import json

import pytest

from gpucert.physics import gemm
from gpucert.serving import presets

EXPECTED = {"qwen2.5-1.5b", "qwen2.5-7b", "llama-3.1-8b", "qwen3-8b"}


def test_names_and_required_fields():
    assert set(presets.names()) == EXPECTED
    for name in presets.names():
        p = presets.get(name)
        missing = [k for k in presets.REQUIRED_FIELDS if k not in p.config]
        assert not missing, (name, missing)
        assert p.source.startswith("https://huggingface.co/") and p.hf_id in p.source


def test_architecture_specific_fields():
    llama = presets.get("llama-3.1-8b").config
    assert llama["rope_scaling"]["rope_type"] == "llama3" and llama["rope_scaling"]["factor"] == 8.0
    assert llama["vocab_size"] == 128256 and llama["max_position_embeddings"] == 131072
    q15 = presets.get("qwen2.5-1.5b").config
    assert q15["tie_word_embeddings"] is True and q15["use_sliding_window"] is False and "sliding_window" in q15
    assert q15["num_hidden_layers"] == 28 and q15["vocab_size"] == 151936
    assert presets.get("qwen2.5-7b").config["vocab_size"] == 152064
    q3 = presets.get("qwen3-8b").config
    assert q3["head_dim"] == 128 and q3["model_type"] == "qwen3" and q3["num_hidden_layers"] == 36
    assert all(presets.get(n).head_dim == 128 for n in EXPECTED)


def test_materialize_writes_loadable_config(tmp_path):
    folder = presets.materialize("qwen2.5-1.5b", tmp_path)
    assert folder == tmp_path / "qwen2.5-1.5b"
    config = json.loads((folder / "config.json").read_text())
    assert config == presets.get("qwen2.5-1.5b").config
    assert config["architectures"] == ["Qwen2ForCausalLM"]
    assert json.loads((folder / "generation_config.json").read_text())["bos_token_id"] == 151643
    assert presets.materialize("qwen2.5-1.5b", tmp_path) == folder  # idempotent


@pytest.mark.fault('bad-input', 'an unknown model preset', 'error listing the valid names')
def test_unknown_preset_lists_valid_names_and_paths_pass_through(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model preset 'gpt-5' \(valid: .*qwen2.5-1.5b"):
        presets.materialize("gpt-5", tmp_path)
    assert presets.resolve_model("Qwen/Qwen2.5-1.5B-Instruct", tmp_path) == "Qwen/Qwen2.5-1.5B-Instruct"
    assert presets.resolve_model("/models/llama", tmp_path) == "/models/llama"
    assert presets.resolve_model("qwen3-8b", tmp_path) == str(tmp_path / "qwen3-8b")


def test_gemm_reads_the_same_files_with_unchanged_shapes():
    gemm.model_presets.cache_clear()
    assert {n: (p.hidden_size, p.num_attention_heads, p.num_key_value_heads, p.head_dim, p.intermediate_size)
            for n, p in gemm.model_presets().items()} == {
        "qwen2.5-1.5b": (1536, 12, 2, 128, 8960), "qwen2.5-7b": (3584, 28, 4, 128, 18944),
        "llama-3.1-8b": (4096, 32, 8, 128, 14336), "qwen3-8b": (4096, 32, 8, 128, 12288)}
