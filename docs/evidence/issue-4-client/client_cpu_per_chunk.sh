#!/usr/bin/env bash
# Issue 4: the load generator's CPU per streamed chunk, this tree against an older revision (the
# aiohttp client before session 4's http_stream.py: 5295ff9), and the floor with no parsing at all
# (floor_no_parse.py). 2-core box: emulator pinned to core 1 (ITL 40 ms, one token per chunk), one
# client process pinned to core 0, 128-token streams for 15 s.   Repo root, dev venv's python:
#   bash docs/evidence/issue-4-client/client_cpu_per_chunk.sh [OLD_REV] > client_cpu_per_chunk.txt
set -uo pipefail
old=${1:-5295ff9}; py=${PYTHON:-python}; port=18977
tree=$(mktemp -d); git worktree add -q "$tree/old" "$old" || exit 3
trap 'git worktree remove --force "$tree/old"' EXIT
run() {  # SRC STREAMS
  taskset -c 1 $py -m gpucert.cli emulator --port $port --ttft-ms 0 --itl-ms 40 --tokens-per-chunk 1 >/dev/null 2>&1 &
  local emu=$!; sleep 2
  PYTHONPATH=$1/plugins taskset -c 0 $py -m gpucert.cli loadgen --base-url http://127.0.0.1:$port/v1 --model m \
    --concurrency "$2" --duration 15 --input-len 16 --output-len 128 --token-ids --ramp-up 2 --workers 1 --json > "$tree/out.json"
  kill $emu; wait $emu 2>/dev/null
  $py - "$tree/out.json" "$3" "$2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); s, c = d["summary"], d["client"]
tok, cpu = s["output_tokens_per_s"], c["cpu_fraction"]
print(f"{sys.argv[2]:<22} {sys.argv[3]:>6} streams: {tok:>8,.0f} tok/s, client CPU {cpu:4.0%}, "
      f"{1e6 * cpu / tok:5.1f} µs CPU per chunk, loop lag p99 {c['loop_lag_ms']['p99']:5.2f} ms, ITL mean {s['itl_ms']['mean']:.2f} ms")
PY
}
for streams in 500 1000; do
  run "$tree/old" $streams "aiohttp ($old)"
  run "$PWD" $streams "http_stream (this tree)"
done
taskset -c 1 $py -m gpucert.cli emulator --port $port --ttft-ms 0 --itl-ms 40 --tokens-per-chunk 1 >/dev/null 2>&1 &
emu=$!; sleep 2
PYTHONPATH=$PWD/plugins taskset -c 0 $py "$(dirname "$0")/floor_no_parse.py" 1000 $port
kill $emu
