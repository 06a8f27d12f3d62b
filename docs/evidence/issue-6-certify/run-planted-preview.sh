#!/usr/bin/env bash
# Issue 6 preview (session 5, before its noise-aware verdicts): on the lent 2-GPU node, how the
# existing judge treats a plain rerun of `pytest -m hardware` and the planted regression (the NCCL
# sweep with NCCL_P2P_DISABLE=1), against the committed baselines. Each run's card goes to $OUT.
set -uo pipefail
[[ -f /tmp/devsite/env.sh ]] && source /tmp/devsite/env.sh  # gpucert's dependencies the node lacks (httptools)
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; dir=/tmp/gpucert-runs/planted; rm -rf "$dir"; mkdir -p "$dir" "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
one() {  # NAME [env assignments …] -- pytest args …
  local name=$1; shift; local envs=(); while [[ $1 != -- ]]; do envs+=("$1"); shift; done; shift
  local start=$(date +%s)
  env "${envs[@]}" python3 -m pytest -m hardware -p no:cacheprovider -q -rfEs --report-dir="$dir/$name" "$@" \
    > "$dir/$name.log" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - start )) s; $(tail -1 "$dir/$name.log")"
  grep -E "^FAILED" "$dir/$name.log" | cut -c1-260 | head -12
}
one plain-all X=1 -- 
one plain-nccl X=1 -- -k nccl
one p2p-disabled NCCL_P2P_DISABLE=1 -- -k nccl
tar czf "$OUT/planted-preview.tgz" -C /tmp/gpucert-runs planted
