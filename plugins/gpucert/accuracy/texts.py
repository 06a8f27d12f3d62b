"""The fixed text set the accuracy engine scores, and its tokenization.

The set is package data (`gpucert/data/accuracy_texts.jsonl`): 32 short English passages, one JSON
object a line (`id`, `title`, `source`, `license`, `text`), in a fixed order. Five are classic
public-domain openings (Lincoln, Dickens, Austen, Melville, the Declaration), which a model may
have memorised; the other 27 were written for gpucert and dedicated to the public domain (CC0),
so the model has not seen them, in registers a server meets (instructions, letters, technical
explanations, reports, dialogue, policy text).

A delta in perplexity is only comparable with another measured on the same text: the set carries
a version, and its digest is pinned here, so an edit that forgets to bump the version fails at
load time instead of silently moving every baseline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

TEXT_SET_VERSION = "accuracy-texts-v1"
# sha256 of the file's bytes: change the texts -> bump TEXT_SET_VERSION and this digest together
TEXT_SET_SHA256 = "6372d462544f3d1f6146220517db03d999e4c92fdb496ae221e36d9f23359b0a"


@dataclass(frozen=True)
class TextDocument:
    id: str
    title: str
    source: str
    license: str
    text: str


@dataclass(frozen=True)
class TokenDocument:
    """One document as token ids: what both backends score, so reference and candidate see the
    very same ids (the tokenizer runs once, in the caller, never per backend)."""
    id: str
    token_ids: tuple[int, ...]


def _read_set(path: Path | None) -> bytes:
    if path is not None:
        return Path(path).read_bytes()
    return (resources.files("gpucert") / "data" / "accuracy_texts.jsonl").read_bytes()


def load_texts(limit: int | None = None, *, path: Path | None = None) -> list[TextDocument]:
    """The text set in its fixed order; `limit` keeps the first N (the CPU self-tests score a
    subset). `path` reads another JSONL file of the same shape, unversioned (a study's own set)."""
    raw = _read_set(path)
    if path is None and hashlib.sha256(raw).hexdigest() != TEXT_SET_SHA256:
        raise ValueError(f"the packaged accuracy text set differs from {TEXT_SET_VERSION}: bump TEXT_SET_VERSION "
                         "and TEXT_SET_SHA256 in gpucert/accuracy/texts.py with the edit")
    documents = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            documents.append(TextDocument(**{k: str(item[k]) for k in ("id", "title", "source", "license", "text")}))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"accuracy text set line {number}: not an object with id, title, source, license, text "
                             f"({exc})") from None
    ids = [d.id for d in documents]
    if len(set(ids)) != len(ids):
        raise ValueError("accuracy text set: document ids repeat")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1 document, got {limit}")
        documents = documents[:limit]
    if not documents:
        raise ValueError("the accuracy text set is empty: nothing to score")
    return documents


def text_set_label(path: Path | None = None) -> str:
    """What a result records as its text set: the version, or the file a study brought."""
    return TEXT_SET_VERSION if path is None else f"file:{Path(path).name}"


def tokenize(documents: Sequence[TextDocument], tokenizer: str | Path | object) -> list[TokenDocument]:
    """Token ids of each document with the model's own tokenizer (a folder, or a loaded
    transformers tokenizer). Special tokens are added as the tokenizer is configured to (a BOS
    where the model expects one), so the first scored token has the context the model was
    trained with. Documents of fewer than 2 tokens have no position to score: refused."""
    if not documents:
        raise ValueError("no documents to tokenize: the text set is empty")
    if isinstance(tokenizer, (str, Path)):
        from transformers import AutoTokenizer  # heavy, and only needed here
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer))
    out = []
    for doc in documents:
        ids = tuple(int(i) for i in tokenizer(doc.text)["input_ids"])
        if len(ids) < 2:
            raise ValueError(f"document {doc.id!r} has {len(ids)} token(s): at least 2 are needed to score one")
        out.append(TokenDocument(doc.id, ids))
    return out
