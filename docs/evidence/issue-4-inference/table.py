"""Short table of an inference card's metrics.json: one row per check (used by run-inference.sh;
also reads the metrics.json.xz files kept here)."""
import gzip
import lzma
import json
import sys

COLUMNS = ("output_tok_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99", "itl_ms_p99",
           "failed_requests", "token_count_mismatches", "client_loop_lag_ms_p99")

try:
    run = json.load({".gz": gzip.open, ".xz": lzma.open}.get(sys.argv[1][-3:], open)(sys.argv[1]))
except (OSError, ValueError) as exc:
    sys.exit(f"no card: {exc}")
print(f"status {run['status']}  verdict {run['verdict']}  counts {run['counts']}")
print("check".ljust(34) + "verdict ".ljust(9) + " ".join(c[:12].rjust(12) for c in COLUMNS))
for check in run["checks"]:
    values = {m["metric"]: m for m in check["metrics"]}
    cells = []
    for column in COLUMNS:
        m = values.get(column)
        cells.append(("-" if m is None else "ERR" if m["value"] is None else f"{m['value']:.1f}").rjust(12))
    print(check["check_id"][:33].ljust(34) + check["verdict"].ljust(9) + " ".join(cells))
    extra = {k: m["value"] for k, m in values.items() if k not in COLUMNS}
    if extra:
        print("    " + ", ".join(f"{k}={v if v is None else round(v, 2)}" for k, v in extra.items()))
    if check["verdict"] not in ("pass", "new") and check.get("message"):
        print("    " + check["message"].replace("\n", " | ")[:400])
mon = run.get("monitor") or {}
if mon:
    print(f"monitor: {mon.get('samples')} samples at {mon.get('interval_ms')} ms, jitter p99 "
          f"{(mon.get('jitter_ms') or {}).get('p99')} ms, sampler CPU {mon.get('sampler_cpu_mean_pct')} % of a core, "
          f"counter reads {mon.get('counter_reads')} spaced {mon.get('counter_spacing_s')} s, "
          f"vLLM /metrics filtered {mon.get('vllm_metrics_filtered')}")
