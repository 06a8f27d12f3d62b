#!/usr/bin/env bash
# Issue 4 reach of the client, on a many-core host (the lent GPU node; no GPU used), repo root.
# The emulator runs on the upper half of the cores (one server process per core, one port), the
# load generator on the lower half; 256-token streams, token ids; raw JSON per run under
# $OUT/reach.tgz, a table last.
#   capacity: zero TTFT, zero ITL — the client reads as fast as it can (how much one process takes)
#   paced:    ITL 80 ms — 5,000 streams × 12.5 tok/s = 62.5k tok/s offered: does one client process
#             take it with its event loop responsive (lag p99 <= 5 ms)? with and without a ramp
#   oracle:   the self-test's c=256 oracle on a quiet many-core host: each TTFT split into server
#             queueing, emulator lateness and the client's error against the server's write times
set -uo pipefail
source /tmp/devsite/env.sh 2>/dev/null || true
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; dir=/tmp/gpucert-runs/reach; rm -rf "$dir"; mkdir -p "$dir"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
cores=$(nproc); half=$((cores / 2)); port=18811
python3 -c "import uvloop, sys; print('uvloop', uvloop.__version__, 'python', sys.version.split()[0])" 2>&1
echo "host: $cores cores; emulator: $half processes on cores $half-$((cores - 1)); client on cores 0-$((half - 1))"

emulator() {  # ITL_MS [TTFT_MS [TOKENS_PER_CHUNK]]
  taskset -c "$half-$((cores - 1))" python3 -m gpucert.cli emulator --port $port --ttft-ms "${2:-0}" --itl-ms "$1" \
    --tokens-per-chunk "${3:-1}" --processes "$half" 2>>"$dir/emulator.log" &
  emu=$!
  python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
PY
}
stop_emulator() { kill "$emu" 2>/dev/null; wait "$emu" 2>/dev/null; }
trap stop_emulator EXIT

load() {  # NAME WORKERS CONCURRENCY REQUESTS RAMP_S [WARMUP]
  timeout 240 taskset -c "0-$((half - 1))" python3 -m gpucert.cli loadgen --base-url "http://127.0.0.1:$port/v1" \
    --model m --concurrency "$3" --num-requests "$4" --ramp-up "$5" --warmup "${6:-0}" --input-len 16 --output-len 256 --token-ids \
    --workers "$2" --json > "$dir/$1.json" 2>"$dir/$1.err"
  echo "$1 exit $?"
}

emulator 0
load capacity_w1_c5000 1 5000 5000 0
load capacity_wauto_c5000 auto 5000 10000 0
load capacity_wauto_c10000 auto 10000 10000 0
stop_emulator
emulator 80
load paced_w1_c5000_burst 1 5000 5000 0
load paced_w1_c5000_ramp5 1 5000 5000 5
load paced_wauto_c5000_ramp5 auto 5000 5000 5
stop_emulator
emulator 320 0 4  # the same 62.5k tok/s in 4-token chunks, as on the 2-core box (paced_2core.sh)
load paced_k4_w1_c5000_ramp5 1 5000 5000 5
stop_emulator
python3 docs/evidence/issue-4-client/oracle_c256.py > "$dir/oracle_c256.txt" 2>&1; cat "$dir/oracle_c256.txt"

python3 - "$dir" <<'PY'
import json, pathlib, sys
def num(v, spec):
    return "-" if v is None else format(v, spec)
print(f"{'run':<28}{'done/failed':>13}{'wall s':>8}{'out tok/s':>11}{'TTFT p50':>10}{'TPOT mean':>10}{'ITL mean':>10}{'lag p99':>9}{'lag max':>9}{'cpu':>6}{'procs':>6}")
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    try:
        d = json.loads(path.read_text())
    except ValueError:
        print(f"{path.stem:<28} no JSON"); continue
    s, c = d["summary"], d["client"]
    print(f"{path.stem:<28}{s['completed']:>7}/{s['failed']:<5}{s['duration_s']:>8.2f}{s['output_tokens_per_s']:>11,.0f}"
          f"{num(s['ttft_ms']['p50'], '.2f'):>10}{num(s['tpot_ms']['mean'], '.3f'):>10}{num(s['itl_ms']['mean'], '.3f'):>10}{num(c['loop_lag_ms']['p99'], '.1f'):>9}"
          f"{num(c['loop_lag_ms']['max'], '.1f'):>9}{num(c.get('cpu_fraction'), '.2f'):>6}{len(c.get('workers') or [1]):>6}")
PY
tar czf "$OUT/reach.tgz" -C "$(dirname "$dir")" reach
