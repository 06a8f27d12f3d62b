#!/usr/bin/env bash
# Issue 4 evidence on the lent 2-GPU node, from the repo root, after the vLLM bundle was staged
# (../shared/device/README.md):  run-inference.sh NAME [pytest args …]
# Runs `pytest -m inference` with the shipped defaults plus the given args under a wall budget
# (SIGINT at BUDGET_S, so a run that must stop still writes its card and stops vLLM), keeps the
# card, the engine log and the baselines it wrote in $OUT/NAME.tgz (the device returns files at
# most two folders down), and prints a short table.
set -uo pipefail
name=$1; shift
budget=${BUDGET_S:-560}
source /tmp/devsite/env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; dir=/tmp/gpucert-runs/$name; rm -rf "$dir"; mkdir -p "$dir"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
echo "pytest -m inference $*" > "$dir/command.txt"
start=$(date +%s)
timeout -s INT -k 40 "$budget" python3 -m pytest -m inference -p no:cacheprovider -q -rfEs \
  --report-dir="$dir/card" "$@" > "$dir/pytest.log" 2>&1
rc=$?
echo "pytest -m inference $*: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$dir/pytest.log"
grep -E "^(FAILED|ERROR|SKIPPED)" "$dir/pytest.log" | cut -c1-300 | head -20
python3 docs/evidence/issue-4-inference/table.py "$dir/card/metrics.json"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after: gpu /' | tee -a "$dir/pytest.log"
cp -r baselines "$dir/baselines"
tar czf "/tmp/$name.tgz" -C "$(dirname "$dir")" "$name"
# the device returns files of at most 16 MiB: a larger archive comes back in parts (cat them)
if (( $(stat -c %s "/tmp/$name.tgz") > 15000000 )); then
  split -b 15000000 -d "/tmp/$name.tgz" "$OUT/$name.tgz.part"
else
  cp "/tmp/$name.tgz" "$OUT/$name.tgz"
fi
