"""The unprofiled level as the monitor saw it: the time a served engine's GPU sat idle between
steps, which no trace window of a few hundred steps shows.

A fixed concurrency of equal-length requests makes waves: the requests of a wave end together, and
the engine then waits while the API server streams their last tokens and the clients send the next
ones. On an H100 at 256 streams (docs/evidence/issue-16-forensics, session 32) the GPU ran no kernel
in 26-30 % of the 100 ms samples of the unprofiled level, in runs of about a second every ~4.5 s —
near what served throughput trailed offline by.

Definitions (docs/METRICS.md, Forensics):
- idle sample: every GPU's NVML utilization 0 % (no kernel ran in its sampling period);
  `gpu_idle_pct` = idle samples ÷ samples with a utilization reading × 100; `idle_runs`: runs of
  consecutive idle samples, with their median length (first to last sample of the run plus one
  sampling interval).
- `below_floor_pct`: samples of vLLM's running gauge under `floor` requests ÷ samples with a
  reading × 100.
- `engine_itl` (`itl_ms_mean`): vLLM's inter-token latency histogram (stamped by the engine core
  as each step's outputs are made) over pairs of consecutive samples whose running gauge is at
  `floor` or above at both ends: Σ Δsum ÷ Σ Δcount — the engine's mean decode step as a decoding
  request saw it, which the client's time between tokens is not where the API server delivers
  tokens in bunches (an H200 at 256 streams: 9.5-12.2 ms between tokens at the client, 6.4-11 ms
  steps in the traces). Samples whose counters fall below an earlier sample's (a restarted engine,
  another API-server process answering) are left out, and so are pairs that saw no token.
"""

from __future__ import annotations

import numpy as np


def _util_columns(columns: dict) -> list[np.ndarray]:
    return [np.asarray(v, dtype=float) for k, v in sorted(columns.items())
            if k.startswith("gpu") and k.endswith(".util_gpu_pct")]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the runs of True in `mask`."""
    edges = np.diff(np.concatenate(([0], mask.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def running_peak(columns: dict | None) -> float | None:
    """The most requests vLLM's running gauge showed in the samples; None without a reading."""
    running = np.asarray((columns or {}).get("vllm.running", ()), dtype=float)
    running = running[np.isfinite(running)]
    return float(running.max()) if running.size else None


def idle_between_steps(columns: dict | None, floor: float) -> dict | None:
    """The idle share of the GPUs and the share of time the engine ran under `floor` requests over
    the samples in `columns` (the monitor's, over the unprofiled level); None without samples."""
    if not columns or not len(columns.get("t", ())):
        return None
    t = np.asarray(columns["t"], dtype=float)
    out: dict = {"samples": int(len(t)), "gpu_idle_pct": None, "idle_runs": 0, "idle_run_s_p50": None,
                 "below_floor_pct": None, "floor": floor}
    utils = _util_columns(columns)
    if utils:
        stacked = np.vstack(utils)
        read = ~np.isnan(stacked).any(axis=0)
        if read.any():
            idle = read & (np.nan_to_num(stacked, nan=1.0) == 0).all(axis=0)
            out["gpu_idle_pct"] = round(float(idle[read].mean() * 100), 3)
            interval = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
            runs = _runs(idle)
            out["idle_runs"] = len(runs)
            if runs:
                lengths = [t[end - 1] - t[start] + interval for start, end in runs]
                out["idle_run_s_p50"] = round(float(np.median(lengths)), 3)
    running = columns.get("vllm.running")
    if running is not None:
        running = np.asarray(running, dtype=float)
        read = ~np.isnan(running)
        if read.any():
            out["below_floor_pct"] = round(float((running[read] < floor).mean() * 100), 3)
    return out


def sentence(figures: dict | None) -> str | None:
    """The finding in words, where there is something to say."""
    if not figures or (figures["gpu_idle_pct"] is None and figures["below_floor_pct"] is None):
        return None
    parts = []
    if figures["gpu_idle_pct"] is not None:
        text = f"the GPU ran no kernel in {figures['gpu_idle_pct']:.0f} % of the monitor's samples"
        if figures["idle_runs"]:
            text += f" ({figures['idle_runs']} idle runs, median {figures['idle_run_s_p50']:.2f} s)"
        parts.append(text)
    if figures["below_floor_pct"] is not None:
        parts.append(f"vLLM ran under {figures['floor']:g} requests in {figures['below_floor_pct']:.0f} % of them")
    return ("Between steps, in the unprofiled level: " + " and ".join(parts) + " — time the engine waited for work, "
            "which a trace window of its steps does not show (a fixed concurrency of equal-length requests ends "
            "them in waves; the next wave comes once the last tokens of one have reached the clients).")


def engine_itl(columns: dict | None, floor: float) -> dict | None:
    """vLLM's own mean inter-token latency over the samples in `columns` (the monitor's, over the
    unprofiled level) at `floor` requests or more: {itl_ms_mean, tokens, pairs}; None without a
    reading of the histogram (a server that does not publish it) or with no token in the stretch."""
    if not columns or "vllm.itl_sum_s" not in columns or "vllm.itl_count" not in columns:
        return None
    total = np.asarray(columns["vllm.itl_sum_s"], dtype=float)
    count = np.asarray(columns["vllm.itl_count"], dtype=float)
    running = np.asarray(columns.get("vllm.running", np.full(len(count), np.nan)), dtype=float)
    # a counter's own series: samples read, and not below any earlier one (a restarted engine, or
    # another API-server process answering with its own counts, would make a jump back and forth)
    read = np.isfinite(total) & np.isfinite(count)
    kept = np.flatnonzero(read)
    kept = kept[(count[kept] >= np.maximum.accumulate(count[kept])) & (total[kept] >= np.maximum.accumulate(total[kept]))]
    total, count, running = total[kept], count[kept], running[kept]
    d_sum, d_count = np.diff(total), np.diff(count)
    steady = (running[:-1] >= floor) & (running[1:] >= floor)  # NaN compares False: no reading, not steady
    usable = steady & (d_count > 0)
    tokens = float(d_count[usable].sum())
    if not tokens:
        return None
    return {"itl_ms_mean": float(d_sum[usable].sum() / tokens * 1e3), "tokens": int(tokens),
            "pairs": int(usable.sum())}
