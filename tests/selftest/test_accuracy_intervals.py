"""The accuracy engine's intervals hold their 95 % at the document count the study uses: a seeded
simulation, in the style of test_intervals.py.

Each case draws 4,000 simulated text sets of 32 documents with the token counts the real set has
under SmolLM2's tokenizer, from a model with a known truth, computes the interval exactly as
`compare` does, and counts how often it holds the truth: within 2 points of 95 % (the
simulation's own standard error is 0.35 points).

The simulated data are shaped like the measured ones (SmolLM2-135M on CPU, the 32 documents):
- per-token NLL differences are heavy-tailed (measured kurtosis 31 for bfloat16 − float32, 42 for
  a corrupted layer): Student t with 3 degrees of freedom around a per-document shift;
- the per-document shift (what makes tokens of one document correlated) is skewed (gamma), sized
  to the measured between-document spread: bfloat16 −0.0003 ± 0.0048 nats/token per document
  (mostly token noise), the corrupted layer +0.19 ± 0.094 (mostly document shift);
- per-document agreement rates vary as a beta distribution sized to the measured design effects
  (1.21 at 96.9 % for bfloat16, 3.37 at 76 % for the corrupted layer), plus two near-bound cases
  (99.8 %, 99.9 %: a dozen or a handful of flips) where a Wald interval covers less and, at
  99.9 %, claims more than 100 % in a quarter of the sets.
The same data analysed token by token (a t interval over ~6,300 "independent" tokens) covers far
less: that is why the document is the unit.
"""

import numpy as np
import pytest
from scipy import stats as sps

from gpucert.accuracy import intervals

SETS = 4000
SEED = 20261215
# scored positions per document (tokens − 1) of accuracy-texts-v1 under SmolLM2-135M's tokenizer
POSITIONS = np.array([314, 213, 207, 195, 198, 145, 196, 205, 188, 197, 205, 183, 180, 187, 197, 200, 198, 187,
                      234, 194, 218, 188, 179, 202, 196, 211, 189, 196, 194, 178, 191, 186])
DOCS = POSITIONS.size


def _nll_sets(rng, mu, tau, sigma):
    """Per-document summed NLL differences (SETS × D), and per set the token-level mean and
    standard deviation a naive interval would use."""
    offsets = np.concatenate([[0], np.cumsum(POSITIONS)[:-1]])
    totals, naive_mean, naive_sd = [], [], []
    for chunk in np.array_split(np.arange(SETS), 8):
        shift = tau * (rng.gamma(2.0, 1.0, (chunk.size, DOCS)) - 2.0) / np.sqrt(2.0)  # skewed, mean 0
        tokens = mu + np.repeat(shift, POSITIONS, axis=1) + sigma * rng.standard_t(3, (chunk.size, POSITIONS.sum())) / np.sqrt(3.0)
        totals.append(np.add.reduceat(tokens, offsets, axis=1))
        naive_mean.append(tokens.mean(axis=1))
        naive_sd.append(tokens.std(axis=1, ddof=1))
    return np.vstack(totals), np.concatenate(naive_mean), np.concatenate(naive_sd)


@pytest.mark.parametrize("mu,tau,sigma", [
    pytest.param(0.0, 0.003, 0.06, id="bfloat16-like", marks=pytest.mark.fault(
        "statistics", "32 documents' NLL differences shaped like bfloat16 vs float32 (tiny shift, heavy-tailed tokens)",
        "the paired t interval over documents covers the true delta within 2 points of 95%")),
    pytest.param(0.19, 0.075, 0.84, id="corrupted-layer-like", marks=pytest.mark.fault(
        "statistics", "32 documents' NLL differences shaped like a corrupted layer (skewed per-document shifts)",
        "the paired t interval over documents covers within 2 points of 95%; a token-level t covers < 90%")),
])
def test_the_paired_t_interval_over_documents_holds_95_percent(mu, tau, sigma):
    rng = np.random.default_rng(SEED)
    totals, naive_mean, naive_sd = _nll_sets(rng, mu, tau, sigma)
    hits, labels = 0, set()
    for row in totals:
        estimate, interval = intervals.paired_t(row, POSITIONS)
        hits += interval.low <= mu <= interval.high
        labels.add(interval.method)
    coverage = hits / SETS
    assert labels == {f"paired t 95% over {DOCS} documents (token-weighted)"}
    assert abs(coverage - 0.95) <= 0.02, f"paired t over documents covers {coverage:.1%}, states 95%"
    # the same tokens taken as independent: the interval is too narrow
    half = sps.norm.ppf(0.975) * naive_sd / np.sqrt(POSITIONS.sum())
    naive = float(np.mean((naive_mean - half <= mu) & (mu <= naive_mean + half)))
    assert naive < 0.92 and naive < coverage - 0.03, f"token-level interval covers {naive:.1%}"


@pytest.mark.parametrize("share,concentration", [
    pytest.param(0.969, 1000.0, id="bfloat16-like", marks=pytest.mark.fault(
        "statistics", "greedy agreement ~96.9% over 32 documents, design effect ~1.2 (as bfloat16 measured)",
        "the clustered Wilson interval covers the true share within 2 points of 95%")),
    pytest.param(0.76, 83.0, id="corrupted-layer-like", marks=pytest.mark.fault(
        "statistics", "greedy agreement ~76% over 32 documents, design effect ~3.4 (as the corrupted layer measured)",
        "the clustered Wilson interval covers within 2 points of 95%")),
    pytest.param(0.998, 1000.0, id="near-100", marks=pytest.mark.fault(
        "statistics", "greedy agreement ~99.8% over 32 documents (about 13 flips in 6,300 positions)",
        "the clustered Wilson interval covers within 2 points of 95% inside [0, 100]; a Wald one covers less")),
    pytest.param(0.999, 2000.0, id="nearer-100", marks=pytest.mark.fault(
        "statistics", "greedy agreement ~99.9% over 32 documents (about 6 flips)",
        "the clustered Wilson interval covers within 2 points of 95% inside [0, 100]; a Wald one runs past 100%")),
])
def test_the_clustered_wilson_interval_of_agreement_holds_95_percent(share, concentration):
    rng = np.random.default_rng(SEED + int(share * 1000))
    rates = rng.beta(share * concentration, (1 - share) * concentration, (SETS, DOCS))
    agreements = rng.binomial(POSITIONS, rates)
    hits = 0
    for row in agreements:
        estimate, interval = intervals.clustered_wilson(row, POSITIONS)
        assert 0.0 <= interval.low <= estimate <= interval.high <= 1.0
        assert interval.method.startswith(f"clustered Wilson 95% over {DOCS} documents (design effect ")
        hits += interval.low <= share <= interval.high
    coverage = hits / SETS
    assert abs(coverage - 0.95) <= 0.02, f"clustered Wilson covers {coverage:.1%} at {share:.1%}, states 95%"
    if share > 0.99:  # why not the plain t (Wald) interval of the share: near 100 % it covers less
        q = sps.t.ppf(0.975, DOCS - 1)
        wald = [(r, q * np.sqrt(v)) for r, v in (intervals.cluster_variance(row, POSITIONS) for row in agreements)]
        wald_coverage = np.mean([r - h <= share <= r + h for r, h in wald])
        assert wald_coverage < coverage - 0.02 and wald_coverage < 0.94
        if share >= 0.999:
            assert np.mean([r + h > 1.0 for r, h in wald]) > 0.1  # and claims agreement above 100 %


def test_equal_lengths_reduce_to_the_textbook_paired_t():
    # every document the same length: the token-weighted interval is scipy's one-sample t of the
    # per-document mean differences
    rng = np.random.default_rng(SEED)
    per_doc = rng.normal(0.01, 0.02, 12)
    estimate, interval = intervals.paired_t(per_doc * 200, np.full(12, 200))
    low, high = sps.ttest_1samp(per_doc, 0.0).confidence_interval(0.95)
    assert estimate == pytest.approx(per_doc.mean())
    assert (interval.low, interval.high) == (pytest.approx(low), pytest.approx(high))


def test_degenerate_cases_say_so():
    _, one = intervals.paired_t([0.5], [100])
    assert one.bounds is None and one.method.startswith("none: 1 document")
    same, none_moved = intervals.paired_t([0.0, 0.0, 0.0], [100, 120, 90])  # the candidate is the reference
    assert same == 0.0 and none_moved.bounds == (0.0, 0.0)
    everywhere, interval = intervals.clustered_wilson([100, 120, 90], [100, 120, 90])  # every position agrees
    assert everywhere == 1.0 and interval.high == 1.0 and 0.9 < interval.low < 1.0
    with pytest.raises(ValueError, match="no documents"):
        intervals.paired_t([], [])
    with pytest.raises(ValueError, match="between 0 and"):
        intervals.clustered_wilson([5], [4])
