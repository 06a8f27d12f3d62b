#!/usr/bin/env bash
# Issue 13 item 11 (and issue 14's H200 transcript) on the next lent one-GPU H200, from the repo
# root after the vLLM bundle is staged; start it with device-bg.sh so it outlives one call:
#   bash docs/evidence/device-bg.sh start lease bash docs/evidence/issue-13-rerun/next-lease.sh
# A plain rerun means the same GPU: a swapped GPU fails the stack check's drift_critical by design,
# and each lease so far gave another H200. Where this GPU has a baseline from two separate runs,
# three plain reruns against it (the first is issue 14's fresh copy running `make certify` with no
# arguments, h200-fresh.sh; the others run-rerun.sh's):
#  - GPU-9f7d556a… baselines/1xH200/ (u1 + u2; c1 passed): c4 (fresh), c5, c6;
#  - a GPU with n-baselines-<first 4 hex of its UUID>.tgz here (H200 adb9: n1 + n2; H200 fdc8:
#    n1 + n2f; H100 965a: n1 + n2 of session 21):
#    <hex>/r1 (fresh), <hex>/r2, <hex>/r3;
#  - another GPU: its own two-run baseline (n1, n2 in /tmp/gpucert-baselines-<uuid>, back in each
#    tgz), then the first plain rerun against it (n3, fresh).
# ~8-10 min a run (the first of a lease the longest: cold compile caches): three fill one session's
# 30 device minutes; each run's files come back as it ends.
set -uo pipefail
uuid=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1 | tr -d ' ')
hex=${uuid#GPU-}; hex=${hex:0:4}
here=$(dirname "$0")
fresh=docs/evidence/issue-14-newcomer/h200-fresh.sh
saved=$here/n-baselines-$hex.tgz
if [[ -n $uuid ]] && grep -q "\"$uuid\"" baselines/1xH200/stack.json; then
  echo "lease GPU $uuid has the committed baseline: plain reruns c4 (fresh copy), c5, c6"
  bash "$fresh" c4
  export BASELINES_DIR=$PWD/baselines
  for name in c5 c6; do bash "$here/run-rerun.sh" certify "$name"; done
elif [[ -n $uuid ]] && [[ -f $saved ]] && tar xzf "$saved" -O --wildcards 'baselines/*/stack.json' | grep -q "\"$uuid\""; then
  echo "lease GPU $uuid has the two-run baseline $saved: plain reruns r1 (fresh copy), r2, r3"
  export BASELINES_DIR=/tmp/gpucert-baselines-$uuid
  rm -rf "$BASELINES_DIR" && mkdir -p "$BASELINES_DIR" && tar xzf "$saved" -C "$BASELINES_DIR" --strip-components=1
  bash "$fresh" "$hex-r1" "$BASELINES_DIR"
  for name in r2 r3; do bash "$here/run-rerun.sh" certify "$hex-$name"; done
else
  echo "lease GPU $uuid has no baseline here: a baseline of this GPU, then a rerun (fresh copy)"
  export BASELINES_DIR=/tmp/gpucert-baselines-$uuid
  bash "$here/run-rerun.sh" update n1
  bash "$here/run-rerun.sh" update n2
  bash "$fresh" n3 "$BASELINES_DIR"
fi
