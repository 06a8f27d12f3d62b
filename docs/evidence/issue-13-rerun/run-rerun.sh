#!/usr/bin/env bash
# Issue 13 item 11 on the lent one-GPU H200 (from the repo root, after the vLLM bundle is staged):
# a plain rerun passes, a planted slowdown fails. Steps, each one gpucert run as the README gives it:
#   run-rerun.sh update NAME     make update-baselines (a separate engine start: one more run in the
#                                baseline's between-run noise)
#   run-rerun.sh certify NAME    make certify against those baselines (a plain rerun)
#   run-rerun.sh planted NAME    make certify while a second process runs bf16 GEMMs on the same GPU
#                                (a slower node; clocks and power limits untouched)
# Baselines go to $BASELINES_DIR (/tmp/gpucert-baselines; the profile's folder comes back in $OUT as NAME.tgz,
# with the card, metrics.json.gz and the logs). TP is the node's GPU count (1 on the lent H200).
set -uo pipefail
[[ -f /tmp/devsite/env.sh ]] && source /tmp/devsite/env.sh
export PYTHONUNBUFFERED=1
mode=$1; name=$2
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
gpus=$(nvidia-smi -L | wc -l)
# outside the checkout: a later device call re-lays the working tree
baselines=${BASELINES_DIR:-/tmp/gpucert-baselines}
args="-p no:cacheprovider --engine-opt tensor_parallel_size=$gpus --baselines-dir=$baselines"
report=reports/$name; rm -rf "$report"
hog=
if [[ $mode == planted ]]; then
  # the planted slowdown: another tenant's GEMMs on the same GPU for the whole run
  python3 - <<'PY' > /tmp/hog.log 2>&1 &
import torch, time
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16); b = torch.randn_like(a)
end = time.time() + 1500
while time.time() < end:
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
PY
  hog=$!; sleep 5
fi
start=$(date +%s)
case $mode in
  update) make update-baselines PYTHON=python3 ARGS="$args --report-dir $report" > /tmp/$name.log 2>&1; rc=$? ;;
  certify|planted) make certify PYTHON=python3 ARGS="$args" > /tmp/$name.log 2>&1; rc=$?
                   rm -rf "$report"; mv reports/latest "$report" ;;
  *) echo "usage: run-rerun.sh update|certify|planted NAME"; exit 2 ;;
esac
[[ -n $hog ]] && kill "$hog" 2>/dev/null
echo "$name ($mode): exit $rc in $(( $(date +%s) - start )) s"
grep -E "^gpucert|^(FAILED|ERROR)" /tmp/$name.log | cut -c1-220 | tail -25
bash "$(dirname "$0")/pack-run.sh" "$name" "$report" "$baselines" "/tmp/$name.log"
