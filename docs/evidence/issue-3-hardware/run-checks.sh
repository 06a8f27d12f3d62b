#!/usr/bin/env bash
# Issue 3 evidence, part 1, on a lent GPU node from the repo root:
# `pytest -m hardware` with the shipped defaults, timed, taking the first baselines of the node.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
start=$(date +%s)
python3 -m pytest -m hardware -p no:cacheprovider -q -rfEs --report-dir="$OUT/card" "$@" > "$OUT/hardware.log" 2>&1
rc=$?
echo "pytest -m hardware $*: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$OUT/hardware.log"
grep -E "^(FAILED|ERROR|SKIPPED)" "$OUT/hardware.log" | cut -c1-330 | head -40
sed -n '/= gpucert =/,$p' "$OUT/hardware.log" | grep -v "^  " | head -12
tar czf "$OUT/baselines.tgz" baselines
