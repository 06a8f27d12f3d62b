#!/usr/bin/env bash
# Issue 14's reach on the lent one-GPU H200, from the repo root after the vLLM bundle is staged
# (start it with docs/evidence/device-bg.sh: it outlives one call):
#   bash docs/evidence/device-bg.sh start fresh bash docs/evidence/issue-14-newcomer/h200-fresh.sh
# A fresh copy of the working tree (no .venv, no reports), then `make certify` with no arguments:
# its own venv over the node's CUDA torch and vLLM, tensor_parallel_size auto (→ 1 here), the
# verdict as the last line. Also captures `nvidia-smi -q -x` beside `-q` (the XML snapshot's
# fixture, branch wip/smi-xml). ~10 minutes.
set -uo pipefail
[[ -f /tmp/devsite/env.sh ]] && source /tmp/devsite/env.sh
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
fresh=/tmp/gpucert-fresh
rm -rf "$fresh" && mkdir -p "$fresh"
tar --exclude=./.venv --exclude=./.devbundle --exclude=./reports --exclude=./.git -cf - . | tar -xf - -C "$fresh"
cd "$fresh" || exit 3
nvidia-smi -q -x > "$OUT/nvidia-smi-q.xml" 2>&1
nvidia-smi -q > "$OUT/nvidia-smi-q.txt" 2>&1
start=$(date +%s)
make certify > "$OUT/make-certify.log" 2>&1
rc=$?
echo "make certify: exit $rc in $(( $(date +%s) - start )) s" >> "$OUT/make-certify.log"
tail -n 4 "$OUT/make-certify.log"
[[ -f reports/latest/metrics.json ]] && gzip -c reports/latest/metrics.json > "$OUT/metrics.json.gz"
[[ -f reports/latest/report.html ]] && cp reports/latest/report.html "$OUT/"
