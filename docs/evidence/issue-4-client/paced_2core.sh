#!/usr/bin/env bash
# Issue 4 client reach, paced form, on a 2-core box (repo root; the dev venv's python on PATH):
# the emulator pinned to core 1, one client process pinned to core 0; 5,000 streams × 256 tokens at
# 12.5 tok/s each (62.5k tok/s offered once all are up), started over 5 s. K tokens per chunk at
# ITL 80·K ms (vLLM too sends several tokens a chunk under load; each counts as a token).
#   bash docs/evidence/issue-4-client/paced_2core.sh [K ...]   → paced_2core_k<K>.json, a table (K: 4 2 1)
set -uo pipefail
here=$(dirname "$0"); port=18998
ks=${*:-4 2 1}
[[ -n ${TABLE_ONLY:-} ]] && ks=""  # TABLE_ONLY=1: the table of the JSON already there
for k in $ks; do
  taskset -c 1 python -m gpucert.cli emulator --port $port --ttft-ms 0 --itl-ms $((80 * k)) --tokens-per-chunk "$k" \
    >/dev/null 2>&1 &
  emu=$!; sleep 2
  taskset -c 0 python -m gpucert.cli loadgen --base-url http://127.0.0.1:$port/v1 --model m --concurrency 5000 \
    --num-requests 5000 --ramp-up 5 --input-len 16 --output-len 256 --token-ids --workers 1 --json \
    > "$here/paced_2core_k$k.json" 2>/dev/null
  kill $emu; wait $emu 2>/dev/null
done
python - "$here" <<'PY'
import json, pathlib, sys
print(f"{'K':>2} {'done/failed':>12} {'wall s':>7} {'tok/s (run)':>12} {'peak tok/s':>11} {'in flight':>10} {'ITL mean':>9} {'TPOT mean':>10} {'TTFT p50':>9} {'lag p99':>8} {'lag max':>8} {'client CPU':>11}")
for path in sorted(pathlib.Path(sys.argv[1]).glob("paced_2core_k*.json")):
    d = json.loads(path.read_text()); s, c = d["summary"], d["client"]
    k = int(path.stem.rsplit("k", 1)[1])
    # tok/s (run): over the whole run, ramp and tail included; peak: the busiest second (62,500 offered once all are up)
    print(f"{k:>2} {s['completed']:>6}/{s['failed']:<5} {s['duration_s']:>7.1f} {s['output_tokens_per_s']:>12,.0f} {s['peak_output_tokens_per_s']:>11,.0f}"
          f" {s['peak_in_flight']:>10,} {s['itl_ms']['mean']:>9.2f} {s['tpot_ms']['mean']:>10.2f} {s['ttft_ms']['p50']:>9.2f} {c['loop_lag_ms']['p99']:>8.2f}"
          f" {c['loop_lag_ms']['max']:>8.1f} {c['cpu_fraction']:>10.0%}")
PY
