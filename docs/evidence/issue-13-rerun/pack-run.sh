#!/usr/bin/env bash
# Packs one finished run for the trip back (from the checkout it ran in):
#   pack-run.sh NAME REPORT_DIR BASELINES_DIR LOG
# summary.txt (summarize.py), metrics.json and engine logs gzipped, the profile's baselines as the run
# left them, all as $OUT/NAME.tgz; the engine's downloaded model configs are dropped (size).
set -uo pipefail
name=$1; report=$2; baselines=$3; log=$4
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
here=$(dirname "$0")
cp "$log" "$report/make.log" 2>/dev/null
python3 "$here/summarize.py" "$report/metrics.json" | tee "$report/summary.txt"
profile=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['profile'])" "$report/metrics.json")
gzip -f "$report/metrics.json" "$report"/engine/*.log 2>/dev/null
rm -rf "$report"/engine/models "$report"/offline/models "$report/offline/offline-config.json"
mkdir -p "$report/baselines" && cp -r "$baselines/$profile" "$report/baselines/"
tar czf "$OUT/$name.tgz" "$report"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after: gpu /'
