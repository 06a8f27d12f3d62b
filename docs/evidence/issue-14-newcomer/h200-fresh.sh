#!/usr/bin/env bash
# Issue 14's reach on the lent one-GPU H200, from the repo root after the vLLM bundle is staged
# (start it with docs/evidence/device-bg.sh: it outlives one call):
#   bash docs/evidence/device-bg.sh start fresh bash docs/evidence/issue-14-newcomer/h200-fresh.sh [NAME [BASELINES]]
# A fresh copy of the working tree (no .venv, no reports), then `make certify` with no arguments:
# its own venv over the node's CUDA torch and vLLM, tensor_parallel_size auto (→ 1 here), the
# verdict as the last line. BASELINES (a folder of profiles) replaces the copy's committed profile
# of the same name first: a plain rerun of a GPU whose own baseline is not the committed one.
# Also captures `nvidia-smi -q -x` beside `-q` (the XML snapshot's fixture, branch wip/smi-xml).
# The run comes back as NAME.tgz (pack-run.sh), NAME-make-certify.log and the card beside it. ~10 minutes.
set -uo pipefail
[[ -f /tmp/devsite/env.sh ]] && source /tmp/devsite/env.sh
export PYTHONUNBUFFERED=1
name=${1:-fresh}; from=${2:-}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
fresh=/tmp/gpucert-fresh
rm -rf "$fresh" && mkdir -p "$fresh"
tar --exclude=./.venv --exclude=./.devbundle --exclude=./reports --exclude=./.git -cf - . | tar -xf - -C "$fresh"
cd "$fresh" || exit 3
if [[ -n $from ]]; then
  for profile in "$from"/*/; do
    rm -rf "baselines/$(basename "$profile")" && cp -r "$profile" baselines/
    echo "baselines/$(basename "$profile") from $from"
  done
fi
[[ -f $OUT/nvidia-smi-q.xml ]] || { nvidia-smi -q -x > "$OUT/nvidia-smi-q.xml" 2>&1; nvidia-smi -q > "$OUT/nvidia-smi-q.txt" 2>&1; }
# the log is written outside $OUT and copied there at the end: device-bg.sh's wait moves what it
# finds in $OUT, and a log moved mid-run loses the rest of the run's lines
log=/tmp/$name-make-certify.log
start=$(date +%s)
make certify > "$log" 2>&1
rc=$?
echo "make certify: exit $rc in $(( $(date +%s) - start )) s" >> "$log"
if [[ ! -f reports/latest/metrics.json ]] && grep -q "^gpucert setup:" "$log"; then
  # the set-up itself failed on this node (its log says why): still a fresh copy's plain rerun,
  # on the node's Python as it is, so the lease's GPU minutes are not lost
  echo "set-up failed: make certify PYTHON=python3" | tee -a "$log"
  start=$(date +%s)
  PYTHONPATH=$fresh/plugins${PYTHONPATH:+:$PYTHONPATH} make certify PYTHON=python3 > /tmp/$name-fallback.log 2>&1
  rc=$?
  echo "make certify PYTHON=python3: exit $rc in $(( $(date +%s) - start )) s" >> /tmp/$name-fallback.log
  cat /tmp/$name-fallback.log >> "$log"
fi
tail -n 4 "$log"
if [[ -f reports/latest/metrics.json ]]; then
  rm -rf "reports/$name" && mv reports/latest "reports/$name"
  cp "reports/$name/report.html" "$OUT/$name-report.html" 2>/dev/null
  bash docs/evidence/issue-13-rerun/pack-run.sh "$name" "reports/$name" "$fresh/baselines" "$log"
fi
cp "$log" "$OUT/$name-make-certify.log"
