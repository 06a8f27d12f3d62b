"""One run's verdicts in a few lines: counts, and each failed or warned metric with its reason
(metrics.json as a run writes it, or the metrics.json.xz kept here)."""
import gzip
import lzma
import json
import sys

run = json.load({".gz": gzip.open, ".xz": lzma.open}.get(sys.argv[1][-3:], open)(sys.argv[1]))
print(f"status {run['status']}  verdict {run['verdict']}  checks {run['counts']}  metrics {run['metric_counts']}")
for check in run["checks"]:
    for m in check["metrics"]:
        if m.get("verdict") in ("fail", "warn"):
            print(f"  {m['verdict']:4} {m['key']}: {(m.get('reason') or '')[:220]}")
