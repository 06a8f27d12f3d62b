"""Re-judge a run's metrics.json(.gz) with the current judge against a baselines folder, through
the session's own path (pooled between-run noise, same-work rules), from the samples metrics.json
keeps (at most 1,000 per metric: a quantile's interval from those is a little wider than the
run's own). python rejudge.py METRICS_JSON[.gz] BASELINES_DIR"""

import gzip
import lzma
import json
import sys
from collections import Counter
from pathlib import Path

from gpucert.baselines import BaselineStore
from gpucert.metrics import Metric
from gpucert.recorder import CheckResult
from gpucert.session import Run, RunOptions
from gpucert.thresholds import load

root = Path(__file__).resolve().parents[3]
path = Path(sys.argv[1])
data = json.loads({".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)(path).read())
run = Run(RunOptions(baselines_dir=Path(sys.argv[2]), report_dir=Path("/tmp/rejudge"),
                     thresholds=load(root / "thresholds.yaml"), profile=data["profile"]))
run._store = BaselineStore(sys.argv[2], data["profile"])
before, after, moved = Counter(), Counter(), []
for check in data["checks"]:
    result = CheckResult(check["nodeid"], check["check"], check["family"], check["params"], check["markers"])
    for m in check["metrics"]:
        if m.get("verdict") in (None, "skipped") or not isinstance(m.get("value"), (int, float)):
            continue
        result.metrics.append(Metric(check=m["check"], family=m["family"], metric=m["metric"], unit=m["unit"],
                                     value=m["value"], params=m["params"], samples=m.get("samples") or [],
                                     direction=m.get("direction"), peak=m.get("peak"), stat=m.get("stat"),
                                     method=m.get("method"), headline=bool(m.get("headline"))))
    run.judge_check(result)
    old = {m["key"]: m["verdict"] for m in check["metrics"]}
    for metric in result.metrics:
        j = metric.judgement
        before[old[metric.key]] += 1
        after[j.verdict] += 1
        if j.verdict != old[metric.key] or j.verdict == "fail":
            moved.append(f"{metric.key}: {old[metric.key]} -> {j.verdict}: {j.reason}")
print(f"{sys.argv[1]}\n  verdicts then {dict(before)}\n  verdicts now  {dict(after)}")
for line in moved:
    print("  " + line[:260])
