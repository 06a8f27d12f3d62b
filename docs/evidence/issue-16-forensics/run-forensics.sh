#!/usr/bin/env bash
# Issue 16 on the lent one-GPU H200, from the repo root after the vLLM bundle is staged; start it
# with docs/evidence/device-bg.sh so it outlives one call:
#   bash docs/evidence/device-bg.sh start forensics bash docs/evidence/issue-16-forensics/run-forensics.sh
# `make forensics` as the README gives it (the packaged plan: CUDA graphs and enforce_eager, served
# at concurrency 256, offline 256 and 1,024 prompts; ~12 min), then `gpucert analyze` by hand on
# the traces it took. The report comes back as NAME.tgz (NAME defaults to forensics; traces: the
# smallest kept). Arguments go to pytest: a first run that writes baselines, then a rerun judged
# against them, in one job (the baselines stay in /tmp on the node between the two):
#   bash docs/evidence/device-bg.sh start forensics bash -c 'NAME=forensics-base bash docs/evidence/issue-16-forensics/run-forensics.sh --update-baselines; NAME=forensics-rerun bash docs/evidence/issue-16-forensics/run-forensics.sh -k default-c256'
set -uo pipefail
source docs/evidence/device-env.sh
name=${NAME:-forensics}
report=reports/$name; rm -rf "$report"
log=/tmp/$name.log
start=$(date +%s)
make forensics PYTHON=python3 ARGS="--report-dir=$report --baselines-dir=/tmp/gpucert-forensics-baselines $*" > "$log" 2>&1
rc=$?
echo "$name: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$log"
grep -E "^gpucert|passed|failed" "$log" | tail -5
for trace in "$report"/forensics/traces/*/*.pt.trace.json*; do
  [[ -f $trace ]] || continue
  ls -la "$trace" >> "$log"
  { time python3 -m gpucert.cli analyze --json "$trace" > "$trace.analysis.json"; } 2>> "$log"
done
cp "$log" "$report/make.log" 2>/dev/null
# the short table, last: per check what was judged beside what it stands on
python3 - "$report/metrics.json" <<'PY' | tee -a "$report/make.log"
import json, sys
try:
    checks = json.load(open(sys.argv[1]))["checks"]
except (OSError, ValueError) as exc:
    sys.exit(f"no metrics.json: {exc}")
cols = ("unprofiled_output_tok_s", "profiled_output_tok_s", "decode_step_ms_p50", "host_bound_pct",
        "unprofiled_engine_itl_ms", "profiler_step_cost_pct", "window_batch_pct",
        "unprofiled_gpu_idle_pct", "unprofiled_below_batch_pct")
print("check | outcome | " + " | ".join(cols) + " | windows' decode steps")
for c in checks:
    mine = [m for m in c.get("metrics", []) if not (m.get("params") or {}).get("gpu")]
    v = {m["metric"]: m["value"] for m in mine}
    steps = next((m.get("samples") or [] for m in mine if m["metric"] == "decode_step_ms_p50"), [])
    print(f"{c['check_id']} | {c['outcome']}/{c.get('verdict')} | "
          + " | ".join("-" if v.get(k) is None else f"{v[k]:,.1f}" for k in cols)
          + " | " + (", ".join(f"{s:.2f}" for s in steps) or "-"))
PY
gzip -f "$report/metrics.json" "$report"/forensics/engine/*/*.log 2>/dev/null
rm -rf "$report"/forensics/engine/*/models "$report"/forensics/offline-*/models
# one trace of each kind comes back (the smallest); the rest stay on the node
keep=$(ls -S "$report"/forensics/traces/*/*.pt.trace.json.gz 2>/dev/null | tail -1)
find "$report"/forensics/traces -name '*.pt.trace.json.gz' ! -path "$keep" -delete
tar czf "$OUT/$name.tgz" "$report"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after: gpu /'
