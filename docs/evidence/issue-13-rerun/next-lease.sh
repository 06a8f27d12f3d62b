#!/usr/bin/env bash
# Issue 13 item 11, the rest, on the next lent one-GPU H200 (from the repo root, after the vLLM
# bundle is staged; start it with device-bg.sh so it outlives one call):
#   BASELINES_DIR=$PWD/baselines bash docs/evidence/device-bg.sh start lease bash docs/evidence/issue-13-rerun/next-lease.sh
# A plain rerun means the same GPU: a swapped GPU fails the stack check's drift_critical by design.
#  - the lease's GPU is the one baselines/1xH200/ was built on: two more plain reruns (c4, c5),
#    which with session 7's c1 make the three;
#  - another GPU: a fresh two-run baseline of it (n1, n2, in /tmp/gpucert-baselines-<uuid>) and
#    the first plain rerun against it (n3); the next lease of that GPU adds the other two.
# ~7.5 min a run: the first case fits one session's 30 min, the second just does.
set -uo pipefail
uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1 | tr -d ' ')
stack=${BASELINES_DIR:-$PWD/baselines}/1xH200/stack.json
here=$(dirname "$0")
if [[ -n $uuid ]] && grep -q "\"$uuid\"" "$stack"; then
  echo "lease GPU $uuid is the baseline's: plain reruns c4, c5"
  for name in c4 c5; do bash "$here/run-rerun.sh" certify "$name"; done
else
  echo "lease GPU $uuid is not the baseline's ($(grep -o 'GPU-[0-9a-f-]*' "$stack" | head -1)): a baseline of this GPU, then a rerun"
  export BASELINES_DIR=/tmp/gpucert-baselines-$uuid
  bash "$here/run-rerun.sh" update n1
  bash "$here/run-rerun.sh" update n2
  bash "$here/run-rerun.sh" certify n3
fi
