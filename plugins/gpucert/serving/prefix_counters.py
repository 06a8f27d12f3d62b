"""vLLM's prefix-cache counters over one load level's window: read /metrics just before and just
after the level, and the hit rate is the difference of hits over the difference of queries.

vLLM (V1, 0.2x) counts in tokens: `vllm:prefix_cache_queries` — prompt tokens looked up in the
cache — and `vllm:prefix_cache_hits` — of them, the tokens found; both counters (`_total` samples),
one per engine (label `engine`), summed here. A server that does not publish them (an older vLLM,
another server) gives None, and the level says so rather than 0 %; vLLM 0.26 with prefix caching
off publishes both at 0 (seen on an H100), which is no hit rate either.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpucert.monitor.sources import family_prefixes, metric_families

QUERIES, HITS = "vllm:prefix_cache_queries", "vllm:prefix_cache_hits"
_PREFIXES = family_prefixes([QUERIES, HITS, QUERIES + "_total", HITS + "_total"])


@dataclass(frozen=True)
class PrefixCounters:
    queries: float
    hits: float


def parse(text: str) -> PrefixCounters | None:
    """Both counters from a Prometheus exposition (summed over engines), or None when either is absent."""
    found: dict[str, float] = {}
    for family in metric_families(text, _PREFIXES):
        name = family.name.removesuffix("_total")
        samples = [s.value for s in family.samples if s.name in (name, name + "_total")]
        if name in (QUERIES, HITS) and samples:
            found[name] = found.get(name, 0.0) + float(sum(samples))
    if QUERIES not in found or HITS not in found:
        return None
    return PrefixCounters(found[QUERIES], found[HITS])


def window(before: PrefixCounters | None, after: PrefixCounters | None) -> dict[str, float | None]:
    """The level's queried and hit tokens and hit rate (%); Nones where /metrics had no counters
    (or they went backwards: an engine restarted in between, its counters from zero)."""
    if before is None or after is None or after.queries < before.queries or after.hits < before.hits:
        return {"queried_tokens": None, "hit_tokens": None, "hit_pct": None}
    queried, hit = after.queries - before.queries, after.hits - before.hits
    return {"queried_tokens": queried, "hit_tokens": hit, "hit_pct": 100.0 * hit / queried if queried else None}


@dataclass(frozen=True)
class LevelHits:
    """What a level's windows say: a hit rate (%), or why there is none — `absent` (nothing to
    judge: no counters, or caching off and nothing looked up) or `error` (a failed measurement)."""
    hit_pct: float | None
    queried_tokens: float | None
    hit_tokens: float | None
    absent: bool = False
    error: str | None = None


def level_hits(windows: list[dict[str, float | None]], cache_on: bool) -> LevelHits:
    """The hit rate over every repeat's window of one level, in tokens."""
    queried = [w["queried_tokens"] for w in windows]
    if not windows or None in queried:
        return LevelHits(None, None, None, absent=True)
    hits, total = sum(w["hit_tokens"] or 0.0 for w in windows), sum(queried)
    if not total:
        if not cache_on:
            return LevelHits(None, 0.0, 0.0, absent=True)
        return LevelHits(None, 0.0, 0.0, error="caching on, prompts served, yet the prefix cache's counters "
                                               "did not move: 0 tokens looked up")
    return LevelHits(100.0 * hits / total, total, hits)
