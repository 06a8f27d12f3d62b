#!/usr/bin/env bash
# Issue 5 on the lent GPU node (repo root; NVML real): the monitor idle, then while GEMMs run on
# both GPUs, then the client/emulator jitter run; JSON and the sample files under $OUT/monitor.tgz.
# (The vLLM-under-load figures come from `pytest -m inference`, whose card carries the monitor.)
set -uo pipefail
source /tmp/devsite/env.sh 2>/dev/null || true
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; dir=/tmp/gpucert-runs/monitor; rm -rf "$dir"; mkdir -p "$dir"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
python3 -m gpucert.cli monitor --duration 10 --interval-ms 100 --out "$dir/idle.npz" --json > "$dir/idle.json"
python3 -m gpucert.cli monitor --duration 40 --interval-ms 100 --out "$dir/gemm.npz" --json > "$dir/gemm.json" &
mon=$!
sleep 3
for gpu in 0 1; do
  CUDA_VISIBLE_DEVICES=$gpu timeout 35 python3 -m gpucert.cli bench gemm --device cuda --dtype bf16 --shapes square \
    > "$dir/gemm-gpu$gpu.txt" 2>&1 &
done
wait $mon
# NVLink counters: all_reduce over both GPUs while the monitor runs (NCCL moves data over NVLink)
python3 -m gpucert.cli monitor --duration 25 --interval-ms 100 --out "$dir/nccl.npz" --json > "$dir/nccl.json" &
mon=$!
sleep 2
timeout 22 python3 -m gpucert.cli bench nccl --backend nccl --nproc 2 --ops all_reduce --min-bytes 256M \
  --max-bytes 4G > "$dir/nccl-bench.txt" 2>&1
wait $mon
python3 -m gpucert.cli monitor --duration 5 --interval-ms 20 --json > "$dir/fast-20ms.json"
EMULATOR_PROCESSES=8 bash docs/evidence/issue-5-monitor/jitter_under_load.sh 5000 30 > "$dir/jitter_under_load.txt" 2>&1
python3 - "$dir" <<'PY'
import json, sys
def f(value, spec=".1f"):
    return "-" if value is None else format(value, spec)
for name in ("idle", "gemm", "nccl", "fast-20ms"):
    try:
        d = json.load(open(f"{sys.argv[1]}/{name}.json"))
    except (OSError, ValueError) as exc:
        print(f"{name}: no result ({exc})"); continue
    j, host = d["jitter_ms"], d["sources"]["host"]
    print(f"{name}: {d['samples']} samples at {d['interval_ms']:g} ms, jitter p50 {f(j['p50'], '.2f')} p99 {f(j['p99'], '.2f')} ms, "
          f"missed {d['missed_ticks']}, sampler CPU {f(host['sampler_cpu_steady_pct'], '.2f')} %; notes {d['notes']}")
    for i, g in d["sources"]["nvml"].items():
        print(f"  gpu{i}: util {f(g['util_gpu_mean_pct'], '.0f')}% peak {f(g['util_gpu_peak_pct'], '.0f')}%, mem {f(g['mem_used_peak_gib'])} GiB, "
              f"power {f(g['power_mean_w'], '.0f')} W peak {f(g['power_peak_w'], '.0f')}, energy {f(g['energy_j'])} J, temp {f(g['temp_peak_c'], '.0f')} C, "
              f"sm clock min {f(g['sm_clock_min_mhz'], '.0f')}, slowdowns {g['slowdown_reasons']}, nvlink tx/rx {f(g['nvlink_tx_gbps'])}/{f(g['nvlink_rx_gbps'])} GB/s, "
              f"pcie tx/rx {f(g['pcie_tx_gbps'], '.2f')}/{f(g['pcie_rx_gbps'], '.2f')} GB/s")
PY
cat "$dir/jitter_under_load.txt"
tar czf "$OUT/monitor.tgz" -C "$(dirname "$dir")" monitor
