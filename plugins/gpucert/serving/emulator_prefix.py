"""The emulator's prefix cache: vLLM's automatic prefix caching as its counters see it.

A prompt is cut into full blocks of `block_size` tokens; a block's key is its tokens and the key of
the block before it (so one block's key names its whole prefix, as vLLM's block hashes do). A new
prompt's hit is its leading run of blocks whose keys are cached, at most its length − 1 (vLLM
computes the last prompt token again, to sample the first output token from it). A prompt's blocks
enter the cache once its prefill is done (vLLM caches a block when it is computed: two requests of
one group that arrive together both miss), and at its end the blocks its answer filled (every
answer token but the last has its KV computed), least recently used first out past `capacity`.

Counted as vLLM 0.2x counts on /metrics: `vllm:prefix_cache_queries` (prompt tokens looked up) and
`vllm:prefix_cache_hits` (of them, tokens found), both counters (`_total`).
"""

from __future__ import annotations

from collections import OrderedDict


class PrefixCache:
    def __init__(self, block_size: int, capacity: int | None = None):
        if block_size < 1 or (capacity is not None and capacity < 1):
            raise ValueError("the prefix cache needs block_size >= 1 and a capacity >= 1 block")
        self.block_size, self.capacity = block_size, capacity
        self.blocks: OrderedDict[int, None] = OrderedDict()
        self.queries = self.hits = 0

    def keys(self, tokens: list) -> list[int]:
        """The chained keys of the prompt's full blocks."""
        keys, key = [], 0
        for start in range(0, len(tokens) - self.block_size + 1, self.block_size):
            key = hash((key, tuple(tokens[start:start + self.block_size])))
            keys.append(key)
        return keys

    def lookup(self, tokens: list) -> tuple[int, list[int]]:
        """(cached tokens, the prompt's block keys), counted as one query of len(tokens) tokens."""
        keys = self.keys(tokens)
        found = 0
        for key in keys:
            if key not in self.blocks:
                break
            self.blocks.move_to_end(key)  # used: the least recently used goes first
            found += 1
        cached = min(found * self.block_size, max(len(tokens) - 1, 0))
        self.queries += len(tokens)
        self.hits += cached
        return cached, keys

    def insert(self, keys: list[int]) -> None:
        """The prompt's blocks, computed: cached from now on (evicting the least recently used)."""
        for key in keys:
            self.blocks[key] = None
            self.blocks.move_to_end(key)
        while self.capacity is not None and len(self.blocks) > self.capacity:
            self.blocks.popitem(last=False)
