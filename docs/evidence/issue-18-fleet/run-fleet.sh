#!/usr/bin/env bash
# Issue 18 on the lent one-GPU H200 as a one-node Ray cluster, from the repo root, after the vLLM
# bundle built `--with-ray` is staged (../shared/device/build-vllm-bundle --with-ray: Ray 2.60).
# Start with device-bg.sh so it outlives one call:
#   bash docs/evidence/device-bg.sh start fleet bash docs/evidence/issue-18-fleet/run-fleet.sh hardware
#   bash docs/evidence/device-bg.sh start rayvllm bash docs/evidence/issue-18-fleet/run-fleet.sh vllm
# PART hardware (~10 min): the node checks the local way (`pytest tests/hardware -m hardware`), then
# the same through `make fleet` on a one-node Ray cluster (ray start --head, the GPU given to the
# node's actor), then the per-GPU figures side by side (reach: within 3 %). PART vllm (~8 min): the
# serving check at concurrency 1,64 with vLLM's mp executor, then with distributed_executor_backend=ray
# on the same cluster; the figures side by side.
set -uo pipefail
source docs/evidence/device-env.sh
part=${1:-hardware}
port=6390
ray stop --force > /dev/null 2>&1
# --node-ip-address 127.0.0.1: nothing outside this machine is reachable, and nothing needs to be
ray start --head --node-ip-address 127.0.0.1 --port $port --num-gpus 1 --num-cpus 8 --include-dashboard false \
  --disable-usage-stats > /tmp/ray-start.log 2>&1 || { cat /tmp/ray-start.log; exit 1; }
address=127.0.0.1:$port
case $part in
  hardware)
    start=$(date +%s)
    python3 -m pytest -c pyproject.toml tests/hardware -m hardware --report-dir reports/local \
      --baselines-dir /tmp/gpucert-b-local > /tmp/local.log 2>&1
    echo "local: exit $? in $(( $(date +%s) - start )) s"; tail -2 /tmp/local.log
    start=$(date +%s)
    make fleet PYTHON=python3 RAY_ADDRESS=$address \
      ARGS="--fleet-args 'tests/hardware -m hardware --baselines-dir /tmp/gpucert-b-fleet' --fleet-timeout-min 15" > /tmp/fleet.log 2>&1
    echo "fleet: exit $? in $(( $(date +%s) - start )) s"; tail -2 /tmp/fleet.log
    python3 docs/evidence/issue-18-fleet/compare.py reports/local/metrics.json reports/fleet/nodes/*/metrics.json \
      | tee "$OUT/compare.txt"
    for d in reports/local reports/fleet; do cp /tmp/$(basename $d).log $d/make.log 2>/dev/null; done
    gzip -f reports/local/metrics.json reports/fleet/metrics.json reports/fleet/nodes/*/metrics.json 2>/dev/null
    tar czf "$OUT/fleet-hardware.tgz" reports/local reports/fleet ;;
  vllm)
    load="--load-opt concurrency=1,64 --load-opt requests_per_level=2 --load-opt repeats=3"
    for backend in mp ray; do
      start=$(date +%s)
      python3 -m pytest -c pyproject.toml tests/inference/test_serving_baseline.py -m inference $load \
        --engine-opt distributed_executor_backend=$backend --ray-address $address \
        --report-dir reports/serving-$backend --baselines-dir /tmp/gpucert-b-$backend > /tmp/serving-$backend.log 2>&1
      echo "serving $backend: exit $? in $(( $(date +%s) - start )) s"; tail -2 /tmp/serving-$backend.log
      cp /tmp/serving-$backend.log reports/serving-$backend/make.log
    done
    python3 docs/evidence/issue-18-fleet/compare.py reports/serving-mp/metrics.json reports/serving-ray/metrics.json \
      | tee "$OUT/compare-serving.txt"
    gzip -f reports/serving-*/metrics.json
    tar czf "$OUT/fleet-vllm.tgz" reports/serving-mp reports/serving-ray ;;
  *) echo "usage: run-fleet.sh hardware|vllm"; ray stop --force > /dev/null 2>&1; exit 2 ;;
esac
ray stop --force > /dev/null 2>&1
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after: gpu /'
