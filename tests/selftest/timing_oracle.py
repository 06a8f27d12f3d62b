"""The timing oracle: the load generator's timestamps judged against what the emulator really did
(`--record-timings`: per request, its handler's start and the moment just before each chunk went to
the socket), not against the configured schedule. On a busy box the emulator falls behind its
schedule and the client reads late; both are the scheduler's doing, not the client's, and judging
against the server's own stamps takes the first out entirely. What is left is the client's
lateness per read (its arrival stamp − the server's send), which a busy box makes larger for
*some* reads, never smaller, and never negative. So a client is wrong when:

- it stamps a read before the server sent its bytes, or a request sent after the server started
  it (causality: no load can do that);
- even its best reads are late (the `FLOOR_PERCENTILE`-th percentile over all reads): a client
  error — sleeping before stamping, stamping after some slow step — delays every read, while a
  loaded scheduler delays some and leaves others prompt (measured under a CPU hog on both cores of
  the 2-core box at 256 streams: 1st percentile 0.02 ms, median 7.5 ms);
- even its best reads in the second half of each stream are late: an error that grows with the
  stream (stamping after re-reading all it got so far) leaves the first reads prompt, so the floor
  over all reads misses it, while load does not pick the later reads of every stream;
- its TPOT or ITL means are not the server's plus the lateness it measured at each request's
  first and last reads. That is an identity for a client whose summary follows its own stamps,
  whatever load did to them (the stamps themselves are judged by the rules above), so it is
  checked to float rounding. It once allowed 1 ms plus 3 standard errors of that lateness instead,
  which load broke: at 256 streams sent in one burst the requests end together, so one stall of
  the client delays the last reads of all of them alike (TPOT +1.3 ms, "allowed" 0.17 ms — the
  standard error assumes independent requests).
"""

from __future__ import annotations

import numpy as np

FLOOR_PERCENTILE = 1.0
# float rounding of sums of monotonic stamps (~1e6 s of uptime: 2e-10 s apart), 10^4 below any
# client error worth finding
ROUNDING_MS = 1e-4


def read_groups(record, writes: list[float], k: int) -> list[tuple[float, float, int]]:
    """(client arrival stamp, server send of the read's last chunk, tokens in the read) for each read
    of `record`: tokens with one arrival stamp came in one read, and a read can only be complete
    once the server sent the latest chunk in it. `k`: tokens per server chunk (token_times holds
    one entry per token when the client asked for token ids, else one per chunk: pass k=1)."""
    groups: list[tuple[float, float, int]] = []
    for i, arrived in enumerate(record.token_times):
        sent = writes[i // k]
        if groups and groups[-1][0] == arrived:
            groups[-1] = (arrived, max(groups[-1][1], sent), groups[-1][2] + 1)
        else:
            groups.append((arrived, sent, 1))
    return groups


def lateness_s(records, timings: dict, k: int) -> dict[str, np.ndarray]:
    """Per read: `read` = client arrival − server send (s), `late_read` the same for the reads in
    the second half of each stream; per request: `queued` = the server handler's start − the
    client's send stamp (the request path plus server queueing)."""
    reads, late_reads = [], []
    for r in records:
        groups = read_groups(r, timings[r.x_request_id]["writes"], k)
        lateness = [arrived - sent for arrived, sent, _ in groups]
        reads += lateness
        late_reads += lateness[len(lateness) // 2:]
    queued = [timings[r.x_request_id]["start"] - r.sent_at for r in records]
    return {"read": np.asarray(reads), "late_read": np.asarray(late_reads), "queued": np.asarray(queued)}


def expected_tpot_itl_ms(records, k: int) -> dict:
    """The TPOT and ITL means (ms) the client must report, computed here (independently of
    summary.py): per request, the server's span (last send − first send) plus the client's lateness
    at its last read less that at its first, which is the span between the client's own first and
    last stamps (the sends cancel). TPOT = that span/(tokens − 1), tokens as the emulator sent
    them; ITL gaps start after the first chunk (its tokens are TTFT's; a second chunk that came in
    the same read keeps its gap, of 0) and sum to the same span. Also the ITL gap count."""
    tpots, itl_sum, itl_count = [], 0.0, 0
    for r in records:
        span = r.token_times[-1] - r.first_token_at
        tpots.append(span / (r.requested_output_tokens - 1))
        itl_sum += span
        itl_count += len(r.token_times) - (getattr(r, "first_chunk_tokens", None) or k)
    return {"tpot": float(np.mean(tpots)) * 1e3, "itl": itl_sum / max(itl_count, 1) * 1e3, "itl_count": itl_count}


def timing_faults(records, timings: dict, k: int, summary, tolerance_ms: float) -> list[str]:
    """What the client got wrong, judged against the server's own stamps (empty: nothing)."""
    late = lateness_s(records, timings, k)
    faults = []
    if late["read"].min() <= 0:
        faults.append(f"{int((late['read'] <= 0).sum())} reads stamped before the server sent them "
                      f"(by up to {-late['read'].min() * 1e3:.2f} ms)")
    if late["queued"].min() <= 0:
        faults.append(f"{int((late['queued'] <= 0).sum())} requests started at the server before the client "
                      f"stamped them sent (by up to {-late['queued'].min() * 1e3:.2f} ms)")
    floors = {"": late["read"], " in the second half of each stream": late["late_read"]}
    for where, reads in floors.items():
        floor_ms = float(np.percentile(reads, FLOOR_PERCENTILE)) * 1e3
        if floor_ms > tolerance_ms:
            faults.append(f"even the client's best reads{where} are stamped {floor_ms:.2f} ms after the server "
                          f"sent them (percentile {FLOOR_PERCENTILE:g}; allowed {tolerance_ms:g} ms)")
    expected = expected_tpot_itl_ms(records, k)
    for name in ("tpot", "itl"):
        client_ms = getattr(summary, f"{name}_ms")["mean"]
        if abs(client_ms - expected[name]) > ROUNDING_MS:
            faults.append(f"{name.upper()} mean {client_ms:.3f} ms, where the server's sends and the client's "
                          f"own read lateness give {expected[name]:.3f} ms")
    if summary.itl_ms["count"] != expected["itl_count"]:
        faults.append(f"{summary.itl_ms['count']} ITL gaps, the client's reads give {expected['itl_count']}")
    return faults
