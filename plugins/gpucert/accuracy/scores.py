"""What a scoring backend returns: per document, per position, under teacher forcing —

- the token actually there (the reference text's next token),
- its log-probability under the model given every token before it,
- the model's own top-1 token at that position (what greedy decoding would have emitted).

Position t = 1 … n−1 of a document of n tokens (the first token has no context and no score).
Both backends (transformers, vLLM) fill the same type, and results travel between processes as
JSON (`to_dict` / `from_dict`): the vLLM worker writes them from the engine's Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .texts import TokenDocument

# log_softmax is ≤ 0; float rounding can leave the top token a hair above it
_LOGPROB_SLACK = 1e-3


@dataclass(frozen=True, eq=False)
class DocumentScores:
    id: str
    token_ids: np.ndarray  # int64, n: the whole document as scored
    logprobs: np.ndarray  # float64, n−1: log p(token_ids[t] | token_ids[:t]), t = 1 … n−1
    top1: np.ndarray  # int64, n−1: argmax p(· | token_ids[:t]), t = 1 … n−1

    def __post_init__(self) -> None:
        object.__setattr__(self, "token_ids", np.asarray(self.token_ids, dtype=np.int64))
        object.__setattr__(self, "logprobs", np.asarray(self.logprobs, dtype=np.float64))
        object.__setattr__(self, "top1", np.asarray(self.top1, dtype=np.int64))
        n = self.token_ids.size
        if n < 2:
            raise ValueError(f"document {self.id!r}: {n} token(s), at least 2 are needed to score one")
        if self.logprobs.shape != (n - 1,) or self.top1.shape != (n - 1,):
            raise ValueError(f"document {self.id!r}: {n} tokens need {n - 1} log-probabilities and top-1 ids, "
                             f"got {self.logprobs.size} and {self.top1.size}")
        if np.any(self.logprobs > _LOGPROB_SLACK):
            raise ValueError(f"document {self.id!r}: a log-probability above 0 ({float(self.logprobs.max()):.4g})")
        if np.any(self.top1 < 0) or np.any(self.token_ids < 0):
            raise ValueError(f"document {self.id!r}: negative token ids")

    @property
    def targets(self) -> np.ndarray:
        """The token at each scored position (the reference token ids)."""
        return self.token_ids[1:]

    @property
    def positions(self) -> int:
        return int(self.logprobs.size)

    def to_dict(self) -> dict[str, Any]:
        # json writes -inf / NaN as -Infinity / NaN and reads them back: a broken precision's
        # overflow survives the trip to be reported, not hidden
        return {"id": self.id, "token_ids": self.token_ids.tolist(), "logprobs": self.logprobs.tolist(),
                "top1": self.top1.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DocumentScores:
        try:
            return cls(str(data["id"]), data["token_ids"], data["logprobs"], data["top1"])
        except KeyError as exc:
            raise ValueError(f"document scores without {exc}") from None


@dataclass(frozen=True, eq=False)
class ScoringResult:
    """One model at one precision scored over a text set."""
    documents: tuple[DocumentScores, ...]
    model: str
    backend: str  # "transformers" or "vllm"
    dtype: str  # torch dtype name as asked: "float32", "bfloat16", "float16"
    settings: dict[str, Any] = field(default_factory=dict)  # device, quantization, kv_cache_dtype, versions
    text_set: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "documents", tuple(self.documents))
        if not self.documents:
            raise ValueError("no documents were scored: the text set is empty")
        ids = [d.id for d in self.documents]
        if len(set(ids)) != len(ids):
            raise ValueError("document ids repeat in one scoring result")

    @property
    def tokens(self) -> int:
        """Scored positions over all documents."""
        return sum(d.positions for d in self.documents)

    @property
    def label(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.settings.items())
                          if k in ("quantization", "kv_cache_dtype") and v)
        return f"{self.backend} {self.dtype}" + (f" ({extra})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "backend": self.backend, "dtype": self.dtype, "settings": dict(self.settings),
                "text_set": self.text_set, "documents": [d.to_dict() for d in self.documents]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoringResult:
        try:
            return cls(tuple(DocumentScores.from_dict(d) for d in data["documents"]), str(data["model"]),
                       str(data["backend"]), str(data["dtype"]), dict(data.get("settings") or {}),
                       data.get("text_set"))
        except KeyError as exc:
            raise ValueError(f"scoring result without {exc}") from None


def check_documents(documents: Sequence[TokenDocument]) -> None:
    """What every backend refuses before it loads anything."""
    if not documents:
        raise ValueError("no documents to score: the text set is empty")
    ids = [d.id for d in documents]
    if len(set(ids)) != len(ids):
        raise ValueError("document ids repeat")
    for d in documents:
        if len(d.token_ids) < 2:
            raise ValueError(f"document {d.id!r} has {len(d.token_ids)} token(s): at least 2 are needed to score one")


def check_same_tokens(reference: ScoringResult, candidate: ScoringResult, name: str = "candidate") -> None:
    """A delta means something only position by position on the very same token ids: refuse
    anything else with one line that says where they first differ."""
    ref_ids = [d.id for d in reference.documents]
    cand_ids = [d.id for d in candidate.documents]
    if ref_ids != cand_ids:
        missing = sorted(set(ref_ids) ^ set(cand_ids))
        what = f"documents {missing[:3]} are in one only" if missing else "documents are in another order"
        raise ValueError(f"{name} and the reference scored different documents: {what}")
    for ref, cand in zip(reference.documents, candidate.documents):
        if ref.token_ids.size != cand.token_ids.size or not np.array_equal(ref.token_ids, cand.token_ids):
            common = min(ref.token_ids.size, cand.token_ids.size)
            diff = np.flatnonzero(ref.token_ids[:common] != cand.token_ids[:common])
            where = f"position {int(diff[0])}" if diff.size else f"length {ref.token_ids.size} vs {cand.token_ids.size}"
            raise ValueError(f"{name} and the reference scored different token ids in document {ref.id!r} "
                             f"(first difference at {where})")


class NonFiniteScores(ValueError):
    """A precision overflowed: log-probabilities of NaN or −inf. A finding about the candidate,
    said in one line, rather than a perplexity of NaN."""


def check_finite(result: ScoringResult, name: str) -> None:
    bad = [(d.id, int(np.flatnonzero(~np.isfinite(d.logprobs))[0]), int((~np.isfinite(d.logprobs)).sum()))
           for d in result.documents if not np.all(np.isfinite(d.logprobs))]
    if bad:
        total = sum(b[2] for b in bad)
        raise NonFiniteScores(f"{name} ({result.label}) has non-finite log-probabilities at {total} position(s) of "
                              f"{len(bad)} document(s), first {bad[0][0]!r} position {bad[0][1] + 1}: the precision "
                              "overflowed")
