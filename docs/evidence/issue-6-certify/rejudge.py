"""Re-judge a run's metrics.json with the current judge (noise-aware verdicts) against the
committed baselines, from the raw samples metrics.json keeps: how the session-5 preview runs come
out now.  python docs/evidence/issue-6-certify/rejudge.py METRICS_JSON [BASELINES_DIR]"""

import gzip
import json
import lzma
import sys
from collections import Counter
from pathlib import Path

from gpucert.baselines import BaselineStore
from gpucert.judge import judge
from gpucert.metrics import Metric
from gpucert.thresholds import load

root = Path(__file__).resolve().parents[3]
path = Path(sys.argv[1])  # metrics.json, or metrics.json.gz / .xz as kept here
opener = {".gz": gzip.decompress, ".xz": lzma.decompress}.get(path.suffix)
data = json.loads(opener(path.read_bytes()) if opener else path.read_text())
store = BaselineStore(sys.argv[2] if len(sys.argv) > 2 else root / "baselines", data["profile"])
rules = load(root / "thresholds.yaml")
before, after, moved = Counter(), Counter(), []
for check in data["checks"]:
    for m in check["metrics"]:
        if m.get("verdict") in (None, "skipped") or not isinstance(m.get("value"), (int, float)):
            continue
        metric = Metric(check=m["check"], family=m["family"], metric=m["metric"], unit=m["unit"], value=m["value"],
                        params=m["params"], samples=m.get("samples") or [], direction=m.get("direction"),
                        peak=m.get("peak"), stat=m.get("stat"))
        rule = rules.rule_for(metric.check, metric.metric, metric.params)
        j = judge(metric, rule, store.entry(metric.family, metric.key))
        before[m["verdict"]] += 1
        after[j.verdict] += 1
        if j.verdict != m["verdict"] or j.verdict == "fail":
            moved.append(f"{metric.key}: {m['verdict']} -> {j.verdict}: {j.reason}")
print(f"{sys.argv[1]}\n  verdicts then {dict(before)}\n  verdicts now  {dict(after)}")
for line in moved[:12]:
    print("  " + line[:300])
if len(moved) > 12:
    print(f"  … {len(moved) - 12} more")
