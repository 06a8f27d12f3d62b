"""Capacity under SLO (issue 15, point 4): the highest request rate (Poisson arrivals) and the
highest concurrency at which the SLOs still hold for at least `target` (99 %) of the requests —
a goodput search — with an interval that says how sure the answer is.

How others search, and what is kept from each:
- vLLM's `bench sweep serve_sla` probes the SLA variable (request rate or max concurrency) between
  a minimum and a maximum, keeps the highest value that passed and the lowest that failed, and
  picks the next probe from an interpolation of the margins; one run's mean decides a probe.
- MLPerf LoadGen's FindPeakPerformance (Server scenario) starts from a target QPS that must pass,
  widens the upper bound by a step until a run fails, then binary-searches to a given precision;
  a run is valid when its latency percentile meets the bound, and LoadGen notes that the Server
  scenario need not be monotone in QPS.
- GuideLLM's sweep measures the synchronous and the throughput extremes, then constant rates
  spread between them, and reports each rate's latencies (and goodput against SLO constraints):
  a grid, not a search.

Here, a pure driver over a `measure(x) -> (met, total)` callback (x: a rate in req/s, or a
concurrency; met: requests that met every SLO, of total measured — failed requests count as
misses):
1. bracket: from `start`, grow geometrically (× growth) while a probe's point attainment
   met/total ≥ target; the bracket closes on a failure that is sure (its Clopper-Pearson upper
   bound < target) or confirmed by the next probe up failing too — one noisy failure does not
   end the climb (if the probe above passes, the curve is reported not monotone and the climb
   goes on). From a failing start it shrinks (÷ growth) until a probe passes;
2. bisect between the highest passing and the lowest failing x: geometric midpoints for rates,
   integer (geometric, rounded) midpoints for concurrency, until hi/lo ≤ 1 + resolution (rates)
   or hi − lo ≤ max(1, floor(resolution × lo)) (concurrency: exact below 20 streams at the
   default 10 %), or the probe budget is spent;
3. narrow: with the probes left, bisect between the highest sure hold and the lowest probe above
   it not sure to hold, and likewise at the failing end (an open end: one probe a growth step
   beyond the others);
4. report: `capacity` = the highest probed x whose point attainment ≥ target; the interval
   [`surely_holds`, `surely_fails`) = [highest x that surely holds, lowest x that surely fails],
   each side None where no probe settled it; every probe (x, met, total, its interval) for the
   card's chart; notices (not monotone, bounds reached, budget).

Sure, and the interval's confidence: each probe's attainment gets a Clopper-Pearson interval.
The chart's is the usual two-sided one at `confidence` (95 %). The verdicts use a simultaneous
one: x surely holds when the lower bound at level 1 − 2α/max_probes (α = 1 − confidence) is ≥
target, surely fails when that upper bound is < target — each a one-sided test of error ≤
α/max_probes. A probe errs at most one way (its true attainment is either ≥ target or not), so
over the at most max_probes probes of a search, adaptive or not, the chance that any verdict is
wrong is ≤ α (the union bound); with no wrong verdict, a monotone attainment curve's capacity
lies in [surely_holds, surely_fails). So the interval covers the capacity with probability ≥
`confidence` whatever the curve's shape. Per-probe 95 % intervals would not: several probes near
the capacity each get their 2.5 % chance, and the seeded simulation
(tests/selftest/test_capacity_search.py) saw such an interval cover 84-90 % of the time for a
curve that sits on the target below the capacity; this one covers 95.7-97.3 % there and
99.5-100 % on curves that cross the target.

A probe can only show "holds" if its n requests can put the lower bound at or above the target
at all: with no miss the bound is (α/max_probes)^(1/n), so n ≥ ln(α/max_probes)/ln(target) —
546 requests at 99 %, 95 % and 12 probes (`min_probe_requests`; 299 for a lone probe, the
one-sided 95 % bound); the search refuses a smaller probe. The default
(`default_probe_requests`, twice that: 1,092) lets a probe hold with up to 2 misses.

The statistics take each request as an independent trial. Within one run of a queueing server
misses come in bursts (a queue that builds), so the spread between runs exceeds the binomial
one near the capacity: the interval is about the requests of runs like these, and repeats at the
boundary probes (the studies' noise-aware judging) are what show the run-to-run spread.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from scipy import stats

Kind = Literal["rate", "concurrency"]
KINDS = ("rate", "concurrency")
UNITS = {"rate": "req/s", "concurrency": "streams"}
# the headline metrics (docs/METRICS.md): the capacity, and the interval's ends as _low / _high
METRIC_NAMES = {"rate": "slo_capacity_rps", "concurrency": "slo_capacity_concurrency"}
DEFAULT_TARGET = 0.99
DEFAULT_CONFIDENCE = 0.95
DEFAULT_GROWTH = 2.0
# the interval cannot be narrower than ~10-30 % at ~1,000 requests a probe (the binomial spread
# near the target): bisecting the point estimate finer spends probes its ends need
DEFAULT_RESOLUTION = 0.10
DEFAULT_MAX_PROBES = 12
# requests per probe by default: the fewest that can show "holds" at the target, times this. At
# the bare minimum only a probe with no miss at all can hold (a probe whose true attainment is
# 99.9 % then holds 58 % of the time); at twice it, up to 2 misses in 1,092 (90 %)
DEFAULT_PROBE_FACTOR = 2

# a rate probe lasts at least this long: its first request latency or so is the ramp to the
# steady state it is meant to measure (at 181 req/s on the H100, 1,056 requests arrived in 5.8 s
# while each took ~4 s; session 22)
DEFAULT_PROBE_SECONDS = 30.0

HOLDS, FAILS, UNDECIDED = "holds", "fails", "undecided"


def requests_for_probe(kind: Kind, x: float, statistics_need: int, *, requests_at: Callable[[int], int],
                       min_seconds: float = DEFAULT_PROBE_SECONDS) -> int:
    """Requests of one probe at `x`: at least `statistics_need` (what its verdict needs) and enough
    to be the load it names. At concurrency x, `requests_at(x)` — the serving checks' own rule
    (LoadSettings.requests_at: 4 a stream) — so x streams stay in flight for most of the run,
    instead of one wave that drains: a probe of fewer requests than x streams never has x in flight
    (session 22's 1,056-request probes at 1,117 to 2,048 streams all ran 1,056 at once and came out
    alike). At a rate x, x × `min_seconds` of arrivals."""
    if kind == "concurrency":
        return max(statistics_need, requests_at(int(x)))
    return max(statistics_need, math.ceil(x * min_seconds))


@lru_cache(maxsize=65536)
def clopper_pearson(met: int, total: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[float, float]:
    """The exact (Clopper-Pearson) two-sided interval of a binomial proportion met/total, as
    scipy.stats.binomtest(met, total).proportion_ci(confidence, method="exact") gives it (beta
    quantiles, computed directly: the search's simulation calls this thousands of times)."""
    if not 0 <= met <= total:
        raise ValueError(f"met {met} must be within [0, total {total}]")
    if total == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lower = 0.0 if met == 0 else float(stats.beta.ppf(alpha / 2, met, total - met + 1))
    upper = 1.0 if met == total else float(stats.beta.ppf(1 - alpha / 2, met + 1, total - met))
    return lower, upper


def verdict_level(confidence: float = DEFAULT_CONFIDENCE, max_probes: int = DEFAULT_MAX_PROBES) -> float:
    """The two-sided Clopper-Pearson level of the probes' verdicts: each side errs with at most
    (1 − confidence)/max_probes, so a whole search errs with at most 1 − confidence."""
    return 1.0 - 2.0 * (1.0 - confidence) / max_probes


def min_probe_requests(target: float = DEFAULT_TARGET, confidence: float = DEFAULT_CONFIDENCE,
                       max_probes: int = DEFAULT_MAX_PROBES) -> int:
    """The fewest requests whose verdict lower bound can reach `target` at all (with no miss:
    ((1 − confidence)/max_probes)^(1/n) ≥ target): below it a probe can never show that the
    SLOs hold (546 at 99 %, 95 %, 12 probes)."""
    _check_share(target, confidence)
    if max_probes < 1:
        raise ValueError("max_probes must be >= 1")
    level = verdict_level(confidence, max_probes)
    n = max(1, math.ceil(math.log((1 - level) / 2) / math.log(target)))
    while clopper_pearson(n, n, level)[0] < target:  # floating point at the boundary
        n += 1
    while n > 1 and clopper_pearson(n - 1, n - 1, level)[0] >= target:
        n -= 1
    return n


def default_probe_requests(target: float = DEFAULT_TARGET, confidence: float = DEFAULT_CONFIDENCE,
                           max_probes: int = DEFAULT_MAX_PROBES) -> int:
    """Requests per probe by default: DEFAULT_PROBE_FACTOR × min_probe_requests (1,092 at 99 %,
    95 %, 12 probes)."""
    return DEFAULT_PROBE_FACTOR * min_probe_requests(target, confidence, max_probes)


def _check_share(target: float, confidence: float) -> None:
    if not 0 < target < 1:
        raise ValueError(f"target {target!r} must be within (0, 1)")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence!r} must be within (0, 1)")


@dataclass(frozen=True)
class Probe:
    """One measured point: at x, `met` of `total` requests met every SLO."""

    x: float
    met: int
    total: int
    target: float
    confidence: float  # the chart's interval (`ci`)
    level: float  # the verdict's (verdict_level: simultaneous over the search's probes)

    @property
    def attainment(self) -> float | None:
        return self.met / self.total if self.total else None

    @property
    def ci(self) -> tuple[float, float]:
        """The usual two-sided interval at `confidence`: the chart's error bar."""
        return clopper_pearson(self.met, self.total, self.confidence)

    @property
    def verdict_ci(self) -> tuple[float, float]:
        return clopper_pearson(self.met, self.total, self.level)

    @property
    def passed(self) -> bool:
        """The point estimate: met/total ≥ target."""
        return self.total > 0 and self.met >= self.target * self.total

    @property
    def verdict(self) -> str:
        """holds: the verdict interval's lower bound ≥ target; fails: its upper bound < target."""
        lower, upper = self.verdict_ci
        if lower >= self.target:
            return HOLDS
        return FAILS if upper < self.target else UNDECIDED

    def to_dict(self) -> dict:
        (lower, upper), (v_lower, v_upper) = self.ci, self.verdict_ci
        return {"x": self.x, "met": self.met, "total": self.total, "attainment": self.attainment,
                "ci_low": lower, "ci_high": upper, "verdict_ci_low": v_lower, "verdict_ci_high": v_upper,
                "passed": self.passed, "verdict": self.verdict, "target": self.target}


@dataclass
class CapacityResult:
    kind: str
    target: float
    confidence: float  # of the interval as a whole
    capacity: float | None  # the highest probed x whose point attainment ≥ target
    surely_holds: float | None  # the interval's lower end: the highest x whose CP lower bound ≥ target
    surely_fails: float | None  # its upper end (excluded): the lowest x whose CP upper bound < target
    probes: list[Probe] = field(default_factory=list)  # in the order measured
    notices: list[str] = field(default_factory=list)
    stopped: str = ""  # why the search ended

    @property
    def unit(self) -> str:
        return UNITS[self.kind]

    @property
    def interval(self) -> tuple[float | None, float | None]:
        return self.surely_holds, self.surely_fails

    def covers(self, x: float) -> bool:
        """Whether the interval [surely_holds, surely_fails) contains x (an open side contains
        everything on its side)."""
        return (self.surely_holds is None or self.surely_holds <= x) and \
            (self.surely_fails is None or x < self.surely_fails)

    @property
    def label(self) -> str:
        """What the numbers are, in words (the card's line)."""
        what = "request rate" if self.kind == "rate" else "concurrency"
        share = f"{100 * self.target:g} %"
        conf = f"{100 * self.confidence:g} %"
        if self.capacity is None:
            head = f"no probed {what} kept {share} of requests within the SLOs"
        else:
            head = (f"capacity {_fmt(self.capacity)} {self.unit}: the highest probed {what} with ≥ {share} of "
                    "requests within the SLOs")
        low = (f"{_fmt(self.surely_holds)} surely holds" if self.surely_holds is not None
               else "no probe surely held (lower end open)")
        high = (f"{_fmt(self.surely_fails)} surely fails" if self.surely_fails is not None
                else "no probe surely failed (upper end open)")
        return (f"{head}; {conf} interval [{_fmt(self.surely_holds, '…')}, {_fmt(self.surely_fails, '…')}) "
                f"{self.unit}: {low}, {high} (a probe's attainment surely ≥ / < {share}: Clopper-Pearson, "
                f"simultaneous over the search's probes)")

    def metrics(self) -> dict[str, float | None]:
        """The headline figures under their metric names (docs/METRICS.md): slo_capacity_rps (or
        _concurrency), and its interval's ends as _low (surely holds) and _high (surely fails,
        excluded); None where the search settled nothing."""
        name = METRIC_NAMES[self.kind]
        return {name: self.capacity, f"{name}_low": self.surely_holds, f"{name}_high": self.surely_fails}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "unit": self.unit, "target": self.target, "confidence": self.confidence,
                "capacity": self.capacity, "surely_holds": self.surely_holds, "surely_fails": self.surely_fails,
                "label": self.label, "stopped": self.stopped, "notices": list(self.notices),
                "probes": [p.to_dict() for p in self.probes]}


def slo_counts(records, slos: dict[str, float]) -> tuple[int, int]:
    """(met, total) of a load's measured records: requests that completed and met every SLO
    (serving/summary.meets_slos), of all measured — a failed request is a miss, as the summary's
    slo_attainment_pct counts it. The usual body of a search's measure(x)."""
    from gpucert.serving.summary import meets_slos

    return sum(1 for r in records if r.ok and meets_slos(r, slos)), len(records)


def slo_misses(records, slos: dict[str, float]) -> dict[str, int]:
    """What a probe's misses were: per SLO the completed requests that missed it (a request can
    miss several), and "failed", the requests that did not complete — so a card can say which SLO
    bounds the capacity (TTFT: requests wait for admission or a busy front end; TPOT: the batch
    is too large for the step time)."""
    from gpucert.serving.summary import missed_slos

    misses = dict.fromkeys(slos, 0) | {"failed": 0}
    for record in records:
        for name in (missed_slos(record, slos) if record.ok else ["failed"]):
            misses[name] += 1
    return misses


def _fmt(x: float | None, none: str = "none") -> str:
    if x is None:
        return none
    return f"{x:.4g}" if isinstance(x, float) and not float(x).is_integer() else f"{int(x)}"


def search_capacity(measure: Callable[[float], tuple[int, int]], *, kind: Kind, probe_requests: int,
                    start: float, low: float, high: float, target: float = DEFAULT_TARGET,
                    confidence: float = DEFAULT_CONFIDENCE, growth: float = DEFAULT_GROWTH,
                    resolution: float = DEFAULT_RESOLUTION, max_probes: int = DEFAULT_MAX_PROBES) -> CapacityResult:
    """Search the highest x (kind "rate": req/s; "concurrency": streams, integers) at which at
    least `target` of the requests meet the SLOs, probing `measure(x) -> (met, total)` at most
    `max_probes` times within [low, high] from `start` (module docstring). `probe_requests`: the
    requests the caller's measure sends per probe; below min_probe_requests(target, confidence,
    max_probes) no probe could ever show that the SLOs hold, and the search refuses to start."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r} must be one of {', '.join(KINDS)}")
    _check_share(target, confidence)
    if not growth > 1 or not resolution > 0 or max_probes < 2:
        raise ValueError("growth must be > 1, resolution > 0 and max_probes >= 2")
    needed = min_probe_requests(target, confidence, max_probes)
    if probe_requests < needed:
        raise ValueError(f"{probe_requests} requests per probe can never show ≥ {100 * target:g} % of requests "
                         f"within the SLOs at {100 * confidence:g} % confidence over {max_probes} probes "
                         f"(Clopper-Pearson): at least {needed} are needed")
    level = verdict_level(confidence, max_probes)
    if not 0 < low <= start <= high:
        raise ValueError(f"need 0 < low ({low}) <= start ({start}) <= high ({high})")
    integer = kind == "concurrency"
    if integer:
        if low < 1 or any(not float(v).is_integer() for v in (low, start, high)):
            raise ValueError("a concurrency search needs integer low >= 1, start and high")
        low, start, high = int(low), int(start), int(high)

    result = CapacityResult(kind=kind, target=target, confidence=confidence, capacity=None,
                            surely_holds=None, surely_fails=None)
    seen: dict[float, Probe] = {}

    def probe(x: float) -> Probe:
        if x in seen:
            return seen[x]
        met, total = measure(x)
        met, total = int(met), int(total)
        if not 0 <= met <= total:
            raise ValueError(f"measure({x}) returned met {met} of total {total}")
        p = Probe(x=x, met=met, total=total, target=target, confidence=confidence, level=level)
        if total < needed:
            result.notices.append(f"the probe at {_fmt(x)} measured {total} requests, fewer than the {needed} "
                                  "that could show the SLOs hold")
        seen[x] = p
        result.probes.append(p)
        return p

    def budget() -> bool:
        return len(result.probes) < max_probes

    def up(x):
        return min(high, max(x + 1, round(x * growth))) if integer else min(high, x * growth)

    def down(x):
        return max(low, min(x - 1, math.floor(x / growth))) if integer else max(low, x / growth)

    def resolved(lo, hi) -> bool:
        if integer:
            return hi - lo <= max(1, math.floor(resolution * lo))
        return hi <= lo * (1 + resolution)

    def midpoint(lo, hi):
        mid = math.sqrt(lo * hi)
        return min(max(round(mid), lo + 1), hi - 1) if integer else mid

    # 1. bracket
    lo = hi = None
    x = start
    first = probe(x)
    if first.passed:
        lo, previous, last = x, None, first
        while True:
            if not last.passed and (last.verdict == FAILS or not previous.passed):
                break  # closed: a sure failure, or two in a row
            if x >= high:
                result.stopped = (f"every probe up to the upper bound {_fmt(high)} passed: the capacity is at "
                                  "least that" if last.passed else
                                  f"an unsure failure at the upper bound {_fmt(high)}")
                break
            if not budget():
                result.stopped = "the probe budget ran out while growing"
                break
            x = up(x)
            previous, last = last, probe(x)
            if last.passed:
                lo, hi = x, None  # a failure below this was noise (or the curve is not monotone)
            elif hi is None:
                hi = x
    else:
        hi = x
        while True:
            if x <= low:
                result.stopped = f"the SLOs failed at every probe down to the lower bound {_fmt(low)}"
                break
            if not budget():
                result.stopped = "the probe budget ran out while shrinking"
                break
            x = down(x)
            p = probe(x)
            if p.passed:
                lo = x
                break
            hi = x

    # 2. bisect
    if lo is not None and hi is not None:
        while not resolved(lo, hi):
            if not budget():
                result.stopped = f"the probe budget ({max_probes}) ran out at [{_fmt(lo)}, {_fmt(hi)})"
                break
            x = midpoint(lo, hi)
            if probe(x).passed:
                lo = x
            else:
                hi = x
        else:
            result.stopped = f"resolved to [{_fmt(lo)}, {_fmt(hi)})"

    # 3. narrow the interval's ends with the probes left: between the highest sure hold and the
    # lowest probe above it not sure to hold, and between the lowest sure failure and the highest
    # probe below it not sure to fail, the wider end first. An open end gets one probe a growth
    # step beyond the others, no more: where attainment sits on the target (a plateau), probing
    # further only spends probes, each a chance of a wrong verdict
    extended: set[str] = set()
    while budget() and result.stopped.startswith("resolved"):
        x = _narrowing_probe(result.probes, low, high, growth, resolved, midpoint, integer, extended)
        if x is None:
            break
        probe(x)

    # 4. report
    probes = sorted(result.probes, key=lambda p: p.x)
    passed = [p.x for p in probes if p.passed]
    result.capacity = max(passed) if passed else None
    holds = [p.x for p in probes if p.verdict == HOLDS]
    fails = [p.x for p in probes if p.verdict == FAILS]
    result.surely_holds = max(holds) if holds else None
    result.surely_fails = min(fails) if fails else None
    failed_below = [p for p in probes if not p.passed]
    for p in probes:
        lower_failure = next((f for f in failed_below if f.x < p.x), None)
        if p.passed and lower_failure is not None:
            result.notices.append(f"not monotone: the SLOs held at {_fmt(p.x)} after failing at {_fmt(lower_failure.x)}")
            break
    if result.surely_holds is not None and result.surely_fails is not None \
            and result.surely_holds >= result.surely_fails:
        result.notices.append(f"contradiction: {_fmt(result.surely_holds)} surely holds above "
                              f"{_fmt(result.surely_fails)}, which surely fails: the interval is void")
    return result


def _narrowing_probe(probes: list[Probe], low, high, growth, resolved, midpoint, integer,
                     extended: set[str]) -> float | None:
    """The probe that narrows the wider end of [surely_holds, surely_fails), None when both are
    resolved or cannot move (an open end at its bound, or already extended once: `extended`
    names the open ends probed so far, and the one chosen is added)."""
    xs = sorted(p.x for p in probes)
    holds = [p.x for p in probes if p.verdict == HOLDS]
    fails = [p.x for p in probes if p.verdict == FAILS]
    candidates = []  # (how wide this end is, as a ratio; the probe that narrows it)
    if holds:
        lower = max(holds)
        above = [p.x for p in probes if p.x > lower and p.verdict != HOLDS]
        if above and not resolved(lower, min(above)):
            candidates.append((min(above) / lower, midpoint(lower, min(above)), ""))
    elif xs[0] > low and "low" not in extended:
        below = max(low, math.floor(xs[0] / growth)) if integer else max(low, xs[0] / growth)
        candidates.append((math.inf, below, "low"))
    if fails:
        upper = min(fails)
        below = [p.x for p in probes if p.x < upper and p.verdict != FAILS]
        if below and not resolved(max(below), upper):
            candidates.append((upper / max(below), midpoint(max(below), upper), ""))
    elif xs[-1] < high and "high" not in extended:
        above = min(high, max(xs[-1] + 1, round(xs[-1] * growth))) if integer else min(high, xs[-1] * growth)
        candidates.append((math.inf, above, "high"))
    candidates = [c for c in candidates if c[1] not in xs]
    if not candidates:
        return None
    _, x, end = max(candidates)
    if end:
        extended.add(end)
    return x
