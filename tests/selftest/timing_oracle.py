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
- its TPOT or ITL means differ from the server's by more than 1 ms plus 3 standard errors of
  what the reads' lateness explains: the lateness at a request's first and last read cancels over
  hundreds of requests (under that hog: TPOT within 0.15 ms), a client error does not.
"""

from __future__ import annotations

import numpy as np

FLOOR_PERCENTILE = 1.0


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
    """Per read: `read` = client arrival − server send (s); per request: `queued` = the server
    handler's start − the client's send stamp (the request path plus server queueing)."""
    reads = [arrived - sent for r in records for arrived, sent, _ in read_groups(r, timings[r.x_request_id]["writes"], k)]
    queued = [timings[r.x_request_id]["start"] - r.sent_at for r in records]
    return {"read": np.asarray(reads), "queued": np.asarray(queued)}


def server_tpot_itl_ms(records, timings: dict, k: int) -> dict[str, tuple[float, float]]:
    """TPOT and ITL means (ms) from the server's own send times, computed here (independently of
    summary.py), each with how far the client's mean may stray from it by lateness alone (ms):
    TPOT = (last send − first send)/(tokens − 1) per request; ITL gaps start after the first chunk
    (its tokens are TTFT's; a second chunk that came in the same read keeps its gap, of 0), timed
    as the server sent the chunks. The client's mean
    differs from the server's by its lateness at each request's last read less that at its first,
    averaged over the requests; that average of random lateness has a standard error, and 3 of them
    is what a busy box may add (a client error moves the mean for every request alike).
    Also the ITL gap count."""
    tpots, tpot_noise, itl_sum, itl_count, itl_noise = [], [], 0.0, 0, []
    for r in records:
        writes = timings[r.x_request_id]["writes"]
        groups = read_groups(r, writes, k)
        tokens = r.requested_output_tokens  # what the emulator sends
        tpots.append((writes[-1] - writes[0]) / (tokens - 1))
        tpot_noise.append(((r.token_times[-1] - writes[-1]) - (r.first_token_at - writes[0])) / (tokens - 1))
        itl_sum += groups[-1][1] - writes[0]
        itl_count += len(r.token_times) - (getattr(r, "first_chunk_tokens", None) or k)
        itl_noise.append((groups[-1][0] - groups[-1][1]) - (groups[0][0] - groups[0][1]))
    n = len(records)
    tpot_allowed = 3 * float(np.std(tpot_noise)) / np.sqrt(n)
    itl_allowed = 3 * float(np.std(itl_noise)) * np.sqrt(n) / max(itl_count, 1)
    return {"tpot": (float(np.mean(tpots)) * 1e3, tpot_allowed * 1e3),
            "itl": (itl_sum / max(itl_count, 1) * 1e3, itl_allowed * 1e3), "itl_count": itl_count}


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
    floor_ms = float(np.percentile(late["read"], FLOOR_PERCENTILE)) * 1e3
    if floor_ms > tolerance_ms:
        faults.append(f"even the client's best reads are stamped {floor_ms:.2f} ms after the server sent them "
                      f"({FLOOR_PERCENTILE:g}th percentile; allowed {tolerance_ms:g} ms)")
    server = server_tpot_itl_ms(records, timings, k)
    for name in ("tpot", "itl"):
        mean_ms, noise_ms = server[name]
        client_ms = getattr(summary, f"{name}_ms")["mean"]
        if abs(client_ms - mean_ms) > tolerance_ms + noise_ms:
            faults.append(f"{name.upper()} mean {client_ms:.2f} ms, the server's {mean_ms:.2f} ms "
                          f"(allowed {tolerance_ms:g} ms + {noise_ms:.2f} ms of the reads' lateness)")
    if summary.itl_ms["count"] != server["itl_count"]:
        faults.append(f"{summary.itl_ms['count']} ITL gaps, the client's reads give {server['itl_count']}")
    return faults
