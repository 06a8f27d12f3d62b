"""Datasets: determinism by seed, lengths and their spread, file parsing and its errors."""

import json

import pytest

from gpucert.serving import datasets
from gpucert.serving.datasets import Prompt


def test_random_tokens_fixed_lengths_and_valid_ids():
    prompts = datasets.get("random", num_prompts=50, input_len=128, output_len=256, vocab_size=151936, seed=1)
    assert len(prompts) == 50
    for p in prompts:
        assert len(p.prompt) == p.prompt_tokens == 128 and p.output_tokens == 256
        assert all(1000 <= t < 151936 - 1000 for t in p.prompt)


def test_random_tokens_seeded():
    a = datasets.get("random", num_prompts=5, input_len=16, output_len=8, vocab_size=32000, seed=7)
    b = datasets.get("random", num_prompts=5, input_len=16, output_len=8, vocab_size=32000, seed=7)
    c = datasets.get("random", num_prompts=5, input_len=16, output_len=8, vocab_size=32000, seed=8)
    assert a == b and a != c


def test_random_tokens_range_ratio_spreads_uniformly():
    prompts = datasets.get("random", num_prompts=2000, input_len=100, output_len=200, vocab_size=32000,
                           range_ratio=0.5, seed=0)
    ins = [p.prompt_tokens for p in prompts]
    outs = [p.output_tokens for p in prompts]
    assert min(ins) >= 50 and max(ins) <= 150 and min(outs) >= 100 and max(outs) <= 300
    assert min(ins) <= 55 and max(ins) >= 145  # the whole range is used
    assert abs(sum(ins) / len(ins) - 100) < 3 and abs(sum(outs) / len(outs) - 200) < 6


@pytest.mark.parametrize("kwargs, message", [
    (dict(range_ratio=1.0), "range_ratio"), (dict(input_len=0), "length must be >= 1"),
    (dict(vocab_size=1500), "vocab_size 1500 too small"),
])
def test_random_tokens_rejects_bad_parameters(kwargs, message):
    args = dict(num_prompts=1, input_len=4, output_len=4, vocab_size=32000) | kwargs
    with pytest.raises(ValueError, match=message):
        datasets.get("random", **args)


def test_synthetic_text_has_unknown_token_count_and_is_seeded():
    a = datasets.get("synthetic", num_prompts=3, input_len=20, output_len=10, seed=3)
    assert a == datasets.get("synthetic", num_prompts=3, input_len=20, output_len=10, seed=3)
    assert all(isinstance(p.prompt, str) and len(p.prompt.split()) == 20 and p.prompt_tokens is None
               and p.output_tokens == 10 for p in a)


def _sharegpt(tmp_path, doc):
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(doc))
    return path


def test_sharegpt_first_human_turn_and_gpt_length(tmp_path):
    path = _sharegpt(tmp_path, [
        {"conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "one two three"}]},
        {"conversations": [{"from": "gpt", "value": "no human first"}]},
        {"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q2"},
                           {"from": "gpt", "value": "a b"}]},
    ])
    got = datasets.get("sharegpt", path=path, shuffle=False)
    assert got == [Prompt("hello there", None, 3), Prompt("q2", None, 2)]
    assert [p.output_tokens for p in datasets.get("sharegpt", path=path, output_len=64)] == [64, 64]
    assert len(datasets.get("sharegpt", path=path, num_prompts=1)) == 1
    assert datasets.get("sharegpt", path=path, seed=5) == datasets.get("sharegpt", path=path, seed=5)


def test_sharegpt_bad_files_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"conversations": [}')
    with pytest.raises(ValueError, match=r"bad.json: not valid JSON \(line 1"):
        datasets.get("sharegpt", path=bad)
    with pytest.raises(ValueError, match="must hold a JSON list"):
        datasets.get("sharegpt", path=_sharegpt(tmp_path, {"a": 1}))
    with pytest.raises(ValueError, match="entry 0 has no 'conversations' list"):
        datasets.get("sharegpt", path=_sharegpt(tmp_path, [{"x": 1}]))


def test_jsonl_prompts_text_and_token_ids(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "hi", "output_tokens": 5}\n\n{"prompt": [11, 12, 13]}\n')
    assert datasets.get("jsonl", path=path, output_len=7) == [Prompt("hi", None, 5), Prompt([11, 12, 13], 3, 7)]


@pytest.mark.parametrize("body, message", [
    ('{"prompt": "a", "output_tokens": 1}\nnot json\n', r"p.jsonl:2: not valid JSON"),
    ('{"text": "a"}\n', r"p.jsonl:1: expected an object with a 'prompt' key"),
    ('{"prompt": "a"}\n', r"p.jsonl:1: 'output_tokens' must be an int >= 1"),
    ('{"prompt": ["x"], "output_tokens": 2}\n', r"p.jsonl:1: 'prompt' list must be non-empty token ids"),
    ('{"prompt": 5, "output_tokens": 2}\n', r"p.jsonl:1: 'prompt' must be text or a list"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, body, message):
    path = tmp_path / "p.jsonl"
    path.write_text(body)
    with pytest.raises(ValueError, match=message):
        datasets.get("jsonl", path=path)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'lmsys' \(valid: random, synthetic, sharegpt, jsonl, prefix, multiturn, trace\)"):
        datasets.get("lmsys")


def test_each_load_level_draws_its_own_prompts():
    """The inference checks' prompts: level 0 (sanity) and every concurrency level get prompts of
    their own, so vLLM's prefix cache never serves one level's prefill from another's."""
    import importlib.util
    from pathlib import Path

    from gpucert.serving.settings import load_settings
    path = Path(__file__).resolve().parents[1] / "inference" / "load.py"
    spec = importlib.util.spec_from_file_location("inference_load", path)
    load = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(load)
    settings = load_settings({"input_len": "16"})
    levels = {level: load.prompts_for(settings, 8, level) for level in (0, 1, 16, 32)}
    every = [tuple(p.prompt) for prompts in levels.values() for p in prompts]
    assert len(set(every)) == len(every) == 32
    assert load.prompts_for(settings, 8, 16) == levels[16]  # still reproducible


@pytest.mark.parametrize("key, value, expected", [
    ("ramp_up_s", "0", 0.0), ("ramp_up_s", "2.5", 2.5), ("concurrency", "1,16", (1, 16)),
    ("client_workers", "auto", "auto"), ("token_ids", "false", False), ("warmup", "0", 0),
    ("range_ratio", "0", 0.0), ("range_ratio", "0.25", 0.25), ("dataset", "synthetic", "synthetic"),
    ("slo", '{"ttft_ms": 500, "tpot_ms": 50.5}', {"ttft_ms": 500, "tpot_ms": 50.5}), ("slo", "{}", {}),
])
def test_load_settings_take_command_line_values(key, value, expected):
    from gpucert.serving.settings import load_settings
    assert getattr(load_settings({key: value}), key) == expected


@pytest.mark.parametrize("key, value", [
    ("ramp_up_s", "-1"), ("ramp_up_s", "soon"), ("request_timeout_s", "0"), ("concurrency", "0,4"),
    ("client_workers", "0"), ("endpoint", "embeddings"), ("input_len", "0"), ("range_ratio", "1"),
    ("range_ratio", "-0.1"), ("dataset", "lmsys"), ("slo", '{"latency_ms": 5}'), ("slo", '{"ttft_ms": 0}'),
    ("slo", '{"ttft_ms": "fast"}'), ("slo", "ttft_ms=5"),
])
def test_load_settings_reject_bad_values_in_one_line(key, value):
    from gpucert.serving.settings import load_settings
    with pytest.raises(ValueError, match=f"^load setting {key}: bad value '{value}'$"):
        load_settings({key: value})


def test_file_datasets_need_their_file(tmp_path):
    from gpucert.serving.settings import load_settings
    with pytest.raises(ValueError, match="^load setting dataset_path: dataset jsonl needs a file; none given is not one$"):
        load_settings({"dataset": "jsonl"})
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": [1, 2], "output_tokens": 3}\n')
    settings = load_settings({"dataset": "jsonl", "dataset_path": str(path)})
    assert settings.label == "jsonl p.jsonl"
    assert load_settings({"range_ratio": "0.5"}).label == "128 in / 256 out ±50% (token ids)"


def test_for_load_every_dataset_by_name(tmp_path):
    """One entry for the checks, the offline sweep and `gpucert loadgen`: `count` prompts, seeded;
    file datasets are reshuffled per seed and repeated to `count`."""
    common = dict(input_len=8, output_len=4, vocab_size=5000, seed=1)
    ids = datasets.for_load("random", 3, token_ids=True, **common)
    assert [len(p.prompt) for p in ids] == [8, 8, 8] and all(p.output_tokens == 4 for p in ids)
    text = datasets.for_load("random", 3, token_ids=False, **common)
    assert text == datasets.for_load("synthetic", 3, token_ids=True, **common)  # random text is synthetic
    assert all(isinstance(p.prompt, str) and p.prompt_tokens is None for p in text)
    spread = datasets.for_load("random", 200, token_ids=True, range_ratio=0.5, **common)
    assert {len(p.prompt) for p in spread} == set(range(4, 13)) and {p.output_tokens for p in spread} == {2, 3, 4, 5, 6}
    path = tmp_path / "p.jsonl"
    path.write_text("".join(f'{{"prompt": [{i}, 7], "output_tokens": {i}}}\n' for i in range(1, 4)))
    rows = datasets.for_load("jsonl", 7, token_ids=True, path=path, **common)
    assert len(rows) == 7 and sorted(p.output_tokens for p in rows[:3]) == [1, 2, 3]
    assert rows[3:6] == rows[:3] and rows[6] == rows[0]  # repeated in the same order
    other_level = datasets.for_load("jsonl", 3, token_ids=True, path=path, **{**common, "seed": 2})
    assert sorted(other_level, key=str) == sorted(rows[:3], key=str)
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="no usable prompts"):
        datasets.for_load("jsonl", 2, token_ids=True, path=empty, **common)
    with pytest.raises(ValueError, match="not UTF-8"):
        (tmp_path / "b.json").write_bytes(b"\xff\xfe[")
        datasets.for_load("sharegpt", 2, token_ids=True, path=tmp_path / "b.json", **common)
