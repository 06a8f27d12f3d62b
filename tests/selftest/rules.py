"""The shipped thresholds.yaml with a self-test's rehearsal rules added: a CPU box's spread is not a
GPU node's, so a rehearsal widens a band where the box (not the code) decides the figure."""
from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def thresholds_with(tmp_path: Path, *rules: dict) -> Path:
    """Write thresholds.yaml + `rules` (appended: a later rule for the same metric wins) into
    tmp_path; returns the file, for `--thresholds=`."""
    shipped = yaml.safe_load((REPO / "thresholds.yaml").read_text())
    shipped["rules"] += list(rules)
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(shipped, sort_keys=False))
    return path
