"""Small inline SVG line charts for the card: no scripts, no assets, every label escaped."""

from __future__ import annotations

import html
import math

WIDTH, HEIGHT = 520, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40
RIGHT_AXIS = 56  # room for a second y axis
COLORS = ("#0969da", "#cf222e", "#1a7f37", "#9a6700")


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    start = math.floor(low / step) * step
    return [start + i * step for i in range(int((high - start) / step) + 2) if start + i * step <= high * 1.0001]


def _label(value: float) -> str:
    if abs(value) >= 1e6:
        return f"{value / 1e6:g}M"
    if abs(value) >= 1000:
        # round thousands short (2k, 2.5k); a level as it was run in full (1,024 streams, not 1.024k)
        short = value / 1000
        return f"{short:g}k" if round(short, 1) == short else f"{value:,.0f}"
    return f"{value:g}"  # decades below 1 too: 0.1, 0.01


def line_chart(title: str, x_label: str, y_label: str, series: dict[str, list[tuple[float, float]]],
               log2_x: bool = True, right: dict[str, list[tuple[float, float]]] | None = None,
               right_label: str = "", log_y: bool = False, marks: list[tuple[float, str]] | None = None,
               x_ticks: list[float] | None = None, y_range: tuple[float, float] | None = None,
               levels: list[tuple[float, str]] | None = None, legend: str = "top right") -> str:
    """`series`: name → [(x, y)]. The x axis is log2 (concurrency levels double, a label at each
    level) or, with log2_x=False, linear (time, round labels). `log_y`: a log10 y axis with a line
    at each decade, for figures spanning several (TPOT in ms beside a TTFT of minutes); values
    <= 0 are left out there. `right`: series drawn dashed against a second y axis of their own
    (e.g. streamed tok/s over GPU utilization %), so that a spike in one lines up with the other.
    `marks`: (x, label) vertical dashed lines, e.g. where the stack changed between two runs.
    `x_ticks`: the x labels to show (default: each level on log2, round numbers on linear).
    `y_range`: a linear y axis from low to high instead of 0 to the data's top, where what matters
    is a few points near a ceiling (a share of requests within the SLOs against its 99 % target).
    `levels`: (y, label) horizontal dashed lines, e.g. that target. `legend`: "top right" or,
    where the data runs along the top, "bottom left"."""
    def usable(x: float, y: float | None = 1.0) -> bool:
        return y is not None and (x > 0 if log2_x else x >= 0) and (y > 0 or not log_y)
    points = [(x, y) for pts in series.values() for x, y in pts if usable(x, y)]
    right_points = [(x, y) for pts in (right or {}).values() for x, y in pts if y is not None and usable(x)]
    if not points:
        return ""
    points_x = points + right_points  # the x range covers both
    fx = (lambda v: math.log2(v)) if log2_x else (lambda v: v)
    xs, ys = [fx(x) for x, _ in points_x], [y for _, y in points]
    x0, x1 = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    y0, y1 = y_range if y_range and not log_y else (0.0, max(ys) * 1.1 or 1.0)
    if log_y:  # whole decades around the data
        d0, d1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
        d1 = d1 if d1 > d0 else d0 + 1
    r1 = (max(y for _, y in right_points) * 1.1 or 1.0) if right_points else None
    right_margin = RIGHT_AXIS if r1 else RIGHT
    plot_w, plot_h = WIDTH - LEFT - right_margin, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (fx(x) - x0) / (x1 - x0) * plot_w

    def py(y: float) -> float:
        if log_y:
            return TOP + plot_h - (math.log10(y) - d0) / (d1 - d0) * plot_h
        return TOP + plot_h - (y - y0) / (y1 - y0) * plot_h

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
           f'aria-label="{html.escape(title)}" style="font: 11px sans-serif">',
           f'<text x="{LEFT}" y="16" font-weight="600">{html.escape(title)}</text>']
    for tick in ([10.0 ** d for d in range(d0, d1 + 1)] if log_y else [t for t in _ticks(y0, y1) if t >= y0]):
        y = py(tick)
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - right_margin}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d0d7de"/>'
                   f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    x_labels = x_ticks if x_ticks is not None else (
        sorted({x for x, _ in points}) if log2_x else [t for t in _ticks(min(xs), max(xs)) if min(xs) <= t <= max(xs)])
    for x in x_labels:
        out.append(f'<text x="{px(x):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{_label(x)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    out.append(f'<text x="12" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {TOP + plot_h / 2:.0f})">{html.escape(y_label)}</text>')
    # a mark's label left of its line, from the plot's foot upward: two marks at one x (a predicted
    # onset that was measured exactly) stay legible, and none runs into the legend at the top right
    for i, (x, label) in enumerate(marks or []):
        out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{TOP}" y2="{TOP + plot_h}" stroke="#8250df" '
                   f'stroke-dasharray="4,3"/><text x="{px(x) - 3:.1f}" y="{TOP + plot_h - 6 - 12 * i}" '
                   f'text-anchor="end" fill="#8250df">{html.escape(label)}</text>')
    # a level's label just below its line: the points that hold it run above
    for y, label in levels or []:
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - right_margin}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
                   f'stroke="#cf222e" stroke-dasharray="4,3"/><text x="{LEFT + 4}" y="{py(y) + 13:.1f}" '
                   f'fill="#cf222e">{html.escape(label)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        good = sorted((x, y) for x, y in pts if usable(x, y))
        if not good:
            continue
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in good)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{path}"/>')
        if len(good) <= 40:  # markers on a few levels; a time series is a plain line
            out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>' for x, y in good]
        if legend == "bottom left":  # the first series on top, the last just above the x axis
            out.append(f'<text x="{LEFT + 6}" y="{TOP + plot_h - 6 - 14 * (len(series) - 1 - i)}" '
                       f'fill="{color}">{html.escape(name)}</text>')
        else:
            out.append(f'<text x="{WIDTH - right_margin - 4}" y="{TOP + 14 * (i + 1)}" text-anchor="end" '
                       f'fill="{color}">{html.escape(name)}</text>')
    if r1:
        def pr(y: float) -> float:
            return TOP + plot_h - y / r1 * plot_h
        for tick in _ticks(0.0, r1):
            out.append(f'<text x="{WIDTH - right_margin + 6}" y="{pr(tick) + 4:.1f}">{_label(tick)}</text>')
        out.append(f'<text x="{WIDTH - 8}" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
                   f'transform="rotate(90 {WIDTH - 8} {TOP + plot_h / 2:.0f})">{html.escape(right_label)}</text>')
        for j, (name, pts) in enumerate(right.items()):
            color = COLORS[(len(series) + j) % len(COLORS)]
            good = sorted((x, y) for x, y in pts if y is not None and usable(x))
            if not good:
                continue
            path = " ".join(f"{px(x):.1f},{pr(y):.1f}" for x, y in good)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" stroke-dasharray="5,3" '
                       f'points="{path}"/>')
            out.append(f'<text x="{WIDTH - right_margin - 4}" y="{TOP + 14 * (len(series) + j + 1)}" '
                       f'text-anchor="end" fill="{color}">{html.escape(name)} (right axis)</text>')
    out.append("</svg>")
    return "".join(out)


def _frame(title: str, y1: float, py) -> list[str]:
    """A chart's opening: the svg element, its title, the y grid from 0 to y1 with its labels."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
           f'aria-label="{html.escape(title)}" style="font: 11px sans-serif">',
           f'<text x="{LEFT}" y="16" font-weight="600">{html.escape(title)}</text>']
    for tick in _ticks(0.0, y1):
        out.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(tick):.1f}" y2="{py(tick):.1f}" stroke="#d0d7de"/>'
                   f'<text x="{LEFT - 6}" y="{py(tick) + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    return out


def scatter_chart(title: str, x_label: str, y_label: str, points: list[tuple[float, float, str]],
                  front: list[tuple[float, float]] | None = None, best: tuple[float, float] | None = None) -> str:
    """Points (x, y, label) on linear axes from 0, each with its label as a tooltip; `front` (the
    Pareto front) joined by a line, `best` ringed. For a study's points: throughput against latency."""
    good = [(x, y, label) for x, y, label in points
            if x is not None and y is not None and math.isfinite(x) and math.isfinite(y) and x >= 0 and y >= 0]
    if not good:
        return ""
    x1 = max(x for x, _, _ in good) * 1.1 or 1.0
    y1 = max(y for _, y, _ in good) * 1.1 or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + x / x1 * plot_w

    def py(y: float) -> float:
        return TOP + plot_h - y / y1 * plot_h

    out = _frame(title, y1, py)
    for tick in _ticks(0.0, x1):
        out.append(f'<text x="{px(tick):.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">{_label(tick)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    out.append(f'<text x="12" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {TOP + plot_h / 2:.0f})">{html.escape(y_label)}</text>')
    if front and len(front) > 1:
        path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in sorted(front))
        out.append(f'<polyline fill="none" stroke="{COLORS[1]}" stroke-width="1.5" stroke-dasharray="5,3" points="{path}"/>')
        out.append(f'<text x="{WIDTH - RIGHT - 4}" y="{TOP + 14}" text-anchor="end" fill="{COLORS[1]}">Pareto front</text>')
    for x, y, label in good:
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{COLORS[0]}" fill-opacity="0.7">'
                   f'<title>{html.escape(label)}</title></circle>')
    if best is not None:
        out.append(f'<circle cx="{px(best[0]):.1f}" cy="{py(best[1]):.1f}" r="8" fill="none" stroke="{COLORS[2]}" '
                   f'stroke-width="2"/><text x="{WIDTH - RIGHT - 4}" y="{TOP + 28}" text-anchor="end" '
                   f'fill="{COLORS[2]}">best under the SLOs</text>')
    out.append("</svg>")
    return "".join(out)


def interval_chart(title: str, x_label: str, rows: list[tuple[str, float, float | None, float | None]],
                   reference: float | None = 0.0) -> str:
    """One row per label: its value as a dot and its interval (low, high) as a whisker, on one
    linear x axis that holds every interval and `reference` (a dashed line: no change at 0, the
    reference's own 100 % agreement). For deltas whose interval is the point: a variant whose
    whisker crosses the line differs from the reference by less than the measurement can tell."""
    good = [(label, v, lo, hi) for label, v, lo, hi in rows if v is not None and math.isfinite(v)]
    if not good:
        return ""
    left = 120  # the variants' names
    bounds = [b for _, v, lo, hi in good for b in (v, lo, hi) if b is not None and math.isfinite(b)]
    if reference is not None:
        bounds.append(reference)
    x0, x1 = min(bounds), max(bounds)
    pad = (x1 - x0) * 0.08 or abs(x1) * 0.1 or 1.0
    x0, x1 = x0 - pad, x1 + pad
    height = TOP + BOTTOM + 24 * len(good)
    plot_w = WIDTH - left - RIGHT

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}" style="font: 11px sans-serif">',
           f'<text x="{LEFT}" y="16" font-weight="600">{html.escape(title)}</text>']
    for tick in _ticks(x0, x1):
        if tick >= x0:
            out.append(f'<line x1="{px(tick):.1f}" x2="{px(tick):.1f}" y1="{TOP}" y2="{height - BOTTOM}" '
                       f'stroke="#d0d7de"/><text x="{px(tick):.1f}" y="{height - BOTTOM + 14}" '
                       f'text-anchor="middle">{_label(tick)}</text>')
    if reference is not None:
        out.append(f'<line x1="{px(reference):.1f}" x2="{px(reference):.1f}" y1="{TOP}" y2="{height - BOTTOM}" '
                   f'stroke="#8250df" stroke-dasharray="4,3"/>')
    for i, (label, v, lo, hi) in enumerate(good):
        y = TOP + 12 + 24 * i
        tip = f"{label}: {v:g}" + (f" [{lo:g}, {hi:g}]" if lo is not None and hi is not None else " (no interval)")
        out.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{html.escape(label)}</text>')
        if lo is not None and hi is not None and math.isfinite(lo) and math.isfinite(hi):
            out.append(f'<line x1="{px(lo):.1f}" x2="{px(hi):.1f}" y1="{y}" y2="{y}" stroke="{COLORS[0]}" '
                       f'stroke-width="2"/>' + "".join(f'<line x1="{px(b):.1f}" x2="{px(b):.1f}" y1="{y - 5}" '
                                                       f'y2="{y + 5}" stroke="{COLORS[0]}" stroke-width="2"/>'
                                                       for b in (lo, hi)))
        out.append(f'<circle cx="{px(v):.1f}" cy="{y}" r="4" fill="{COLORS[0]}"><title>{html.escape(tip)}</title>'
                   f'</circle>')
    out.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    out.append("</svg>")
    return "".join(out)


CAUSE_COLORS = {"host-bound": "#cf222e", "sync/memcpy": "#9a6700", "communication": "#8250df", "other": "#6e7781"}


def stacked_bars(title: str, x_label: str, y_label: str, labels: list[str], stacks: dict[str, list[float]],
                 colors: dict[str, str] | None = None) -> str:
    """One bar per label, stacked by series (e.g. idle gaps per duration bin, by cause); a legend
    names each series. Counts from 0; a bar's parts as tooltips."""
    totals = [sum(values[i] for values in stacks.values()) for i in range(len(labels))]
    if not labels or not any(totals):
        return ""
    colors = colors or {}
    y1 = max(totals) * 1.1
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(labels)

    def py(y: float) -> float:
        return TOP + plot_h - y / y1 * plot_h

    out = _frame(title, y1, py)
    for i, label in enumerate(labels):
        x, base = LEFT + i * slot + slot * 0.1, 0.0
        for j, (name, values) in enumerate(stacks.items()):
            if values[i] <= 0:
                continue
            color = colors.get(name, COLORS[j % len(COLORS)])
            out.append(f'<rect x="{x:.1f}" y="{py(base + values[i]):.1f}" width="{slot * 0.8:.1f}" '
                       f'height="{py(base) - py(base + values[i]):.1f}" fill="{color}"><title>'
                       f'{html.escape(f"{label}: {name} {values[i]:g}")}</title></rect>')
            base += values[i]
        out.append(f'<text x="{x + slot * 0.4:.1f}" y="{HEIGHT - BOTTOM + 14}" text-anchor="middle">'
                   f'{html.escape(label)}</text>')
    for j, name in enumerate(stacks):
        out.append(f'<text x="{WIDTH - RIGHT - 4}" y="{TOP + 14 * (j + 1)}" text-anchor="end" '
                   f'fill="{colors.get(name, COLORS[j % len(COLORS)])}">{html.escape(name)}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    out.append(f'<text x="12" y="{TOP + plot_h / 2:.0f}" text-anchor="middle" '
               f'transform="rotate(-90 12 {TOP + plot_h / 2:.0f})">{html.escape(y_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def timeline_chart(title: str, span_us: float, lanes: list[tuple[str, list[tuple[float, float, str, str]]]]) -> str:
    """Lanes of intervals on one µs axis from 0 to `span_us`: (name, [(start, duration, color,
    tooltip)]) — a trace window: the host's ranges, the GPU's ops, its idle gaps by cause."""
    if span_us <= 0 or not any(items for _, items in lanes):
        return ""
    lane_h, label_w = 22, 110
    height = TOP + lane_h * len(lanes) + BOTTOM
    plot_w = WIDTH - label_w - RIGHT

    def px(t: float) -> float:
        return label_w + min(max(t, 0.0), span_us) / span_us * plot_w

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" role="img" '
           f'aria-label="{html.escape(title)}" style="font: 11px sans-serif">',
           f'<text x="{LEFT}" y="16" font-weight="600">{html.escape(title)}</text>']
    for i, (name, items) in enumerate(lanes):
        y = TOP + i * lane_h
        out.append(f'<text x="{label_w - 6}" y="{y + 15}" text-anchor="end">{html.escape(name)}</text>')
        for start, duration, color, tip in items:
            w = max(px(start + duration) - px(start), 0.5)
            out.append(f'<rect x="{px(start):.1f}" y="{y + 3}" width="{w:.1f}" height="{lane_h - 6}" fill="{color}">'
                       f'<title>{html.escape(tip)}</title></rect>')
    for tick in _ticks(0.0, span_us / 1000):
        out.append(f'<text x="{px(tick * 1000):.1f}" y="{height - BOTTOM + 14}" text-anchor="middle">{_label(tick)}</text>')
    out.append(f'<text x="{label_w + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle">ms from the window start</text>')
    out.append("</svg>")
    return "".join(out)
