"""Render report.html from metrics.json with jinja2 (autoescaped, self-contained: inline CSS, no
scripts or assets fetched from anywhere)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import jinja2

from .. import __version__

_TEMPLATES = Path(__file__).parent / "templates"
_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
    autoescape=True,  # every string on the card is escaped: check ids, errors, versions, paths
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def number(value: Any) -> str:
    """Numbers as an engineer reads them: 4 significant digits, thousands separated."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude == 0 or magnitude >= 1:
        return f"{value:.4g}"
    return f"{value:.3g}"


def percent(value: Any) -> str:
    return "—" if value is None or isinstance(value, str) else f"{value:+.1f}%"


_ENV.filters["number"] = number
_ENV.filters["percent"] = percent


def render(data: dict[str, Any]) -> str:
    regressions = [
        (check, metric)
        for check in data["checks"]
        for metric in check["metrics"]
        if metric.get("verdict") in ("fail", "warn")
    ]
    failed_without_metric = [c for c in data["checks"] if c["outcome"] in ("failed", "error")
                             and not any(m.get("verdict") == "fail" for m in c["metrics"])]
    return _ENV.get_template("card.html.j2").render(
        run=data, regressions=regressions, failed_without_metric=failed_without_metric, version=__version__,
    )


def write(report_dir: str | Path) -> Path:
    report_dir = Path(report_dir)
    data = json.loads((report_dir / "metrics.json").read_text())
    out = report_dir / "report.html"
    out.write_text(render(data))
    return out
