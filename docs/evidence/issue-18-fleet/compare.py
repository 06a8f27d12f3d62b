"""Two runs' figures side by side: every measured metric both runs have (same check id, metric and
params), with the difference in %; the largest differences last. Reach of issue 18: the Ray path's
per-GPU figures within 3 % of the local path's.

    python3 compare.py A/metrics.json B/metrics.json[.gz]
"""

from __future__ import annotations

import gzip
import lzma
import json
import math
import sys


def load(path: str) -> dict:
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path[-3:], open)
    with opener(path, "rt") as fh:
        return json.load(fh)


def figures(doc: dict) -> dict[str, float]:
    out = {}
    for check in doc.get("checks", []):
        for metric in check.get("metrics", []):
            value = metric.get("value")
            if metric.get("status") == "ok" and isinstance(value, (int, float)) and math.isfinite(value) and value:
                out[metric.get("key") or f"{check['check_id']}::{metric['metric']}"] = value
    return out


def main(a_path: str, b_path: str) -> int:
    a, b = figures(load(a_path)), figures(load(b_path))
    common = sorted(set(a) & set(b), key=lambda k: abs(b[k] / a[k] - 1))
    print(f"{len(common)} figures in both ({len(a)} in {a_path}, {len(b)} in {b_path})")
    for key in common:
        print(f"{(b[key] / a[key] - 1) * 100:+7.2f} %  {a[key]:>12.5g}  {b[key]:>12.5g}  {key}")
    within = sum(abs(b[k] / a[k] - 1) <= 0.03 for k in common)
    print(f"within 3 %: {within} of {len(common)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
