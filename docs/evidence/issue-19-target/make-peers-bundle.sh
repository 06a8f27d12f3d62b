#!/usr/bin/env bash
# Here (no GPU), once: the peers' source for issue 19's side-by-side runs, as one carried file
# (.devbundle/peers.tgz, git-ignored: NVIDIA's code, not ours). The GPU machine reaches no network,
# so nccl-tests and the one CUDA sample come over as source and are built there by run-peers.sh.
#   first: the device tools' `fetch github:NVIDIA/nccl-tests` and `fetch github:NVIDIA/cuda-samples`
#   then:  bash docs/evidence/issue-19-target/make-peers-bundle.sh [MIRROR_ROOT]
# Pinned to the commits the evidence names (a newer one prints its hash instead).
set -euo pipefail
mirrors=${1:-/work/.mirror}
nccl_tests=$mirrors/NVIDIA+nccl-tests/repo
samples=$mirrors/NVIDIA+cuda-samples/repo
out=.devbundle/peers.tgz
stage=$(mktemp -d); trap 'rm -rf "$stage"' EXIT
git -C "$nccl_tests" archive --prefix=nccl-tests/ HEAD | tar -x -C "$stage"
# p2pBandwidthLatencyTest and the four headers it includes (helper_cuda → helper_string,
# helper_timer → exception)
# (file by file: the mirror may lack the big files of other samples, which `git archive` trips on)
for path in Common/helper_cuda.h Common/helper_string.h Common/helper_timer.h Common/exception.h \
            Samples/5_Domain_Specific/p2pBandwidthLatencyTest/p2pBandwidthLatencyTest.cu; do
  mkdir -p "$stage/cuda-samples/$(dirname "$path")"
  git -C "$samples" show "HEAD:$path" > "$stage/cuda-samples/$path"
done
{ echo "nccl-tests $(git -C "$nccl_tests" rev-parse HEAD)"
  echo "cuda-samples $(git -C "$samples" rev-parse HEAD)"; } > "$stage/PEERS"
mkdir -p .devbundle && tar -czf "$out" -C "$stage" .
cat "$stage/PEERS"; ls -l "$out"
