#!/usr/bin/env bash
# Issue 19 item 2 on the lent GPU node (the target: nvidia-h200-x2), from the repo root; no vLLM
# bundle needed. Carry the peers' source and the httptools wheel (the gpucert command imports it):
#   run(command="python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade
#       --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
#       bash docs/evidence/issue-19-target/run-peers.sh", carry=[".devbundle/peers.tgz", ".whl"])
# (.devbundle/peers.tgz: make-peers-bundle.sh, here.) It builds nccl-tests (make MPI=0, against the
# NCCL that the node's torch loads, so both sides run one library) and p2pBandwidthLatencyTest
# (nvcc, sm_90), then on the same GPUs one after the other: all_reduce_perf -g N and gpucert's
# all_reduce sweep over 8 B … 8 GiB (20 timed, 5 warm-up iterations each, float, as nccl-tests
# counts), the sample and `gpucert bench p2p`. compare_peers.py prints the tables; gpucert's busbw
# must reach 97 % of nccl-tests' at ≥ 256 MiB. On one GPU (a rehearsal) the peers build and run,
# gpucert's two sweeps say they need two GPUs, and nothing is compared. ~6 min on two GPUs.
set -uo pipefail
source docs/evidence/device-env.sh
# NVLink multicast stays off (the machine is shared): NCCL's NVLS is what creates multicast
# objects; nccl-tests' multimem paths need -D/-R 2, never given here
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
peers=/tmp/peers; rm -rf "$peers" && mkdir -p "$peers" && tar -xzf .devbundle/peers.tgz -C "$peers" || exit 3
cat "$peers/PEERS"
gpus=$(nvidia-smi -L | wc -l)
max_bytes=${MAX_BYTES:-8G}  # a shorter rehearsal: MAX_BYTES=1G
nvidia-smi topo -m > "$OUT/nvidia-smi-topo.txt" 2>&1

# the NCCL torch loads: its wheel's headers and library, with the unversioned name the linker wants
nccl_h=$(python3 - <<'PY'
import pathlib, site
for root in site.getsitepackages():
    for header in pathlib.Path(root).glob("nvidia/**/include/nccl.h"):
        print(header); raise SystemExit
PY
)
[[ -n $nccl_h ]] || { echo "no nccl.h beside the node's torch"; exit 3; }
home=/tmp/ncclhome; rm -rf "$home" && mkdir -p "$home/lib"
ln -s "$(dirname "$nccl_h")" "$home/include"
lib=$(ls "$(dirname "$nccl_h")"/../lib/libnccl.so.* | head -1)
# both names: the linker's, and the SONAME the binary asks the loader for (else a system NCCL of
# another version could answer)
ln -s "$lib" "$home/lib/libnccl.so" && ln -s "$lib" "$home/lib/libnccl.so.2"
export LD_LIBRARY_PATH=$home/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
python3 -c "import torch; print('torch', torch.__version__, 'NCCL', torch.cuda.nccl.version())"
cuda_home=$(dirname "$(dirname "$(command -v nvcc)")")

start=$(date +%s)
# all_reduce_perf alone: the one binary compared (the other ten would double the build)
build=$peers/nccl-tests/build
make -C "$peers/nccl-tests/src" -j 16 MPI=0 CUDA_HOME="$cuda_home" NCCL_HOME="$home" BUILDDIR="$build" \
  NVCC_GENCODE="-gencode=arch=compute_90,code=sm_90" "$build/all_reduce_perf" > /tmp/nccl-tests-build.log 2>&1 \
  || { tail -20 /tmp/nccl-tests-build.log; exit 3; }
sample=$peers/cuda-samples/Samples/5_Domain_Specific/p2pBandwidthLatencyTest
nvcc -O3 -arch=sm_90 -I "$peers/cuda-samples/Common" -o "$sample/p2p" "$sample/p2pBandwidthLatencyTest.cu" \
  > /tmp/sample-build.log 2>&1 || { tail -20 /tmp/sample-build.log; exit 3; }
echo "built in $(( $(date +%s) - start )) s"; ldd "$build/all_reduce_perf" | grep nccl

start=$(date +%s)
"$build/all_reduce_perf" -b 8 -e "$max_bytes" -f 2 -g "$gpus" -n 20 -w 5 -c 1 \
  -J "$OUT/nccl-tests-all_reduce.json" > "$OUT/nccl-tests-all_reduce.txt" 2>&1
echo "all_reduce_perf -g $gpus: exit $? in $(( $(date +%s) - start )) s"; tail -4 "$OUT/nccl-tests-all_reduce.txt"
start=$(date +%s)
python3 -m gpucert.cli bench nccl --ops all_reduce --min-bytes 8 --max-bytes "$max_bytes" --iters 20 --warmup 5 \
  --json > "$OUT/gpucert-nccl.json" 2> /tmp/gpucert-nccl.log
echo "gpucert bench nccl: exit $? in $(( $(date +%s) - start )) s"; tail -2 /tmp/gpucert-nccl.log
"$sample/p2p" > "$OUT/p2p-sample.txt" 2>&1; echo "p2pBandwidthLatencyTest: exit $?"
python3 -m gpucert.cli bench p2p --json > "$OUT/gpucert-p2p.json" 2> /tmp/gpucert-p2p.log
echo "gpucert bench p2p: exit $?"; tail -2 /tmp/gpucert-p2p.log
python3 docs/evidence/issue-19-target/compare_peers.py "$OUT" | tee "$OUT/compare.md"
