#!/usr/bin/env bash
# Issue 20 on the lent one-GPU H200, from the repo root after the vLLM bundle is staged. Start with
# device-bg.sh so it outlives one call:
#   bash docs/evidence/device-bg.sh start workloads bash docs/evidence/issue-20-workloads/run-workloads.sh
# (~12 min) `make workloads` as the README gives it, on gpucert/data/workloads.yaml: prefix (16 groups
# sharing a 1,024-token prefix at concurrency 64, then prefix caching off), multiturn (4 turns, 16
# conversations at a time), trace (a 5-minute synthetic bursty trace replayed at its timestamps);
# then the replay benchmark (tools/bench_replay.py) on the node's CPU. The report comes back as
# workloads.tgz; the table printed last has the reach's figures.
set -uo pipefail
source docs/evidence/device-env.sh
report=reports/workloads; rm -rf "$report"; log=/tmp/workloads.log
start=$(date +%s)
make workloads PYTHON=python3 ARGS="--baselines-dir=/tmp/gpucert-workloads-baselines" > "$log" 2>&1
echo "workloads: exit $? in $(( $(date +%s) - start )) s" | tee -a "$log"
grep -E "^gpucert|passed|failed" "$log" | tail -4
# gpucert is installed (device-env.sh); PYTHONPATH stays the bundle's, where httptools is
python3 tools/bench_replay.py --requests 3000 --seconds 300 | tee "$OUT/bench-replay.txt"
python3 - "$report/metrics.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for check in doc["checks"]:
    if check["check"] != "serving_workloads":
        continue
    v = {m["metric"]: m for m in check["metrics"]}
    def show(name):
        m = v.get(name)
        if not m or m.get("value") is None:
            return "—"
        ci = m.get("ci")
        return f"{m['value']:.4g}" + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")
    print(check["params"]["workload_point"], check["outcome"], "hit%", show("prefix_cache_hit_pct"), "expected%",
          show("expected_prefix_hit_pct"), "ttft p50", show("ttft_ms_p50"), "saving%", show("ttft_cache_saving_pct"),
          "lag p99", show("schedule_lag_ms_p99"), "tok/s", show("output_tok_s"))
PY
cp "$log" "$report/make.log"
gzip -f "$report/metrics.json" "$report"/workloads/*.jsonl 2>/dev/null
tar czf "$OUT/workloads.tgz" "$report"
nvidia-smi --query-gpu=index,memory.used --format=csv,noheader | sed 's/^/after: gpu /'
