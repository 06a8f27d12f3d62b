"""The worst window of a trace, small enough to draw on the card: the slowest decode step (else
the longest idle gap) of the busiest GPU, with its ops, its idle gaps by cause and the host ranges
around it, times relative to the window's start."""

from __future__ import annotations

import numpy as np

from .gaps import CAUSES, HostIndex, find_gaps
from .timeline import OP_KINDS, DeviceOps, Timeline

MAX_OPS = 400  # a decode step of a 28-layer model launches a few hundred kernels
MAX_RANGES = 60
MARGIN_US = 200.0  # a little of what came before and after


def _bounds(result: dict) -> tuple[int, float, float, str] | None:
    steps = result.get("steps") or {}
    # the slowest step that has one before it: the gap it waited on starts in the step before
    # (a window's first step shows no gap, its wait came before the trace's first GPU op)
    worst = sorted(steps.get("worst") or [], key=lambda s: s.get("index") == 0)
    if worst:
        step = worst[0]
        device = steps.get("device")
        if device is None and result["devices"]:
            device = max(result["devices"], key=lambda d: result["devices"][d]["busy_ms"])
        return int(device), step["start_us"], step["end_us"], f"slowest decode step ({step.get('label')})"
    gaps = [(d, g) for d, s in result["devices"].items() for g in s.get("worst_gaps", [])]
    if not gaps:
        return None
    device, gap = max(gaps, key=lambda dg: dg[1]["dur_us"])
    return int(device), gap["start_us"] - 2000, gap["start_us"] + gap["dur_us"] + 2000, f"longest idle gap ({gap['cause']})"


def _slice(ops: DeviceOps, t0: float, t1: float) -> DeviceOps:
    keep = (ops.start_us < t1) & (np.maximum(ops.end_us, ops.start_us) > t0)
    return DeviceOps(**{name: getattr(ops, name)[keep] for name in
                        ("start_us", "end_us", "kind", "name", "stream", "correlation")})


def window_view(timeline: Timeline, result: dict, gap_us: float) -> dict | None:
    """{device, label, span_us, ops: [[start, dur, kind, name]], gaps: [[start, dur, cause]],
    ranges: [[start, dur, name]]} — None for a trace with nothing to show."""
    bounds = _bounds(result)
    if bounds is None or bounds[0] not in timeline.devices:
        return None
    device, t0, t1, label = bounds
    t0, t1 = t0 - MARGIN_US, t1 + MARGIN_US
    ops = _slice(timeline.devices[device], t0, t1)
    gaps = find_gaps(device, ops, HostIndex(timeline), gap_us)
    ranges = timeline.ranges
    around = np.flatnonzero((ranges.start_us < t1) & (ranges.end_us > t0))[:MAX_RANGES]

    def rel(start: float) -> float:
        return round(float(max(start, t0) - t0), 3)

    def dur(start: float, end: float) -> float:
        return round(float(min(end, t1) - max(start, t0)), 3)
    return {
        "device": device, "label": label, "span_us": round(t1 - t0, 3), "truncated": len(ops) > MAX_OPS,
        "ops": [[rel(s), dur(s, e), OP_KINDS[k], timeline.names[n]] for s, e, k, n in
                zip(ops.start_us[:MAX_OPS], ops.end_us[:MAX_OPS], ops.kind[:MAX_OPS], ops.name[:MAX_OPS])],
        "gaps": [[rel(s), dur(s, e), CAUSES[c]] for s, e, c in zip(gaps.start, gaps.end, gaps.cause)],
        "ranges": [[rel(ranges.start_us[i]), dur(ranges.start_us[i], ranges.end_us[i]),
                    timeline.names[ranges.name[i]]] for i in around],
    }
