#!/usr/bin/env bash
# Issue 13 item 11, the rest, on the next lent one-GPU H200 (from the repo root, after the vLLM
# bundle is staged; start it with device-bg.sh so it outlives one call):
#   bash docs/evidence/device-bg.sh start lease bash docs/evidence/issue-13-rerun/next-lease.sh
# A plain rerun means the same GPU: a swapped GPU fails the stack check's drift_critical by design.
# Two GPUs have a two-run baseline here; on either, two more plain reruns complete the three:
#  - GPU-9f7d556a… (baselines/1xH200/, u1 + u2; c1 passed): certify c4, c5;
#  - GPU-adb9b684… (n-baselines-adb9.tgz, n1 + n2; n3 passes re-judged): certify n4, n5;
#  - another GPU: its own two-run baseline (n1, n2 in /tmp/gpucert-baselines-<uuid>, back in each
#    tgz) and the first plain rerun against it (n3).
# ~9 min a run (the first of a lease ~10: cold compile caches): two fit one session's 30 min.
set -uo pipefail
uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1 | tr -d ' ')
here=$(dirname "$0")
if [[ -n $uuid ]] && grep -q "\"$uuid\"" baselines/1xH200/stack.json; then
  echo "lease GPU $uuid has the committed baseline: plain reruns c4, c5"
  export BASELINES_DIR=$PWD/baselines
  for name in c4 c5; do bash "$here/run-rerun.sh" certify "$name"; done
elif [[ -n $uuid ]] && tar xzf "$here/n-baselines-adb9.tgz" -O baselines/1xH200/stack.json | grep -q "\"$uuid\""; then
  echo "lease GPU $uuid has the n1 + n2 baseline: plain reruns n4, n5"
  export BASELINES_DIR=/tmp/gpucert-baselines-$uuid
  rm -rf "$BASELINES_DIR" && mkdir -p "$BASELINES_DIR" && tar xzf "$here/n-baselines-adb9.tgz" -C "$BASELINES_DIR" --strip-components=1
  for name in n4 n5; do bash "$here/run-rerun.sh" certify "$name"; done
else
  echo "lease GPU $uuid has no baseline here: a baseline of this GPU, then a rerun"
  export BASELINES_DIR=/tmp/gpucert-baselines-$uuid
  bash "$here/run-rerun.sh" update n1
  bash "$here/run-rerun.sh" update n2
  bash "$here/run-rerun.sh" certify n3
fi
