"""Serving metrics from request records, with vLLM `bench serve` semantics (DESIGN.md,
"Serving"): TTFT = first streamed content − sent; E2E = last token − sent;
TPOT = (E2E − TTFT) / (output_tokens − 1) over requests with more than one output token;
ITL = gaps between consecutive tokens, per token (after the first chunk, a chunk of k tokens
contributes its gap once and then k − 1 zero gaps); output tok/s = Σ output tokens / wall time
(first send → last end); goodput = requests meeting every SLO / wall time.
Failed requests are counted and broken down by error text, never dropped."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from gpucert.serving.records import RequestRecord, RunRecords

MS = 1000.0
PERCENTILES = (50, 90, 99)
# Client self-check limits: above these the client, not the server, may be what was measured.
CLIENT_LAG_P99_LIMIT_MS = 5.0
CLIENT_CPU_LIMIT = 0.9
SLO_NAMES = ("ttft_ms", "tpot_ms", "e2e_ms")


def distribution(samples_ms) -> dict:
    """mean, p50/p90/p99 (numpy linear percentiles), min, max, stdev and the sample count."""
    values = np.asarray(list(samples_ms), dtype=float)
    if values.size == 0:
        empty = {"mean": None, **{f"p{p}": None for p in PERCENTILES}}
        return {**empty, "min": None, "max": None, "stdev": None, "count": 0}
    stats = {"mean": float(values.mean())}
    for p, value in zip(PERCENTILES, np.percentile(values, PERCENTILES, method="linear")):
        stats[f"p{p}"] = float(value)
    stats.update(min=float(values.min()), max=float(values.max()),
                 stdev=float(values.std(ddof=1)) if values.size > 1 else 0.0,
                 count=int(values.size))
    return stats


def ttft_s(record: RequestRecord) -> float | None:
    if record.sent_at is None or record.first_token_at is None:
        return None
    return record.first_token_at - record.sent_at


def e2e_s(record: RequestRecord) -> float | None:
    if record.sent_at is None or not record.token_times:
        return None
    return record.token_times[-1] - record.sent_at


def tpot_s(record: RequestRecord) -> float | None:
    """Only defined for more than one output token (the first token is TTFT's)."""
    ttft, e2e = ttft_s(record), e2e_s(record)
    if ttft is None or e2e is None or not record.output_tokens or record.output_tokens < 2:
        return None
    return (e2e - ttft) / (record.output_tokens - 1)


def throughput_series(records: list[RequestRecord], bin_s: float = 1.0) -> tuple[list[float], list[float]]:
    """Streamed output tokens per second over time: (bin start on time.monotonic(), tok/s) for
    each `bin_s` from the first send to the last token; the card draws it over the monitor's.
    The last bin ends at the last token: its rate is over the time it covers (a quarter of a bin
    at least — a sliver after the last full bin is dropped, not drawn as a collapse)."""
    times = np.fromiter((t for r in records for t in r.token_times), dtype=float)
    sends = [r.sent_at for r in records if r.sent_at is not None]
    if not times.size or not sends:
        return [], []
    start, last = min(sends), float(times.max())
    # no sort: a level at 4,096 streams streams ~2M tokens, and the check asks for this twice
    bins = np.bincount(((times - start) / bin_s).astype(int)).tolist()
    if len(bins) > 1 and last - (start + (len(bins) - 1) * bin_s) < bin_s / 4:
        sliver = bins.pop()
        bins[-1] += sliver  # its tokens count in the bin before, now ending at the last token
    spans = [bin_s] * (len(bins) - 1) + [max(last - (start + (len(bins) - 1) * bin_s), bin_s / 4)]
    return [start + i * bin_s for i in range(len(bins))], [count / span for count, span in zip(bins, spans)]


def peak_in_flight(records: list[RequestRecord]) -> int:
    """The most requests in flight (sent, not yet ended) at one moment."""
    events = sorted([(r.sent_at, 1) for r in records if r.sent_at is not None and r.ended_at is not None]
                    + [(r.ended_at, -1) for r in records if r.sent_at is not None and r.ended_at is not None])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def measured_window(records: list[RequestRecord]) -> tuple[float, float] | None:
    """(first send, last end) of the records on time.monotonic(), or None."""
    sends = [r.sent_at for r in records if r.sent_at is not None]
    ends = [r.ended_at for r in records if r.ended_at is not None]
    return (min(sends), max(ends)) if sends and ends else None


def itl_gaps_s(record: RequestRecord) -> list[float]:
    """Per-token gaps after the first chunk. `token_times` repeats a chunk's arrival once per
    token it carried, so consecutive differences give [gap, 0, …, 0] per chunk; the first
    chunk's own tokens (`first_chunk_tokens`) are TTFT's, not gaps, and are skipped. (Found by
    count, not as the leading run of equal times: two chunks that arrive in one read share a
    time, and the second one's gap — a 0 — is a gap all the same.)"""
    times = record.token_times
    first = record.first_chunk_tokens
    if not first:  # a record kept before the count was: the leading run of equal times
        while first < len(times) and times[first] == times[0]:
            first += 1
    if first >= len(times):
        return []
    return list(np.diff(np.asarray(times[first - 1:], dtype=float)))


def missed_slos(record: RequestRecord, slos: dict[str, float]) -> list[str]:
    """The given SLOs (ms) this request missed, in `slos`' order; a request without a TPOT (one
    token) meets a TPOT SLO, one without a TTFT or an end misses those."""
    measured = {"ttft_ms": ttft_s(record), "tpot_ms": tpot_s(record), "e2e_ms": e2e_s(record)}
    return [name for name, limit in slos.items()
            if (measured[name] is None and name != "tpot_ms") or (measured[name] is not None and measured[name] * MS > limit)]


def meets_slos(record: RequestRecord, slos: dict[str, float]) -> bool:
    """Every given SLO (ms) holds (missed_slos)."""
    return not missed_slos(record, slos)


@dataclass
class Summary:
    completed: int
    failed: int
    duration_s: float
    requests_per_s: float
    output_tokens_per_s: float
    total_tokens_per_s: float
    ttft_ms: dict
    tpot_ms: dict
    itl_ms: dict
    e2e_ms: dict
    total_output_tokens: int
    total_prompt_tokens: int
    requests_without_token_count: int  # ok requests whose server sent neither usage nor token_ids
    # ok requests whose token count is not to be trusted (RequestRecord.token_count_mismatch:
    # usage against the stream, or against what was asked), with the reasons and their counts
    token_count_mismatches: int
    token_count_mismatch_reasons: dict
    peak_output_tokens_per_s: float | None  # the busiest 1 s bin of streamed tokens (as vllm bench serve)
    peak_in_flight: int  # most requests between send and end at one moment
    goodput_requests_per_s: float | None
    slo_attainment_pct: float | None  # requests meeting every SLO / all measured (failed ones miss)
    slos: dict

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def summarize(records: list[RequestRecord], slos: dict[str, float] | None = None) -> Summary:
    """Metrics over `records` (warm-up already excluded by the caller)."""
    slos = dict(slos or {})
    unknown = set(slos) - set(SLO_NAMES)
    if unknown:
        raise ValueError(f"unknown SLO {sorted(unknown)}; valid: {', '.join(SLO_NAMES)}")
    ok = [r for r in records if r.ok]
    sends = [r.sent_at for r in records if r.sent_at is not None]
    ends = [r.ended_at for r in records if r.ended_at is not None]
    duration = (max(ends) - min(sends)) if sends and ends else 0.0
    output_tokens = sum(r.output_tokens or 0 for r in ok)
    prompt_tokens = sum(r.prompt_tokens or 0 for r in ok)

    def rate(count: float) -> float:
        return count / duration if duration > 0 else 0.0

    def ms(values) -> list[float]:
        return [v * MS for v in values if v is not None]
    meeting = sum(meets_slos(r, slos) for r in ok)

    return Summary(
        completed=len(ok),
        failed=len(records) - len(ok),
        duration_s=duration,
        requests_per_s=rate(len(ok)),
        output_tokens_per_s=rate(output_tokens),
        total_tokens_per_s=rate(output_tokens + prompt_tokens),
        ttft_ms=distribution(ms(ttft_s(r) for r in ok)),
        tpot_ms=distribution(ms(tpot_s(r) for r in ok)),
        itl_ms=distribution(ms(g for r in ok for g in itl_gaps_s(r))),
        e2e_ms=distribution(ms(e2e_s(r) for r in ok)),
        total_output_tokens=output_tokens,
        total_prompt_tokens=prompt_tokens,
        requests_without_token_count=sum(1 for r in ok if r.output_tokens is None),
        token_count_mismatches=sum(1 for r in ok if r.token_count_mismatch),
        token_count_mismatch_reasons=dict(Counter(r.token_count_mismatch for r in ok
                                                  if r.token_count_mismatch).most_common(10)),
        peak_output_tokens_per_s=max(throughput_series(ok)[1], default=None),
        peak_in_flight=peak_in_flight(records),
        goodput_requests_per_s=rate(meeting) if slos else None,
        slo_attainment_pct=100.0 * meeting / len(records) if slos and records else None,
        slos=slos,
    )


def token_count_wrong(got: int | None, asked: int | None, exact: bool) -> bool:
    """An output-token count (by the server's own count) is wrong when unknown, more than asked,
    or — where the load forbids stopping early (ignore_eos) — not what was asked."""
    if got is None:
        return True
    if asked is None:
        return False
    return got != asked if exact else got > asked


def token_count_mismatches(records: list[RequestRecord], exact: bool) -> list[RequestRecord]:
    """Completed requests whose output-token count is wrong: flagged by the load generator
    (usage against what was streamed, `RequestRecord.token_count_mismatch`) or `token_count_wrong`."""
    return [r for r in records if r.ok and (r.token_count_mismatch or
                                            token_count_wrong(r.output_tokens, r.requested_output_tokens, exact))]


def error_breakdown(records: list[RequestRecord]) -> dict[str, int]:
    """Error text → count, most frequent first."""
    counts = Counter(r.error or f"HTTP {r.http_status}" for r in records if not r.ok)
    return dict(counts.most_common())


def client_check(run: RunRecords) -> dict:
    """The client's own health: event-loop oversleep and scheduled-vs-actual send delay. A
    flagged client may have measured itself rather than the server."""
    lag = distribution(v * MS for v in run.loop_lag_s)
    delay = distribution(r.send_delay * MS for r in run.measured if r.send_delay is not None)
    notices = []
    if lag["p99"] is not None and lag["p99"] > CLIENT_LAG_P99_LIMIT_MS:
        notices.append(f"event-loop lag p99 {lag['p99']:.1f} ms > {CLIENT_LAG_P99_LIMIT_MS} ms")
    if run.cpu_fraction is not None and run.cpu_fraction > CLIENT_CPU_LIMIT:
        notices.append(f"client process CPU {run.cpu_fraction:.0%} of one core")
    return {
        "loop_lag_ms": {k: lag[k] for k in ("p50", "p99", "max", "count")},
        "send_delay_ms": {k: delay[k] for k in ("p50", "p99", "max")},
        "cpu_fraction": run.cpu_fraction,
        "client_may_be_bottleneck": bool(notices),
        "notices": notices,
        "started_monotonic": run.started_monotonic,
        "started_wall": run.started_wall,
    }
