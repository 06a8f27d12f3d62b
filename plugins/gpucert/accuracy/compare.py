"""A candidate precision against the higher-precision reference, on the same token ids.

Per scored position t of document d (teacher forcing, scores.py):
    nll = −log p(token_t | tokens_<t)
    agree = candidate's top-1 == reference's top-1
Corpus figures weigh every token once:
    mean NLL = Σ nll / N,   perplexity = exp(mean NLL)
    delta_nll = mean NLL(candidate) − mean NLL(reference)          (nats/token; > 0: candidate worse)
    delta_ppl_pct = (ppl / ppl_ref − 1) · 100 = (exp(delta_nll) − 1) · 100
    greedy_agreement_pct = Σ agree / N · 100
Intervals (intervals.py): documents are the unit of independence; delta_nll has the paired t
interval over documents (token-weighted), delta_ppl_pct the same interval through exp (a monotone
map keeps its coverage), greedy agreement the clustered Wilson interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import intervals
from .intervals import Interval
from .scores import ScoringResult, check_finite, check_same_tokens

# each metric once: unit and which way is better, for whoever records them (docs/METRICS.md)
METRICS: dict[str, dict[str, str]] = {
    "ppl_ref": {"unit": "ppl", "direction": "lower"},
    "ppl": {"unit": "ppl", "direction": "lower"},
    "nll_ref": {"unit": "nats/token", "direction": "lower"},
    "nll": {"unit": "nats/token", "direction": "lower"},
    "delta_nll": {"unit": "nats/token", "direction": "lower"},
    "delta_ppl_pct": {"unit": "%", "direction": "lower"},
    "greedy_agreement_pct": {"unit": "%", "direction": "higher"},
    "tokens": {"unit": "count", "direction": "higher"},
    "documents": {"unit": "count", "direction": "higher"},
}


@dataclass(frozen=True)
class AccuracyComparison:
    candidate: str  # its name in the study ("bfloat16", "fp8-kv")
    reference: str  # the reference's label ("transformers float32")
    candidate_label: str
    text_set: str | None
    documents: int
    tokens: int
    nll_ref: float
    nll: float
    delta_nll: float
    delta_nll_ci: Interval
    delta_ppl_pct: float
    delta_ppl_pct_ci: Interval
    greedy_agreement_pct: float
    greedy_agreement_pct_ci: Interval
    per_document: dict[str, list]  # ids, tokens, delta_nll, greedy_agreement_pct: the samples behind it

    @property
    def ppl_ref(self) -> float:
        return math.exp(self.nll_ref)

    @property
    def ppl(self) -> float:
        return math.exp(self.nll)

    def to_dict(self) -> dict[str, Any]:
        """Plain values, ready to record: each interval as `<metric>_ci` [low, high] (None where
        there is none) and `<metric>_ci_method`, the label of what it is."""
        out: dict[str, Any] = {
            "candidate": self.candidate, "reference": self.reference, "candidate_label": self.candidate_label,
            "text_set": self.text_set, "documents": self.documents, "tokens": self.tokens,
            "nll_ref": self.nll_ref, "nll": self.nll, "ppl_ref": self.ppl_ref, "ppl": self.ppl,
        }
        for name in ("delta_nll", "delta_ppl_pct", "greedy_agreement_pct"):
            interval: Interval = getattr(self, f"{name}_ci")
            out[name] = getattr(self, name)
            out[f"{name}_ci"] = list(interval.bounds) if interval.bounds else None
            out[f"{name}_ci_method"] = interval.method
        out["per_document"] = {k: list(v) for k, v in self.per_document.items()}
        return out


def compare(reference: ScoringResult, candidate: ScoringResult, name: str | None = None) -> AccuracyComparison:
    """`candidate` against `reference`, position by position on the same token ids. Raises
    ValueError (one line) when the two scored different documents or token ids, and
    NonFiniteScores when either has NaN or −inf log-probabilities."""
    name = name or candidate.dtype
    check_same_tokens(reference, candidate, name)
    check_finite(reference, "the reference")
    check_finite(candidate, name)
    n = np.array([d.positions for d in reference.documents], dtype=float)
    ref_nll = np.array([-d.logprobs.sum() for d in reference.documents])
    cand_nll = np.array([-d.logprobs.sum() for d in candidate.documents])
    # per document: the summed difference over its positions, then the token-weighted ratio
    delta, delta_ci = intervals.paired_t(cand_nll - ref_nll, n)
    agree = np.array([np.count_nonzero(c.top1 == r.top1) for r, c in zip(reference.documents, candidate.documents)],
                     dtype=float)
    share, share_ci = intervals.clustered_wilson(agree, n)

    def pct_of_ppl(x: float) -> float:
        return math.expm1(x) * 100.0

    return AccuracyComparison(
        candidate=name, reference=reference.label, candidate_label=candidate.label,
        text_set=reference.text_set if reference.text_set == candidate.text_set else None,
        documents=len(reference.documents), tokens=int(n.sum()),
        nll_ref=float(ref_nll.sum() / n.sum()), nll=float(cand_nll.sum() / n.sum()),
        delta_nll=delta, delta_nll_ci=delta_ci,
        delta_ppl_pct=pct_of_ppl(delta),
        delta_ppl_pct_ci=delta_ci.map(pct_of_ppl, f"{delta_ci.method}, of delta NLL through exp(x) − 1"),
        greedy_agreement_pct=share * 100.0,
        greedy_agreement_pct_ci=share_ci.map(lambda x: x * 100.0),
        per_document={"ids": [d.id for d in reference.documents], "tokens": n.astype(int).tolist(),
                      "delta_nll": ((cand_nll - ref_nll) / n).tolist(),
                      "greedy_agreement_pct": (agree / n * 100.0).tolist()},
    )


def compare_candidates(reference: ScoringResult, candidates: Mapping[str, ScoringResult]) -> dict[str, dict[str, Any]]:
    """Every candidate against the one reference: {name: compare(...).to_dict()}, in the
    candidates' order. An empty mapping is refused (there would be nothing to record)."""
    if not candidates:
        raise ValueError("no candidates to compare against the reference")
    return {name: compare(reference, result, name).to_dict() for name, result in candidates.items()}
