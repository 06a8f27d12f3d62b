"""The rerun table: each inference level's headline metrics in the two baseline runs and the
plain rerun, with the rerun's verdict (python3 table.py u1 u2 c1 [planted …])."""
import gzip
import lzma
import json
import sys
from pathlib import Path

METRICS = ("output_tok_s", "ttft_ms_p99", "tpot_ms_p50", "slo_attainment_pct", "energy_j_per_output_token",
           "gpu_power_mean_w")


def read(name):
    """A run folder's metrics.json: compressed as packed runs kept it, plain as runs.tar.xz holds it."""
    path = Path(name) / "metrics.json"
    for suffix, opener in ((".xz", lzma.open), (".gz", gzip.open)):
        if Path(f"{path}{suffix}").exists():
            return json.load(opener(f"{path}{suffix}"))
    return json.loads(path.read_text())


runs = {name: read(name) for name in sys.argv[1:]}
last = sys.argv[-1]


def metrics(run):
    return {m["key"]: m for c in run["checks"] for m in c["metrics"]}


table = {name: metrics(run) for name, run in runs.items()}
print("| metric | " + " | ".join(runs) + f" | {last}: verdict, change [95% interval] |")
print("| --- |" + " --- |" * (len(runs) + 1))
for key in sorted(table[last]):
    check, metric = key.split("::")
    if metric not in METRICS or not check.startswith(("offline", "serving")):
        continue
    cells = [f"{table[n][key]['value']:.4g}" if key in table[n] and table[n][key]["value"] is not None else "-"
             for n in runs]
    m = table[last][key]
    ci = m.get("delta_ci_pct")
    change = f"{m['delta_pct']:+.1f}%" if m.get("delta_pct") is not None else ""
    interval = f" [{ci[0]:+.0f}%, {ci[1]:+.0f}%]" if ci else ""
    print(f"| {key} | " + " | ".join(cells) + f" | {m['verdict']} {change}{interval} |")
for name, run in runs.items():
    print(f"\n{name}: status {run['status']}, verdict {run['verdict']}, checks {run['counts']}, metrics {run['metric_counts']}")
