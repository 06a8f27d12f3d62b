#!/usr/bin/env bash
# Issue 5: the sampler's own cost on a lent GPU node once the cumulative counters are read on their
# own cadence (≤ 1 % of a core), NVLink as the driver's own sum, host figures with the counters (session 4). Needs the node's python3 (pynvml,
# numpy, torch) and the staged bundle's site, no vLLM server: NVML call costs, the monitor idle, under an NCCL all_reduce (NVLink
# counters), at 20 ms, and with 5,000 streams on the emulator's vLLM-style /metrics.
set -uo pipefail
# the bundle's site for gpucert's own dependencies the node's python3 lacks (httptools, uvloop,
# prometheus-client): session 5's first run stopped at `import httptools`
[[ -f /tmp/devsite/env.sh ]] && source /tmp/devsite/env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; dir=/tmp/gpucert-runs/sampler-cost; rm -rf "$dir"; mkdir -p "$dir" "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
python3 docs/evidence/issue-5-monitor/nvml_cost.py 20 > "$dir/nvml_cost.txt" 2>&1
python3 -m gpucert.cli monitor --duration 12 --interval-ms 100 --out "$dir/idle.npz" --json > "$dir/idle.json"
python3 -m gpucert.cli monitor --duration 22 --interval-ms 100 --out "$dir/nccl.npz" --json > "$dir/nccl.json" &
mon=$!
sleep 2
timeout 19 python3 -m gpucert.cli bench nccl --backend nccl --nproc 2 --ops all_reduce --min-bytes 256M \
  --max-bytes 4G > "$dir/nccl-bench.txt" 2>&1
wait $mon
python3 -m gpucert.cli monitor --duration 8 --interval-ms 20 --out "$dir/fast-20ms.npz" --json > "$dir/fast-20ms.json"
EMULATOR_PROCESSES=8 bash docs/evidence/issue-5-monitor/jitter_under_load.sh 5000 18 > "$dir/jitter_under_load.txt" 2>&1
python3 - "$dir" <<'PY' | tee "$dir/summary.txt"
import json, sys
f = lambda v, spec=".2f": "-" if v is None else format(v, spec)
for name in ("idle", "nccl", "fast-20ms"):
    try:
        d = json.load(open(f"{sys.argv[1]}/{name}.json"))
    except (OSError, ValueError) as exc:
        print(f"{name}: no result ({exc})"); continue
    j, host = d["jitter_ms"], d["sources"]["host"]
    sp = d["counter_spacing_ms"]
    print(f"{name}: {d['samples']} samples at {d['interval_ms']:g} ms, {d['counter_reads']} counter reads "
          f"{f(sp[0], '.0f')}-{f(sp[1], '.0f')} ms apart, "
          f"jitter p50 {f(j['p50'])} p99 {f(j['p99'])} ms, missed {d['missed_ticks']}, "
          f"sampler CPU steady {f(host['sampler_cpu_steady_pct'])} % mean {f(host['sampler_cpu_mean_pct'])} %; notes {d['notes']}")
    for i, g in d["sources"]["nvml"].items():
        print(f"  gpu{i}: util {f(g['util_gpu_mean_pct'], '.0f')}%, power {f(g['power_mean_w'], '.0f')} W, energy {f(g['energy_j'], '.1f')} J, "
              f"nvlink tx/rx {f(g['nvlink_tx_gbps'])}/{f(g['nvlink_rx_gbps'])} GB/s, pcie tx/rx {f(g['pcie_tx_gbps'])}/{f(g['pcie_rx_gbps'])} GB/s")
PY
cat "$dir/nvml_cost.txt"; grep -E "^(monitor|load)" "$dir/jitter_under_load.txt"; grep -iE "busbw|GB/s" "$dir/nccl-bench.txt" | tail -4
tar czf "$OUT/sampler-cost.tgz" -C /tmp/gpucert-runs sampler-cost
