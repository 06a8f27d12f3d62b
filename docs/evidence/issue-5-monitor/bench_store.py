"""Issue 5 reach, disk: one hour of 100 ms samples of 8 GPUs (+ host, + vLLM) through the monitor's
own store (5 s chunks, as the sampler flushes), with values that move the way a loaded node's do
(utilization and power jitter, counters that grow, clocks that step). Prints size and timings.

    python docs/evidence/issue-5-monitor/bench_store.py [OUT.npz]
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gpucert.monitor import store
from gpucert.monitor.sources import GPU_FIELDS, HostSource, VllmMetricsSource

GPUS, HOURS, INTERVAL_S, CHUNK = 8, 1.0, 0.100, 50
rows = int(HOURS * 3600 / INTERVAL_S)
rng = np.random.default_rng(0)
t = 1000.0 + np.arange(rows) * INTERVAL_S
columns = {"t": t + rng.normal(0, 0.0005, rows), "scheduled": t}
for g in range(GPUS):
    p = f"gpu{g}."
    util = np.clip(rng.normal(85, 10, rows), 0, 100).round()
    power = rng.normal(550, 60, rows)
    columns |= {
        p + "util_gpu_pct": util, p + "util_mem_pct": np.clip(util * 0.5 + rng.normal(0, 5, rows), 0, 100).round(),
        p + "mem_used_mib": 70000 + rng.integers(0, 200, rows).astype(float),
        p + "power_w": power, p + "energy_j": 2.5e8 + np.cumsum(power * INTERVAL_S),
        p + "sm_clock_mhz": rng.choice([1755.0, 1980.0], rows), p + "mem_clock_mhz": np.full(rows, 2619.0),
        p + "temp_c": np.clip(rng.normal(60, 3, rows), 30, 90).round(), p + "clock_events": rng.choice([0.0, 4.0], rows),
        p + "pcie_tx_bytes": np.cumsum(rng.integers(0, 5e7, rows)).astype(float),
        p + "pcie_rx_bytes": np.cumsum(rng.integers(0, 5e7, rows)).astype(float),
        p + "nvlink_tx_kib": np.cumsum(rng.integers(0, 4e6, rows)).astype(float),
        p + "nvlink_rx_kib": np.cumsum(rng.integers(0, 4e6, rows)).astype(float),
        p + "ecc_corrected": np.zeros(rows), p + "ecc_uncorrected": np.zeros(rows)}
    assert all(p + f in columns for f in GPU_FIELDS)
for name in HostSource.columns + VllmMetricsSource.columns:
    columns[name] = rng.normal(50, 10, rows)

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "hour.npz"
started = time.process_time()
writer = store.ColumnStore(out, {"interval_s": INTERVAL_S})
chunk_cpu = []
for start in range(0, rows, CHUNK):
    before = time.process_time()
    writer.append({name: values[start:start + CHUNK] for name, values in columns.items()})
    chunk_cpu.append(time.process_time() - before)
write_cpu = time.process_time() - started
before = time.perf_counter()
_, loaded = store.load(out)
load_s = time.perf_counter() - before
assert len(loaded["t"]) == rows and np.array_equal(loaded["gpu7.energy_j"], columns["gpu7.energy_j"])
size = out.stat().st_size
print(f"{rows} samples × {len(columns)} columns ({GPUS} GPUs, host, vLLM), {HOURS:g} h at {INTERVAL_S * 1e3:g} ms")
print(f"file {size / 1e6:.1f} MB ({size / rows:.0f} B per sample); target < 50 MB")
print(f"writing: {write_cpu:.1f} s CPU in all = {100 * write_cpu / (HOURS * 3600):.3f} % of one core over the hour; "
      f"per 5 s chunk p50 {1e3 * np.median(chunk_cpu):.1f} ms, max {1e3 * max(chunk_cpu):.1f} ms")
print(f"reading it all back: {load_s:.1f} s")
