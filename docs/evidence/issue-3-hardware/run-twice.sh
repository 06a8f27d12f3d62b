#!/usr/bin/env bash
# Issue 3 evidence, on a lent GPU node from the repo root: `pytest -m hardware` with the shipped
# defaults twice — first taking the node's baselines, then a plain rerun judged against them — and
# the NCCL sweep by hand (nccl-tests layout) for the 4 GiB all-reduce figure.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
for run in update rerun; do
  flag=""; [ "$run" = update ] && flag="--update-baselines"
  start=$(date +%s)
  python3 -m pytest -m hardware -p no:cacheprovider -q -rfE $flag --report-dir="$OUT/$run" > "$OUT/$run.log" 2>&1
  rc=$?
  echo "== pytest -m hardware $flag: exit $rc in $(( $(date +%s) - start )) s" | tee -a "$OUT/$run.log"
  grep -E "^(FAILED|ERROR)" "$OUT/$run.log" | cut -c1-300 | head -20
  sed -n '/= gpucert =/,$p' "$OUT/$run.log" | grep -E "^profile|checks:" | head -3
  rm -rf "$OUT/$run/candidate-baselines"
done
gpucert bench nccl --backend nccl --nproc 2 --ops all_reduce,all_gather,sendrecv --min-bytes 8 --max-bytes 8G > "$OUT/bench-nccl.txt" 2>&1
grep -E "^ +(8|1024|1048576|4294967296|8589934592) " "$OUT/bench-nccl.txt"
tar czf "$OUT/baselines.tgz" baselines
