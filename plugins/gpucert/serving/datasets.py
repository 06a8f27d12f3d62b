"""Prompt datasets for the load generator and the offline check, all seedable.

Every dataset yields `Prompt(prompt, prompt_tokens, output_tokens)`:
- `prompt` is text or a list of token ids (token ids need no tokenizer: the dummy-weight engine
  runs with --skip-tokenizer-init);
- `prompt_tokens` is exact for token ids, None where only a tokenizer could tell (text);
- `output_tokens` is the length to request (with ignore_eos so the server produces exactly that).

Registry by name (`get("random", ...)`), as guidellm does, with the valid names in the error.
"""

from __future__ import annotations

import json
import random as _random
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterator

# Token ids near both ends of a vocabulary are special or reserved in common tokenizers
# (Qwen: 151643+ are <|endoftext|>, <|im_start|> …; Llama: 128000+). Stay clear of both ends.
SPECIAL_MARGIN = 1000


@dataclass(frozen=True)
class Prompt:
    prompt: str | list[int]
    prompt_tokens: int | None
    output_tokens: int
    # seconds after the run's start at which a trace replay sends it (workloads.trace); None: the
    # load's own schedule (a concurrency, a rate)
    send_at: float | None = None
    # a multi-turn conversation's turn (workloads.conversations): `prompt` is the new user
    # message only; the load generator sends it after the conversation's history (every earlier
    # turn and the server's answer to it), `think_s` after the previous answer ended
    conversation: int | None = None
    turn: int = 0
    think_s: float = 0.0


def level_seed(seed: int, level: int, repeat: int = 0) -> int:
    """The seed of one load level's prompts. Each level (and the sanity check, level 0), and each
    repeat of a level, draws its own prompts: levels that reuse the same prompts hit vLLM's prefix
    cache (seen on the GPU node: hit rates of 35-87 % across levels), so prefill would be measured
    only at the first level."""
    return seed * 1_000_003 + level + repeat * 104_729  # a prime above any level


def _length_range(mean: int, range_ratio: float) -> tuple[int, int]:
    """vLLM's --random-range-ratio: lengths uniform in [mean·(1−r), mean·(1+r)], at least 1."""
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"range_ratio must be in [0, 1), got {range_ratio}")
    if mean < 1:
        raise ValueError(f"length must be >= 1, got {mean}")
    return max(1, round(mean * (1 - range_ratio))), max(1, round(mean * (1 + range_ratio)))


def random_tokens(num_prompts: int, input_len: int, output_len: int, vocab_size: int,
                  range_ratio: float = 0.0, seed: int = 0) -> Iterator[Prompt]:
    """Random token ids drawn from [SPECIAL_MARGIN, vocab_size − SPECIAL_MARGIN)."""
    low, high = SPECIAL_MARGIN, vocab_size - SPECIAL_MARGIN
    if high <= low:
        raise ValueError(f"vocab_size {vocab_size} too small (need > {2 * SPECIAL_MARGIN})")
    in_lo, in_hi = _length_range(input_len, range_ratio)
    out_lo, out_hi = _length_range(output_len, range_ratio)
    rng = _random.Random(seed)
    for _ in range(num_prompts):
        n_in = rng.randint(in_lo, in_hi)
        n_out = rng.randint(out_lo, out_hi)
        ids = [rng.randrange(low, high) for _ in range(n_in)]
        yield Prompt(prompt=ids, prompt_tokens=n_in, output_tokens=n_out)


# A fixed word list keeps synthetic text reproducible without a corpus or a tokenizer.
_WORDS = (
    "the of and to in is that for on with as by at from this be are was it an or which "
    "model node cluster server token request latency throughput memory cache kernel batch "
    "engine tensor parallel network queue stream response prompt output input graph compute "
    "measure baseline report value system time rate load test check result error signal"
).split()


def synthetic_text(num_prompts: int, input_len: int, output_len: int, range_ratio: float = 0.0,
                   seed: int = 0) -> Iterator[Prompt]:
    """Text of `input_len` words (± range_ratio). Without a tokenizer the token count is unknown,
    so prompt_tokens is None; the server's `usage` gives the real count."""
    in_lo, in_hi = _length_range(input_len, range_ratio)
    out_lo, out_hi = _length_range(output_len, range_ratio)
    rng = _random.Random(seed)
    for _ in range(num_prompts):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(in_lo, in_hi))]
        yield Prompt(prompt=" ".join(words), prompt_tokens=None, output_tokens=rng.randint(out_lo, out_hi))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise ValueError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason})") from None


def json_lines(path: Path) -> Iterator[tuple[int, object]]:
    """(line number, parsed JSON) of each non-blank line; a line that does not parse is named."""
    for lineno, line in enumerate(_read(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None


def sharegpt(path: str | Path, num_prompts: int | None = None, output_len: int | None = None,
             seed: int = 0, shuffle: bool = True) -> Iterator[Prompt]:
    """ShareGPT JSON: a list of {"conversations": [{"from": "human"|"gpt", "value": ...}, ...]}.
    Prompt = the first human turn; output length = the following gpt turn's length in words, or
    `output_len` when given. Conversations without a human turn followed by gpt are skipped."""
    path = Path(path)
    try:
        doc = json.loads(_read(path))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from err
    if not isinstance(doc, list):
        raise ValueError(f"{path}: ShareGPT file must hold a JSON list, got {type(doc).__name__}")
    pairs: list[tuple[str, int]] = []
    for index, entry in enumerate(doc):
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list):
            raise ValueError(f"{path}: entry {index} has no 'conversations' list")
        for first, second in zip(turns, turns[1:]):
            if not (isinstance(first, dict) and isinstance(second, dict)):
                raise ValueError(f"{path}: entry {index} has a turn that is not an object")
            if first.get("from") == "human" and second.get("from") == "gpt":
                n_out = output_len if output_len is not None else max(1, len(str(second.get("value", "")).split()))
                pairs.append((str(first.get("value", "")), n_out))
                break
    if shuffle:
        _random.Random(seed).shuffle(pairs)
    for text, n_out in pairs[:num_prompts]:
        yield Prompt(prompt=text, prompt_tokens=None, output_tokens=n_out)


def jsonl(path: str | Path, num_prompts: int | None = None, output_len: int | None = None,
          seed: int = 0, shuffle: bool = False) -> Iterator[Prompt]:
    """One JSON object a line: {"prompt": text | [token ids], "output_tokens"?: int}.
    Lines without output_tokens need `output_len`. Blank lines are skipped."""
    path = Path(path)
    rows: list[Prompt] = []
    for lineno, obj in json_lines(path):
        if not isinstance(obj, dict) or "prompt" not in obj:
            raise ValueError(f"{path}:{lineno}: expected an object with a 'prompt' key")
        prompt = obj["prompt"]
        if isinstance(prompt, list):
            if not prompt or not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
                raise ValueError(f"{path}:{lineno}: 'prompt' list must be non-empty token ids (ints)")
            prompt_tokens = len(prompt)
        elif isinstance(prompt, str):
            prompt_tokens = obj.get("prompt_tokens")
        else:
            raise ValueError(f"{path}:{lineno}: 'prompt' must be text or a list of token ids")
        n_out = obj.get("output_tokens", output_len)
        if not isinstance(n_out, int) or isinstance(n_out, bool) or n_out < 1:
            raise ValueError(f"{path}:{lineno}: 'output_tokens' must be an int >= 1 "
                             f"(or pass output_len), got {n_out!r}")
        rows.append(Prompt(prompt=prompt, prompt_tokens=prompt_tokens, output_tokens=n_out))
    if shuffle:
        _random.Random(seed).shuffle(rows)
    yield from rows[:num_prompts]


def _shared_prefix(**kwargs) -> Iterator[Prompt]:
    from .workloads import shared_prefix  # workloads builds on this module's Prompt and words
    return shared_prefix(**kwargs)


def _conversations(**kwargs) -> Iterator[Prompt]:
    from .workloads import conversations
    return conversations(**kwargs)


def _trace(**kwargs) -> Iterator[Prompt]:
    from .workloads import trace
    return trace(**kwargs)


DATASETS: dict[str, Callable[..., Iterator[Prompt]]] = {
    "random": random_tokens,
    "synthetic": synthetic_text,
    "sharegpt": sharegpt,
    "jsonl": jsonl,
    "prefix": _shared_prefix,
    "multiturn": _conversations,
    "trace": _trace,
}


def get(name: str, **kwargs) -> list[Prompt]:
    """Build the named dataset; its keyword arguments are those of the function above."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r} (valid: {', '.join(DATASETS)})")
    return list(DATASETS[name](**kwargs))


FILE_DATASETS = ("sharegpt", "jsonl", "trace")


def for_load(name: str, count: int | None, *, input_len: int, output_len: int, token_ids: bool, vocab_size: int,
             range_ratio: float = 0.0, seed: int = 0, path: str | Path | None = None,
             prefix_groups: int = 16, prefix_len: int = 1024, trace_speed: float = 1.0,
             trace_block_size: int = 512, turns: int = 4, think_s: float = 0.0) -> list[Prompt]:
    """`count` prompts of one load (a level, the sanity check, the offline sweep), as the load
    settings and `gpucert loadgen` name them:
    - `random`: random token ids when `token_ids`, else synthetic text (no tokenizer here to turn
      text into ids), lengths `input_len`/`output_len` ± `range_ratio`;
    - `synthetic`: synthetic text;
    - `sharegpt`, `jsonl`: the file at `path`, shuffled by `seed` (so each level draws its own
      order), repeated when it holds fewer than `count`; ShareGPT output lengths from its answers,
      JSONL's from each line or `output_len`. Text prompts need a server with a tokenizer;
    - `prefix`: `prefix_groups` shared prefixes of `prefix_len` tokens, each prompt one of them
      then `input_len` tokens of its own (workloads.shared_prefix);
    - `multiturn`: ⌈count ÷ `turns`⌉ conversations of `turns` turns, each a new user message of
      `input_len` tokens sent after the history, `think_s` after the last answer (workloads.conversations);
    - `trace`: the Mooncake-format trace at `path`, its first `count` requests in time order, each
      with its send time (its timestamps ÷ `trace_speed`) and its hash ids' blocks of
      `trace_block_size` tokens (workloads.trace)."""
    if name == "prefix":
        return get("prefix", num_prompts=count, groups=prefix_groups, prefix_len=prefix_len, suffix_len=input_len,
                   output_len=output_len, vocab_size=vocab_size, seed=seed, token_ids=token_ids)
    if name == "multiturn":  # at least `count` turns: ⌈count ÷ turns⌉ conversations
        return get("multiturn", num_conversations=max(1, -(-count // turns)), turns=turns, input_len=input_len,
                   output_len=output_len, think_s=think_s, vocab_size=vocab_size, seed=seed, token_ids=token_ids)
    if name == "trace":
        if not path:
            raise ValueError("dataset trace needs a file (load setting dataset_path, or --dataset-path)")
        return get("trace", path=path, vocab_size=vocab_size, seed=seed, speed=trace_speed,
                   block_size=trace_block_size, token_ids=token_ids, num_prompts=count)
    if name == "random" and token_ids:
        return get("random", num_prompts=count, input_len=input_len, output_len=output_len,
                   vocab_size=vocab_size, range_ratio=range_ratio, seed=seed)
    if name in ("random", "synthetic"):
        return get("synthetic", num_prompts=count, input_len=input_len, output_len=output_len,
                   range_ratio=range_ratio, seed=seed)
    if name in FILE_DATASETS:
        if not path:
            raise ValueError(f"dataset {name} needs a file (load setting dataset_path, or --dataset-path)")
        rows = get(name, path=path, seed=seed, shuffle=True,
                   output_len=output_len if name == "jsonl" else None)
        if not rows:
            raise ValueError(f"{path}: no usable prompts in it")
        return [rows[i % len(rows)] for i in range(count)]
    raise ValueError(f"unknown dataset {name!r} (valid: {', '.join(DATASETS)})")
