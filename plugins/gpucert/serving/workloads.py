"""Workloads that look like production, as prompt datasets (issue 20): shared prefixes, and the
replay of a request trace. Both seeded: the same arguments give the same prompts, token for token.

- `prefix`: G groups, each with a system prefix of P tokens shared by all its prompts, then a
  suffix of S tokens unique to each prompt — the shape of a fleet of chat apps, each with its own
  system prompt, or of RAG over a few long documents. Prompts take the groups in turn, so the
  members of a group are spread over the run, as production's are.
- `trace`: a JSONL request trace in the Mooncake format (also AIPerf's `mooncake_trace`): one
  request a line, `{"timestamp": ms, "input_length": N, "output_length": M, "hash_ids": [...]}`.
  Each hash id stands for one block of `block_size` tokens (512 in Mooncake's traces): requests
  that share leading hash ids share those blocks' tokens, so a replay hits the prefix cache as the
  traced service did. Each prompt carries its send time (`send_at`, seconds from the first
  request, divided by `speed`); the load generator's replay sends it then.

- `multiturn`: conversations of T turns; each turn is a new user message, sent after the
  conversation's history (every earlier message and the server's answers to them: the real
  answers, so the server's prefix cache holds the history as it would in production), a think
  time after the previous answer ended (the load generator's conversation mode).

`expected_prefix_hits` tells what share of the prompt tokens a prefix cache can serve for a list
of prompts: what vLLM's own hit counter is compared with.
"""

from __future__ import annotations

import json
import random as _random
from collections.abc import Iterator
from pathlib import Path

from .datasets import _WORDS, SPECIAL_MARGIN, Prompt, json_lines

MOONCAKE_BLOCK_TOKENS = 512


def _token_range(vocab_size: int) -> tuple[int, int]:
    low, high = SPECIAL_MARGIN, vocab_size - SPECIAL_MARGIN
    if high <= low:
        raise ValueError(f"vocab_size {vocab_size} too small (need > {2 * SPECIAL_MARGIN})")
    return low, high


def _positive(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def shared_prefix(num_prompts: int, groups: int, prefix_len: int, suffix_len: int, output_len: int,
                  vocab_size: int | None = None, seed: int = 0, token_ids: bool = True) -> Iterator[Prompt]:
    """`num_prompts` prompts over `groups` shared prefixes of `prefix_len` tokens (words, for text),
    each followed by `suffix_len` tokens of its own; prompt i belongs to group i mod groups."""
    _positive("groups", groups)
    _positive("prefix_len", prefix_len, 0)
    _positive("suffix_len", suffix_len)
    _positive("output_len", output_len)
    rng = _random.Random(seed)
    if token_ids:
        low, high = _token_range(_positive("vocab_size", vocab_size))

        def draw(n: int) -> list:
            return [rng.randrange(low, high) for _ in range(n)]
    else:
        def draw(n: int) -> list:
            return [rng.choice(_WORDS) for _ in range(n)]
    prefixes = [draw(prefix_len) for _ in range(groups)]
    for index in range(num_prompts):
        tokens = prefixes[index % groups] + draw(suffix_len)
        if token_ids:
            yield Prompt(prompt=tokens, prompt_tokens=len(tokens), output_tokens=output_len)
        else:
            yield Prompt(prompt=" ".join(tokens), prompt_tokens=None, output_tokens=output_len)


def conversations(num_conversations: int, turns: int, input_len: int, output_len: int, think_s: float = 0.0,
                  vocab_size: int | None = None, seed: int = 0, token_ids: bool = True) -> Iterator[Prompt]:
    """`num_conversations` × `turns` prompts, conversation by conversation, turn by turn: each the
    new user message of `input_len` tokens (words, for text) only."""
    _positive("num_conversations", num_conversations)
    _positive("turns", turns)
    _positive("input_len", input_len)
    _positive("output_len", output_len)
    if not think_s >= 0:
        raise ValueError(f"think_s must be >= 0, got {think_s}")
    rng = _random.Random(seed)
    if token_ids:
        low, high = _token_range(_positive("vocab_size", vocab_size))
    for conversation in range(num_conversations):
        for turn in range(turns):
            if token_ids:
                message = [rng.randrange(low, high) for _ in range(input_len)]
                yield Prompt(prompt=message, prompt_tokens=input_len, output_tokens=output_len,
                             conversation=conversation, turn=turn, think_s=think_s)
            else:
                yield Prompt(prompt=" ".join(rng.choice(_WORDS) for _ in range(input_len)), prompt_tokens=None,
                             output_tokens=output_len, conversation=conversation, turn=turn, think_s=think_s)


def trace(path: str | Path, vocab_size: int | None = None, seed: int = 0, speed: float = 1.0,
          block_size: int = MOONCAKE_BLOCK_TOKENS, token_ids: bool = True,
          num_prompts: int | None = None) -> Iterator[Prompt]:
    """The trace's requests in time order, each with its prompt built from its hash ids' blocks and
    its send time `send_at` = (timestamp − the first timestamp) / 1000 / speed."""
    if not speed > 0:
        raise ValueError(f"trace speed must be > 0, got {speed}")
    _positive("block_size", block_size)
    rows = read_trace(Path(path))
    if token_ids:
        low, high = _token_range(_positive("vocab_size", vocab_size))
    blocks: dict[int, list] = {}

    def block(hash_id: int) -> list:
        # the same hash id is the same tokens, in every request and every run with this seed
        if hash_id not in blocks:
            rng = _random.Random(f"{seed}:{hash_id}")
            blocks[hash_id] = ([rng.randrange(low, high) for _ in range(block_size)] if token_ids
                               else [rng.choice(_WORDS) for _ in range(block_size)])
        return blocks[hash_id]

    unique = _random.Random(f"{seed}:unique")
    first = rows[0]["timestamp"] if rows else 0
    for row in rows[:num_prompts]:
        tokens: list = []
        for hash_id in row["hash_ids"]:
            tokens += block(hash_id)
        tokens = tokens[:row["input_length"]]
        short = row["input_length"] - len(tokens)  # beyond the hashed blocks: tokens of its own
        tokens += ([unique.randrange(low, high) for _ in range(short)] if token_ids
                   else [unique.choice(_WORDS) for _ in range(short)])
        send_at = (row["timestamp"] - first) / 1000.0 / speed
        yield Prompt(prompt=tokens if token_ids else " ".join(tokens),
                     prompt_tokens=len(tokens) if token_ids else None,
                     output_tokens=row["output_length"], send_at=send_at)


def read_trace(path: Path) -> list[dict]:
    """The trace's lines, checked (one line's error names the line), sorted by timestamp."""
    rows = []
    for lineno, obj in json_lines(path):
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{lineno}: expected an object")
        stamp = obj.get("timestamp")
        if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) or not stamp >= 0:
            raise ValueError(f"{path}:{lineno}: 'timestamp' (ms) must be a number >= 0, got {stamp!r}")
        hash_ids = obj.get("hash_ids", [])
        if not isinstance(hash_ids, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in hash_ids):
            raise ValueError(f"{path}:{lineno}: 'hash_ids' must be a list of ints")
        try:
            rows.append({"timestamp": float(stamp), "hash_ids": hash_ids,
                         "input_length": _positive("'input_length'", obj.get("input_length")),
                         "output_length": _positive("'output_length'", obj.get("output_length"))})
        except ValueError as err:
            raise ValueError(f"{path}:{lineno}: {err}") from None
    if not rows:
        raise ValueError(f"{path}: no requests in the trace")
    return sorted(rows, key=lambda row: row["timestamp"])  # stable: equal stamps keep file order


def expected_prefix_hits(prompts: list[Prompt], block_size: int) -> tuple[int, int]:
    """(tokens a prefix cache can serve, prompt tokens) over `prompts` sent one after another with
    nothing evicted: each prompt's leading full blocks that an earlier prompt already had, never its
    last token (vLLM recomputes it to produce the first output token). Token-id prompts only."""
    _positive("block_size", block_size)
    seen: set[int] = set()
    hits = total = 0
    for prompt in prompts:
        if not isinstance(prompt.prompt, list):
            raise ValueError("expected_prefix_hits needs token-id prompts")
        tokens = prompt.prompt
        total += len(tokens)
        chain, cached, still_cached = 0, 0, True
        for start in range(0, len(tokens) - block_size + 1, block_size):
            chain = hash((chain, tuple(tokens[start:start + block_size])))  # a block's key includes its past
            if still_cached and chain in seen:
                cached = start + block_size
            else:
                still_cached = False
            seen.add(chain)
        hits += min(cached, len(tokens) - 1)
    return hits, total


def expected_history_hits(records, block_size: int) -> tuple[int, int]:
    """(tokens a prefix cache can serve, prompt tokens) over a multi-turn load's completed
    requests (RequestRecord with conversation, turn, prompt_tokens, output_tokens): a turn's prompt
    opens with the previous turn's prompt and answer, whose full blocks the cache holds but for the
    answer's last token (its KV is never computed: it is sampled, not fed back); never the turn's
    own last prompt token (recomputed for its first output token). A conversation's first turn
    shares nothing (its messages are its own), nor do the warm-up's single messages (conversation
    None; counted in the total, as the server's counters count them); nothing evicted, as
    expected_prefix_hits."""
    _positive("block_size", block_size)
    done = {(r.conversation, r.turn): r for r in records if r.ok and r.conversation is not None}
    hits, total = 0, sum(r.prompt_tokens or 0 for r in records if r.ok and r.conversation is None)
    for (conversation, turn), record in done.items():
        if record.prompt_tokens is None:
            raise ValueError("expected_history_hits needs each request's prompt token count")
        total += record.prompt_tokens
        previous = done.get((conversation, turn - 1))
        if turn and previous is not None and previous.output_tokens is not None:
            computed = previous.prompt_tokens + previous.output_tokens - 1
            hits += min(computed // block_size * block_size, record.prompt_tokens - 1)
    return hits, total


def synthetic_trace(seconds: float, rate: float, burstiness: float, input_len: int, output_len: int,
                    documents: int, shared_blocks: int, block_size: int = MOONCAKE_BLOCK_TOKENS,
                    seed: int = 0) -> list[dict]:
    """A bursty trace in the Mooncake format: arrivals with gamma inter-arrival times of mean
    1/rate and shape `burstiness` (1: Poisson; below 1: bursts and lulls) over `seconds`; each
    request opens with one of `documents` shared runs of `shared_blocks` hash ids (a system prompt,
    a document), then hash ids of its own up to `input_len` tokens."""
    import numpy as np

    for name, value in (("seconds", seconds), ("rate", rate), ("burstiness", burstiness)):
        if not value > 0:
            raise ValueError(f"synthetic trace: {name} must be > 0, got {value}")
    for name, value in (("input_len", input_len), ("output_len", output_len), ("documents", documents),
                        ("block_size", block_size)):
        _positive(f"synthetic trace: {name}", value)
    _positive("synthetic trace: shared_blocks", shared_blocks, 0)
    rng = np.random.default_rng(seed)
    count = int(seconds * rate * 2 + 10)  # more than enough arrivals to pass `seconds`
    gaps = rng.gamma(burstiness, 1.0 / (rate * burstiness), count)
    stamps = np.cumsum(gaps) - gaps[0]
    blocks = -(-input_len // block_size)
    rows, own = [], documents * shared_blocks  # hash ids past the documents' are each request's own
    for stamp in stamps[stamps < seconds]:
        document = int(rng.integers(documents))
        shared = list(range(document * shared_blocks, (document + 1) * shared_blocks))[:blocks]
        mine = list(range(own, own + blocks - len(shared)))
        own += len(mine)
        rows.append({"timestamp": round(float(stamp) * 1000.0, 3), "input_length": input_len,
                     "output_length": output_len, "hash_ids": shared + mine})
    return rows


def write_trace(rows: list[dict], path: Path) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
