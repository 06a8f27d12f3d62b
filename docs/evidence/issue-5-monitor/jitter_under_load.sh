#!/usr/bin/env bash
# Issue 5 reach, jitter and CPU: `gpucert monitor` at 100 ms while the load generator streams
# N concurrent requests from an emulator on the same host (no GPU needed; on a GPU host NVML is
# sampled too). usage: jitter_under_load.sh [STREAMS] [SECONDS]   (repo root; gpucert installed)
set -uo pipefail
streams=${1:-1000}; seconds=${2:-30}; port=18955
out=$(mktemp -d)
python3 -m gpucert.cli emulator --port $port --ttft-ms 0 --itl-ms 40 --processes "${EMULATOR_PROCESSES:-1}" 2>/dev/null &
emu=$!
trap 'kill $emu 2>/dev/null' EXIT
sleep 2
python3 -m gpucert.cli monitor --duration "$seconds" --interval-ms 100 --out "$out/monitor.npz" \
  --vllm-metrics "http://127.0.0.1:$port/metrics" --json > "$out/monitor.json" &
mon=$!
sleep 1
python3 -m gpucert.cli loadgen --base-url "http://127.0.0.1:$port/v1" --model m --concurrency "$streams" \
  --duration $((seconds - 3)) --input-len 16 --output-len 256 --token-ids --ramp-up 2 --json > "$out/load.json"
wait $mon
python3 - "$out" "$streams" <<'PY'
import json, sys
mon = json.load(open(f"{sys.argv[1]}/monitor.json"))
load = json.load(open(f"{sys.argv[1]}/load.json"))
j, host, vllm = mon["jitter_ms"], mon["sources"]["host"], mon["sources"]["vllm"]
print(f"monitor: {mon['samples']} samples at {mon['interval_ms']:g} ms, jitter p50 {j['p50']:.2f} / p99 {j['p99']:.2f} / max {j['max']:.2f} ms, "
      f"missed {mon['missed_ticks']}, sampler CPU {host['sampler_cpu_steady_pct']:.2f} % of one core; host CPU busy {host['cpu_busy_mean_pct']:.0f} %")
print(f"vLLM-style /metrics from the emulator: running peak {vllm.get('running_peak')}")
print(f"load: {sys.argv[2]} streams, {load['summary']['completed']} requests, {load['summary']['output_tokens_per_s']:,.0f} tok/s, "
      f"client CPU {load['client']['cpu_fraction']:.0%}; notes: {mon['notes']}")
PY
