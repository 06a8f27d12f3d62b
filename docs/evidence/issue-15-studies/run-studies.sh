#!/usr/bin/env bash
# Issue 15 on the lent one-GPU H200, from the repo root after the vLLM bundle is staged; start it
# with docs/evidence/device-bg.sh so it outlives one call:
#   bash docs/evidence/device-bg.sh start studies bash docs/evidence/issue-15-studies/run-studies.sh [PART [K]]
# PART: batching (batching + tuned: the tuned study chooses from the batching results of the same
# session; 18 min on the H100 in session 22 with 2 starts a side: every point restarts vLLM, 62-67 s
# to healthy there, 94-119 s on the H200 in session 13) | tuned (alone, from the plan's candidates)
# | grid (grid-studies.yaml's batching grid on four API servers, ~15 min) | kv | precision (the real
# model staged first: stage-model.sh) | slo | all (default) | tuned-served (the tuned study's served
# side alone, ~10-13 min, for a short lease: its plan is the main plan's tuned section with
# `offline: false`, derived here so the two never drift apart). K: a pytest
# -k expression in place of the part's own (e.g. 'api1-c256 or api4-c256': two points, 4.5 min in
# session 13). `make study` as the README gives it, with this folder's plan; the report comes
# back as study-PART.tgz. PLAN=FILE runs another plan (issue 19's, for two GPUs).
set -uo pipefail
source docs/evidence/device-env.sh
part=${1:-all}
here=docs/evidence/issue-15-studies
case $part in
  batching) select="-k 'batching or tuned'" ;;  # make hands ARGS to its shell: the quotes hold
  tuned) select="-k tuned" ;;  # alone: the plan's candidates, then default against the best, 3 starts a side
  tuned-served) select="-k tuned"
    derived=/tmp/tuned-served.yaml
    python3 -c 'import sys, yaml
try:
    plan = yaml.safe_load(open(sys.argv[1]))
    yaml.safe_dump({"tuned": dict(plan["tuned"], offline=False)}, open(sys.argv[2], "w"))
except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
    sys.exit(f"run-studies.sh tuned-served: no tuned section to derive from {sys.argv[1]}: {e!r}")' \
      "${PLAN:-$here/h200-studies.yaml}" "$derived" || exit 2
    PLAN=$derived ;;
  grid) select="-k batching"; PLAN=${PLAN:-$here/grid-studies.yaml} ;;
  kv) select="-k kv_capacity" ;;
  precision) select="-k precision" ;;
  slo) select="-k slo_capacity" ;;
  all) select="" ;;
  *) echo "usage: run-studies.sh batching|tuned|tuned-served|grid|kv|precision|slo|all [K]"; exit 2 ;;
esac
[[ -n ${2:-} ]] && select="-k '$2'"
report=reports/study-$part; rm -rf "$report"
log=/tmp/study-$part.log
start=$(date +%s)
make study PYTHON=python3 ARGS="--studies-file=${PLAN:-$here/h200-studies.yaml} --report-dir=$report --baselines-dir=/tmp/gpucert-study-baselines ${select:+$select}" > "$log" 2>&1
rc=$?
echo "study $part: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$log"
grep -E "^gpucert|passed|failed" "$log" | tail -5
cp "$log" "$report/make.log" 2>/dev/null
gzip -f "$report/metrics.json" "$report"/engine/*/*.log 2>/dev/null
rm -rf "$report"/engine/*/models "$report"/engine/offline-*/models
tar czf "$OUT/study-$part.tgz" "$report"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after: gpu /'
