#!/usr/bin/env bash
# Issue 6 reach, part 1, on the lent 2-GPU node after the vLLM bundle is staged (from the repo
# root): `make certify` exactly as the README gives it (hardware + inference, 15-minute budget,
# CERTIFY_OPTS), timed, against the committed baselines. Keeps the card, metrics.json,
# metrics.prom, gpucert.log, the engine log and the candidate baselines in $OUT/certify.tgz.
set -uo pipefail
source /tmp/devsite/env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
rm -rf reports/latest
start=$(date +%s)
make certify PYTHON=python3 ARGS="-p no:cacheprovider" > /tmp/certify.log 2>&1
rc=$?
echo "make certify: exit $rc in $(( $(date +%s) - start )) s" | tee -a /tmp/certify.log
grep -E "^gpucert ▸|^(FAILED|ERROR)" /tmp/certify.log | cut -c1-250 | head -40
cp /tmp/certify.log reports/latest/make-certify.log 2>/dev/null
python3 docs/evidence/issue-4-inference/table.py reports/latest/metrics.json 2>&1 | head -40
python3 - <<'PY'
import json
d = json.load(open("reports/latest/metrics.json"))
print("verdict", d["verdict"], "status", d["status"], "counts", d["counts"], "budget", d.get("time_budget"))
PY
gzip -f reports/latest/engine/vllm-serve.log 2>/dev/null
rm -rf reports/latest/engine/models reports/latest/offline/models reports/latest/offline/offline-config.json
tar czf "$OUT/certify.tgz" -C reports latest
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after: gpu /'
