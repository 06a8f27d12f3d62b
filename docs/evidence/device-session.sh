#!/usr/bin/env bash
# One device session's GPU work as one pipeline (issues 4 and 5), run in the background on the lent
# 2-GPU node after the vLLM bundle is staged, from the repo root:
#   run(command="bash docs/evidence/device-bg.sh start plan env SESSION_S=<device s left − 120> bash docs/evidence/device-session.sh", carry=[".devbundle/qwen-tok.whl"])
#   bash docs/evidence/device-bg.sh wait plan 580      # again until DONE; each step's archive comes
#                                                      # back as soon as the step ends
# Call `wait` again AT ONCE each time it returns: a lent machine with no call in flight goes back
# after `idle_release_s` (30 s in session 6), background run and staged bundle with it.
# Steps in order of what the open issues need most (issue 6 first); a step whose budget no longer fits in what is
# left of SESSION_S is skipped (said in the log). Each step's files go to $OUT as one archive
# (over 15 MB: parts to cat). Every step's own script is in docs/evidence/issue-*/.
# STEPS="sampler-cost serving-ray" in the environment runs only those steps, in this file's order.
# (carry .devbundle/qwen-tok.whl in the starting call for the cross-check step: a call's carried
# paths are gone in the next, so it is copied to /tmp first)
set -uo pipefail
main() {  # one function: bash reads all of it before the checkout can change under it
session=${SESSION_S:-1500}
[[ -f .devbundle/qwen-tok.whl ]] && cp .devbundle/qwen-tok.whl /tmp/qwen-tok.whl
start=$(date +%s)
OUT=${OUT:-/tmp/out}
left() { echo $(( session - ($(date +%s) - start) )); }
step() {  # NAME BUDGET_S CMD...: run CMD with BUDGET_S in its environment if that much is left
  local name=$1 budget=$2; shift 2
  # STEPS="a b": only those steps (a rerun of what an earlier pipeline missed)
  if [[ -n ${STEPS:-} && " $STEPS " != *" $name "* ]]; then return; fi
  if (( $(left) < budget + 20 )); then echo "== skip $name: needs ${budget} s, $(left) s left"; return; fi
  echo "== $name (budget ${budget} s, $(left) s left) $(date +%T)"
  local tmp=/tmp/gpucert-steps/$name; rm -rf "$tmp"; mkdir -p "$tmp"
  OUT=$tmp BUDGET_S=$budget timeout -k 30 $((budget + 60)) "$@" 2>&1 | tail -n 60
  echo "== $name ended $(date +%T)"
  mv "$tmp"/* "$OUT"/ 2>/dev/null  # whole files only: a fetch never sees half an archive
}
inference=docs/evidence/issue-4-inference/run-inference.sh
# issue 6 reach: `make certify` as the README gives it (<= 15 min), then the planted regression
step certify 1000 bash docs/evidence/issue-6-certify/run-certify.sh
step planted 300 bash docs/evidence/issue-6-certify/run-planted.sh
# (sessions 4-5 ran the rest; kept to rerun with STEPS="…" when their code changes)
# issue 5: NVML call costs, the monitor idle / under NCCL / at 20 ms / with /metrics at 5,000 streams
step sampler-cost 150 bash docs/evidence/issue-5-monitor/run-sampler-cost.sh
# the front end as the served limit: four API server processes (a diagnostic, never run yet)
step serving-api4 420 bash $inference serving-tp2-api4 -k serving_baseline --engine-opt api_server_count=4 \
  --load-opt concurrency=128,256,512,1024,2048 --load-opt requests_per_level=1
# a regression run against the committed baselines (the new client, the monitor under vLLM)
step serving-check 330 bash $inference serving-check -k "sanity or serving_baseline" \
  --load-opt concurrency=1,128,256,1024 --load-opt requests_per_level=2
# as exact as `vllm bench serve`? both clients in turn on one vLLM
step crosscheck 420 bash docs/evidence/issue-4-inference/run-crosscheck.sh
step serving-ray 500 bash $inference serving-tp2-ray -k "sanity or serving_baseline" \
  --engine-opt distributed_executor_backend=ray --load-opt requests_per_level=1
# why offline falls past 512 prompts: CUDA graphs captured up to 1024 instead of 512
step offline-cg1024 300 bash $inference offline-cg1024 -k offline --engine-opt max_cudagraph_capture_size=1024 \
  --load-opt concurrency=256,512,1024,2048,4096
echo "== session plan done after $(( $(date +%s) - start )) s"
}
main "$@"
