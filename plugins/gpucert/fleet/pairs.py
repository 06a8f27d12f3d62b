"""Pairwise node tests: every pair of nodes runs the same all-reduce over all of both nodes' GPUs,
and the pattern of slow pairs says whether a node or a link between two is at fault.

A sick node (its NICs, its PCIe switch, a GPU that throttles) slows every pair it is in; a bad
cable, optic or switch port slows only the pairs whose traffic crosses it. The whole-fleet
all-reduce shows that something is slow, never where: its ring runs at the pace of its slowest
hop. So: a round-robin of pairs (the circle method: in each round every node is in at most one
pair, the pairs of a round run at once, n−1 rounds for n nodes, as cluster acceptance runs of
nccl-tests do), then

- reference: the median over nodes of each node's best pair. A healthy node's best pair is a
  healthy pair, so the reference stays healthy while fewer than half the nodes are sick (a plain
  median over pairs does not: one sick node of four is in half the pairs);
- a pair is low when its bus bandwidth is more than `limit_pct` below the reference;
- a node is suspect when every one of its pairs is low (and it has at least two: with two nodes
  nothing can be told apart); a low pair neither of whose nodes is suspect is a suspect link.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
Pair = tuple[str, str]


def rounds(names: list[str]) -> list[list[Pair]]:
    """Every unordered pair of `names` exactly once, in rounds where no name appears twice (the
    circle method; with an odd count, one name sits each round out)."""
    ring = list(names) + ([None] if len(names) % 2 else [])
    out = []
    for _ in range(len(ring) - 1):
        half = len(ring) // 2
        pairs = [(ring[i], ring[-1 - i]) for i in range(half)]
        out.append([tuple(sorted(p)) for p in pairs if None not in p])
        ring = [ring[0], ring[-1], *ring[1:-1]]  # keep the first, rotate the rest
    return [r for r in out if r]


def run_rounds(schedule: list[list[Pair]], measure: Callable[[Pair], T], parallel: bool = True) -> dict[Pair, T]:
    """measure(pair) for every pair, round by round; a round's pairs at once when `parallel`
    (disjoint nodes: they share only the fabric, as production traffic does)."""
    results: dict[Pair, T] = {}
    for pairs in schedule:
        if parallel and len(pairs) > 1:
            with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
                results.update(zip(pairs, pool.map(measure, pairs)))
        else:
            results.update((pair, measure(pair)) for pair in pairs)
    return results


@dataclass
class Diagnosis:
    reference: float | None
    low: dict[Pair, float] = field(default_factory=dict)  # pair → its distance from the reference, %
    nodes: list[str] = field(default_factory=list)  # suspect nodes
    links: list[Pair] = field(default_factory=list)  # suspect links
    unmeasured: list[Pair] = field(default_factory=list)
    note: str = ""

    def distance_pct(self, value: float) -> float | None:
        if self.reference is None or self.reference <= 0:
            return None
        return (value / self.reference - 1.0) * 100.0

    def explain(self, pair: Pair) -> str:
        """Why a pair is low, in words, or ''."""
        if pair not in self.low:
            return ""
        sick = [node for node in pair if node in self.nodes]
        if sick:
            return f"node {' and '.join(sick)}: every pair it is in is low"
        if pair in self.links:
            return (f"the link {pair[0]} ↔ {pair[1]} (cable, optic, switch port or the route between them): "
                    "both nodes are normal in their other pairs")
        return "cannot tell node from link here" + (f" ({self.note})" if self.note else "")

    def as_dict(self) -> dict[str, Any]:
        return {"reference_gbps": self.reference, "low": {f"{a}-{b}": pct for (a, b), pct in self.low.items()},
                "suspect_nodes": self.nodes, "suspect_links": [f"{a}-{b}" for a, b in self.links],
                "unmeasured": [f"{a}-{b}" for a, b in self.unmeasured], "note": self.note}


def diagnose(values: dict[Pair, float | None], limit_pct: float) -> Diagnosis:
    """Suspect nodes and links from each pair's bus bandwidth (None: the pair did not measure)."""
    measured = {pair: v for pair, v in values.items() if v is not None}
    unmeasured = sorted(pair for pair, v in values.items() if v is None)
    names = sorted({name for pair in values for name in pair})
    best = [max(v for pair, v in measured.items() if name in pair) for name in names
            if any(name in pair for pair in measured)]
    if not best:
        return Diagnosis(None, unmeasured=unmeasured, note="no pair measured")
    diagnosis = Diagnosis(statistics.median(best), unmeasured=unmeasured)
    for pair, value in measured.items():
        pct = diagnosis.distance_pct(value)
        if pct is not None and pct < -limit_pct:
            diagnosis.low[pair] = pct
    for name in names:
        mine = [pair for pair in measured if name in pair]
        if len(mine) >= 2 and all(pair in diagnosis.low for pair in mine):
            diagnosis.nodes.append(name)
    diagnosis.links = sorted(pair for pair in diagnosis.low if not set(pair) & set(diagnosis.nodes)
                             and _both_have_other_pairs(pair, measured))
    if len(names) == 2:
        diagnosis.note = "with two nodes a slow pair cannot say which node or the link: compare with the per-node checks"
    return diagnosis


def _both_have_other_pairs(pair: Pair, measured: dict[Pair, float]) -> bool:
    """A link is named only where each end was seen normal in some other pair."""
    return all(any(node in other and other != pair for other in measured) for node in pair)
