"""Run-to-run noise: how sure a measured value is, from its own raw samples.

A metric's value is a statistic of its samples (the median of a GEMM's per-iteration rates, the
p99 of a level's TTFTs, the median of a level's repeats). A percentile bootstrap of that statistic
gives its 95 % confidence interval; the baseline keeps the interval it was measured with. The
judge then asks two questions of a change beyond tolerance: is it material (beyond the band) and
is it real (the interval of the change excludes no change)? Only both make a regression; a change
that the noise of the two measurements can explain is shown as such, never failed.

Deterministic: a fixed seed, so the same samples give the same interval on every machine.
"""

from __future__ import annotations

import math
import re

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000
# the bootstrap works on a sketch of at most this many samples (sorted, evenly spaced ranks —
# the distribution kept, min and max included): a 4,096-stream level has ~2 million ITL gaps
MAX_SAMPLES = 2000
SEED = 20261127
_PERCENTILE = re.compile(r"_p(\d{1,2}(?:\.\d+)?)$")
STATS = ("median", "mean", "min", "max")


def infer_stat(metric: str, has_samples: bool) -> str | None:
    """The statistic a metric's value is of its samples, from its name (`ttft_ms_p99` → p99);
    a rate measured over repeated iterations is their median (physics.core's rule)."""
    if not has_samples:
        return None
    match = _PERCENTILE.search(metric)
    return f"p{match.group(1)}" if match else "median"


def validate_stat(stat: str) -> str:
    if stat in STATS or re.fullmatch(r"p\d{1,2}(\.\d+)?", stat or ""):
        return stat
    raise ValueError(f"stat must be one of {', '.join(STATS)} or pNN (a percentile), got {stat!r}")


def _apply(stat: str, data: np.ndarray, axis: int | None = None) -> np.ndarray:
    if stat == "median":
        return np.median(data, axis=axis)
    if stat == "mean":
        return np.mean(data, axis=axis)
    if stat == "min":
        return np.min(data, axis=axis)
    if stat == "max":
        return np.max(data, axis=axis)
    return np.percentile(data, float(stat[1:]), axis=axis)


def _finite(samples: list[float]) -> np.ndarray:
    return np.asarray([s for s in samples if isinstance(s, (int, float)) and math.isfinite(s)], dtype=float)


def _sketch(data: np.ndarray) -> np.ndarray:
    if data.size > MAX_SAMPLES:
        data = np.sort(data)[np.round(np.linspace(0, data.size - 1, MAX_SAMPLES)).astype(int)]
    return data


def _bootstrap(samples: list[float], stat: str) -> tuple[float, float, float] | None:
    """(statistic, low, high): the statistic of `samples` and its 95 % percentile-bootstrap
    interval, from one sketch of them. None below 3 samples: no interval from that."""
    full = _finite(samples)
    if full.size < 3:
        return None
    data = _sketch(full)
    rng = np.random.default_rng(SEED)
    picks = rng.integers(0, data.size, size=(RESAMPLES, data.size))
    estimates = _apply(stat, data[picks], axis=1)
    lo, hi = np.percentile(estimates, [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100])
    # resampled from the sketch, the interval is as wide as for its size; the real sample count
    # narrows it as 1/√n (the bootstrap's own scaling), around the statistic
    centre = float(_apply(stat, data))
    shrink = math.sqrt(data.size / full.size)
    lo, hi = centre + (float(lo) - centre) * shrink, centre + (float(hi) - centre) * shrink
    return centre, min(lo, hi), max(lo, hi)


def interval(samples: list[float], stat: str) -> tuple[float, float] | None:
    """The 95 % percentile-bootstrap interval of `stat` over `samples` (None below 3 samples)."""
    found = _bootstrap(samples, stat)
    return None if found is None else found[1:]


def relative_interval(samples: list[float], stat: str) -> tuple[float, float] | None:
    """The interval as fractions of the statistic itself (e.g. 0.98, 1.03): for a value recorded
    in other units than its samples (busbw at the mean time, samples per iteration). None below 3
    samples or for a statistic of 0 or not finite."""
    found = _bootstrap(samples, stat)
    if found is None or not found[0] or not math.isfinite(found[0]):
        return None
    centre, lo, hi = found
    return lo / centre, hi / centre


def delta_interval_pct(value: float, ci: tuple[float, float] | None, baseline: float,
                       baseline_ci: tuple[float, float] | None) -> tuple[float, float] | None:
    """The interval of (value − baseline) / |baseline| in %, from the two values' own intervals
    (independent measurements: each side's half-widths added in quadrature, kept asymmetric).
    None when neither side has an interval or the baseline is 0."""
    if not baseline or (ci is None and baseline_ci is None):
        return None
    v_lo, v_hi = ci if ci is not None else (value, value)
    b_lo, b_hi = baseline_ci if baseline_ci is not None else (baseline, baseline)
    delta = value - baseline
    # the lowest plausible change: value at its low end against the baseline at its high end
    down = math.hypot(max(value - v_lo, 0.0), max(b_hi - baseline, 0.0))
    up = math.hypot(max(v_hi - value, 0.0), max(baseline - b_lo, 0.0))
    return ((delta - down) / abs(baseline) * 100, (delta + up) / abs(baseline) * 100)


# a baseline's run-to-run noise from the nightly history needs at least this many past runs
MIN_RUNS = 5


def run_to_run_interval(values: list[float], baseline: float) -> tuple[float, float] | None:
    """Where one more run of the node falls, from its past runs' values (the history's passing
    nights): their 2.5th-97.5th percentiles relative to their median, around the baseline. Past
    runs vary by more than one run's own samples show (another boot, clocks, caches, the engine's
    scheduling): this is the noise a single nightly value must stand out from. None below
    MIN_RUNS values."""
    data = _finite(values)
    if data.size < MIN_RUNS:
        return None
    centre = float(np.median(data))
    if not centre:
        return None
    lo, hi = np.percentile(data, [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100])
    return (baseline * float(lo) / centre, baseline * float(hi) / centre)


def widest(*intervals: tuple[float, float] | None) -> tuple[float, float] | None:
    present = [i for i in intervals if i is not None]
    return (min(i[0] for i in present), max(i[1] for i in present)) if present else None
