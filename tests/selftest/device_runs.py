"""Real device runs the self-tests render and parse. They are the evidence under docs/evidence/
(kept gzipped there to keep that folder small), read from there so test data and evidence are one
file, not two copies that drift apart."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

EVIDENCE = Path(__file__).resolve().parents[2] / "docs" / "evidence"
# 2× H100, session 5: `pytest -m inference` judged against baselines (serving table, monitor
# timelines, failures with their reasons)
SERVING_CHECK = EVIDENCE / "issue-4-inference/session5/serving-check/metrics.json.gz"
# 2× H100, session 6: a full `make certify` (every check family, physics against datasheet peaks)
CERTIFY = EVIDENCE / "issue-6-certify/certify/metrics.json.gz"


def load(path: Path) -> dict:
    """A run's metrics.json, as the card and the exporters take it."""
    return json.loads(gzip.decompress(path.read_bytes()))
