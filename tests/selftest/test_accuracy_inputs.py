"""The accuracy engine's text set and its refusals: the packaged set is what its version says
(and ships with the package); bad input — an empty text set, reference and candidate on
different token ids or documents, a precision that overflowed — is a ValueError of one line that
says what and where, raised before any model is loaded or engine started."""

import fnmatch
import math
import re
from pathlib import Path

import numpy as np
import pytest

from gpucert.accuracy import (TEXT_SET_VERSION, DocumentScores, NonFiniteScores, ScoringResult, TokenDocument, compare,
                              compare_candidates, load_texts, score_with_transformers, score_with_vllm, texts, tokenize)

REPO = Path(__file__).resolve().parents[2]


def test_the_packaged_text_set_is_fixed_versioned_and_shipped():
    docs = load_texts()
    assert TEXT_SET_VERSION == "accuracy-texts-v1" and len(docs) == 32
    assert [d.id for d in docs[:3]] == ["gettysburg-address", "kernel-launch-overhead", "sourdough-starter"]
    assert docs[-1].id == "stoic-morning" and len({d.id for d in docs}) == 32
    assert all(100 <= len(d.text.split()) <= 300 for d in docs)
    assert all(d.license.startswith(("public domain", "written for gpucert; dedicated to the public domain"))
               for d in docs)
    assert [d.id for d in load_texts(5)] == [d.id for d in docs[:5]]
    # the build ships it: pyproject's package-data globs match the file
    line = re.search(r"^gpucert = \[(.*)\]$", (REPO / "pyproject.toml").read_text().split("[tool.setuptools.package-data]")[1],
                     re.M)
    globs = [g.strip().strip('"') for g in line.group(1).split(",")]
    assert any(fnmatch.fnmatch("data/accuracy_texts.jsonl", g) for g in globs)


@pytest.mark.fault("bad-input", "the packaged text set edited without bumping its version",
                   "ValueError at load: bump TEXT_SET_VERSION and TEXT_SET_SHA256")
def test_an_edited_text_set_without_a_new_version_is_refused(monkeypatch):
    monkeypatch.setattr(texts, "TEXT_SET_SHA256", "0" * 64)
    with pytest.raises(ValueError, match="bump TEXT_SET_VERSION") as err:
        load_texts()
    assert "\n" not in str(err.value)


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message and message
    return message


@pytest.mark.fault("bad-input", "an empty text set (empty file, limit 0, no documents to tokenize or score)",
                   "ValueError in one line, before any model is loaded or engine started")
def test_an_empty_text_set_is_refused_before_anything_loads(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="text set is empty") as err:
        load_texts(path=empty)
    one_line(err)
    with pytest.raises(ValueError, match="at least 1 document"):
        load_texts(0)
    with pytest.raises(ValueError, match="text set is empty"):
        tokenize([], "/no/such/tokenizer")
    # the model folder does not exist: a refusal after loading would say so instead
    with pytest.raises(ValueError, match="no documents to score: the text set is empty"):
        score_with_transformers(tmp_path / "no-model", [])
    with pytest.raises(ValueError, match="no documents to score"):
        score_with_vllm(tmp_path / "no-model", [], dtype="bfloat16", workdir=tmp_path / "w", python="/no/python")
    assert not (tmp_path / "w").exists()
    with pytest.raises(ValueError, match="no documents were scored"):
        ScoringResult((), "m", "transformers", "float32")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"id": "x", "text": "no title"}\n')
    with pytest.raises(ValueError, match="line 1: not an object with id, title, source, license, text"):
        load_texts(path=broken)


def result(docs: dict[str, list[int]], dtype="float32", shift=0.0, flip_every=0) -> ScoringResult:
    """A synthetic scoring result: logprob −1 − shift at every position, top-1 = token + 1
    (another id every `flip_every` positions)."""
    scored = []
    for doc_id, ids in docs.items():
        n = len(ids) - 1
        top1 = np.array(ids[1:]) + 1
        if flip_every:
            top1[::flip_every] += 1000
        scored.append(DocumentScores(doc_id, ids, np.full(n, -1.0 - shift), top1))
    return ScoringResult(tuple(scored), "m", "transformers", dtype)


DOCS = {"d1": [1, 2, 3, 4, 5, 6], "d2": [9, 8, 7, 6], "d3": [3, 3, 3, 3, 3]}


@pytest.mark.fault("bad-input", "reference and candidate scored on different token ids (another tokenizer, a "
                   "truncation)", "ValueError in one line naming the document and the first differing position")
def test_mismatched_token_ids_are_refused_with_where():
    ref = result(DOCS)
    other = dict(DOCS, d2=[9, 8, 70, 6])
    with pytest.raises(ValueError, match=r"bfloat16 and the reference scored different token ids in document 'd2' "
                                         r"\(first difference at position 2\)") as err:
        compare(ref, result(other, "bfloat16"), "bfloat16")
    one_line(err)
    shorter = dict(DOCS, d3=[3, 3, 3])
    with pytest.raises(ValueError, match=r"document 'd3' \(first difference at length 5 vs 3\)"):
        compare(ref, result(shorter, "bfloat16"))
    fewer = {k: v for k, v in DOCS.items() if k != "d1"}
    with pytest.raises(ValueError, match=r"scored different documents: documents \['d1'\] are in one only"):
        compare(ref, result(fewer, "float16"))
    reordered = {k: DOCS[k] for k in ("d2", "d1", "d3")}
    with pytest.raises(ValueError, match="documents are in another order"):
        compare(ref, result(reordered))
    with pytest.raises(ValueError, match="no candidates"):
        compare_candidates(ref, {})


@pytest.mark.fault("bad-input", "scores whose lengths disagree with the document, or logprobs above 0",
                   "ValueError in one line naming the document")
def test_malformed_scores_are_refused():
    with pytest.raises(ValueError, match=r"document 'x': 4 tokens need 3 log-probabilities and top-1 ids, got 2 and 3"):
        DocumentScores("x", [1, 2, 3, 4], [-1.0, -2.0], [1, 2, 3])
    with pytest.raises(ValueError, match="document 'x': a log-probability above 0"):
        DocumentScores("x", [1, 2], [0.5], [1])
    with pytest.raises(ValueError, match="document 'short' has 1 token"):
        score_with_transformers("/no/model", [TokenDocument("short", (5,))])


@pytest.mark.fault("accuracy", "a candidate precision that overflowed: NaN and -inf log-probabilities",
                   "NonFiniteScores (a ValueError) in one line: how many positions, where first, 'the precision overflowed'")
def test_an_overflowed_candidate_is_named_not_averaged():
    bad = result(DOCS, "float16")
    bad.documents[1].logprobs[1] = math.nan
    bad.documents[2].logprobs[0] = -math.inf
    with pytest.raises(NonFiniteScores, match=r"float16 \(transformers float16\) has non-finite log-probabilities at 2 "
                                              r"position\(s\) of 2 document\(s\), first 'd2' position 2") as err:
        compare(result(DOCS), bad, "float16")
    one_line(err)


def test_known_deltas_come_out_exactly():
    ref = result(DOCS)
    worse = result(DOCS, "bfloat16", shift=0.01, flip_every=2)
    found = compare_candidates(ref, {"bfloat16": worse})["bfloat16"]
    assert found["tokens"] == 5 + 3 + 4 and found["documents"] == 3
    assert found["delta_nll"] == pytest.approx(0.01) and found["nll_ref"] == pytest.approx(1.0)
    assert found["ppl_ref"] == pytest.approx(math.e) and found["delta_ppl_pct"] == pytest.approx(math.expm1(0.01) * 100)
    # every document shifted alike: no spread between documents, an interval of width 0
    assert found["delta_nll_ci"] == [pytest.approx(0.01), pytest.approx(0.01)]
    # flips at positions 0, 2, 4 of d1 (3 of 5), 0, 2 of d2 (2 of 3), 0, 2 of d3 (2 of 4): 5 of 12 agree
    assert found["greedy_agreement_pct"] == pytest.approx(5 / 12 * 100)
    low, high = found["greedy_agreement_pct_ci"]
    assert 0 <= low < 5 / 12 * 100 < high <= 100
    assert found["greedy_agreement_pct_ci_method"].startswith("clustered Wilson 95% over 3 documents")
