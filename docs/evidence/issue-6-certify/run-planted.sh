#!/usr/bin/env bash
# Issue 6 reach, part 2, on the lent 2-GPU node (from the repo root): the planted regression.
# On one machine: the NCCL sweep taken as the baseline (--update-baselines into a scratch folder),
# rerun plainly (must not be flagged), rerun with NCCL_P2P_DISABLE=1 (must be flagged). A baseline
# from the same machine: a lent node is another host each session (session 5's plain rerun
# against the committed baselines saw other GPU UUIDs and another host's pageable copies).
set -uo pipefail
[[ -f /tmp/devsite/env.sh ]] && source /tmp/devsite/env.sh  # gpucert's dependencies the node lacks
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; dir=/tmp/gpucert-runs/planted; rm -rf "$dir"; mkdir -p "$dir" "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
one() {  # NAME [VAR=value …] -- pytest args …
  local name=$1; shift; local envs=(); while [[ $1 != -- ]]; do envs+=("$1"); shift; done; shift
  local start=$(date +%s)
  env "${envs[@]}" python3 -m pytest -m hardware -k nccl -p no:cacheprovider -q -rfEs \
    --baselines-dir "$dir/baselines" --report-dir "$dir/$name" "$@" > "$dir/$name.log" 2>&1
  echo "$name: exit $? in $(( $(date +%s) - start )) s; $(tail -1 "$dir/$name.log")"
  python3 - "$dir/$name/metrics.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  verdict {d['verdict']}, checks {d['counts']}, metrics {d['metric_counts']}")
fails = [(m["key"], m["reason"]) for c in d["checks"] for m in c["metrics"] if m.get("verdict") == "fail"]
noise = [m["key"] for c in d["checks"] for m in c["metrics"] if m.get("within_noise")]
print(f"  {len(fails)} metric(s) failed, {len(noise)} beyond tolerance but within noise")
for key, why in fails[:5]:
    print(f"    {key}: {why[:200]}")
PY
}
one baseline X=1 -- --update-baselines
one plain X=1 --
one p2p-disabled NCCL_P2P_DISABLE=1 --
tar czf "$OUT/planted.tgz" -C /tmp/gpucert-runs planted
