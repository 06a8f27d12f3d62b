#!/usr/bin/env bash
# Issue 4 reach of the client, on a many-core host (the lent GPU node; no GPU used), repo root:
# a zero-TTFT, zero-ITL emulator on half the cores (one server process per core, one port), the
# load generator on the other half; 256-token streams; raw JSON per run under $OUT/reach.
set -uo pipefail
source /tmp/devsite/env.sh 2>/dev/null || true
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; dir=/tmp/gpucert-runs/reach; rm -rf "$dir"; mkdir -p "$dir"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
cores=$(nproc); half=$((cores / 2))
port=18811
taskset -c "$half-$((cores - 1))" python3 -m gpucert.cli emulator --port $port --ttft-ms 0 --itl-ms 0 \
  --processes "$half" 2>"$dir/emulator.log" &
emu=$!
trap 'kill $emu 2>/dev/null; wait $emu 2>/dev/null' EXIT
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1)
        break
    except OSError:
        time.sleep(0.1)
PY
echo "host: $cores cores; emulator: $half processes on cores $half-$((cores - 1)); client on cores 0-$((half - 1))"
# workers  concurrency  requests
for spec in "1 5000 5000" "1 5000 10000" "auto 5000 10000" "auto 10000 10000"; do
  read -r workers conc n <<<"$spec"
  name="w${workers}_c${conc}_n${n}"
  timeout 300 taskset -c "0-$((half - 1))" python3 -m gpucert.cli loadgen --base-url "http://127.0.0.1:$port/v1" \
    --model m --concurrency "$conc" --num-requests "$n" --input-len 16 --output-len 256 --token-ids \
    --workers "$workers" --json > "$dir/$name.json" 2>"$dir/$name.err"
  echo "$name exit $?"
done
python3 - "$dir" <<'PY'
import json, pathlib, sys
print(f"{'run':<22}{'done/failed':>14}{'wall s':>8}{'out tok/s':>11}{'TTFT p50':>10}{'ITL mean':>10}{'lag p99':>9}{'lag max':>9}{'cpu':>6}")
for path in sorted(pathlib.Path(sys.argv[1]).glob("w*.json")):
    try:
        d = json.loads(path.read_text())
    except ValueError:
        print(f"{path.stem:<22} no JSON"); continue
    s, c = d["summary"], d["client"]
    cpu = c.get("cpu_fraction")
    def num(v, spec):
        return "-" if v is None else format(v, spec)
    print(f"{path.stem:<22}{s['completed']:>8}/{s['failed']:<5}{s['duration_s']:>8.2f}{s['output_tokens_per_s']:>11,.0f}"
          f"{num(s['ttft_ms']['p50'], '.1f'):>10}{num(s['itl_ms']['mean'], '.3f'):>10}{num(c['loop_lag_ms']['p99'], '.1f'):>9}"
          f"{num(c['loop_lag_ms']['max'], '.1f'):>9}{num(cpu, '.2f'):>6}")
PY
tar czf "$OUT/reach.tgz" -C "$(dirname "$dir")" reach
