"""One run's verdicts in a few lines: counts, and each failed or warned metric with its reason
(metrics.json as a run writes it, or the metrics.json.gz kept here)."""
import gzip
import json
import sys

run = json.load((gzip.open if sys.argv[1].endswith(".gz") else open)(sys.argv[1]))
print(f"status {run['status']}  verdict {run['verdict']}  checks {run['counts']}  metrics {run['metric_counts']}")
for check in run["checks"]:
    for m in check["metrics"]:
        if m.get("verdict") in ("fail", "warn"):
            print(f"  {m['verdict']:4} {m['key']}: {(m.get('reason') or '')[:220]}")
