"""`gpucert analyze TRACE [--gap-us N] [--json] [--step-pattern REGEX] [--top N]`: one profiler
trace (PyTorch/Kineto JSON, gzipped or not, or an Nsight Systems SQLite export) read into per GPU
busy share and idle gaps by cause, and per engine step GPU against wall time.

Exit status: 0 analyzed, 2 bad input (a missing or unreadable trace, a bad option: one line)."""

from __future__ import annotations

import json
import math
import re

from .gaps import DEFAULT_GAP_US

DEFAULT_TOP = 10


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze", help="read a profiler trace: GPU busy share, idle gaps by cause, engine steps",
        description="Read one profiler trace (PyTorch profiler JSON, gzipped or not, or an Nsight Systems "
                    "SQLite export) and report, per GPU, the busy share and every idle gap with its cause "
                    "(communication, host-bound, sync/memcpy, other), and, per vLLM engine step, GPU time "
                    "against wall time.")
    parser.add_argument("trace", metavar="TRACE",
                        help="the trace file: *.pt.trace.json[.gz] or an `nsys export --type sqlite` file")
    parser.add_argument("--gap-us", type=float, default=DEFAULT_GAP_US, metavar="N",
                        help="shortest idle gap counted, in µs (> 0)")
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    parser.add_argument("--step-pattern", metavar="REGEX",
                        help="a Python regex for the engine-step range names, with named groups context, "
                             "context_tokens, generation, generation_tokens for the step kinds (default: "
                             "vLLM's execute_context_C(T)_generation_G(g) annotation, simple and detailed form)")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N",
                        help="rows in the worst-gap and top-kernel lists; the worst-step list gets half")
    parser.set_defaults(run=run_analyze)


def run_analyze(args) -> int:
    from gpucert.cli import CommandError

    from .analyze import analyze, render_text
    from .read import load_trace
    from .timeline import TraceError

    if not (args.gap_us > 0 and math.isfinite(args.gap_us)):
        raise CommandError(f"--gap-us must be a number > 0, not {args.gap_us:g}")
    if args.top < 1:
        raise CommandError(f"--top must be >= 1, not {args.top}")
    if args.step_pattern is not None:
        try:
            re.compile(args.step_pattern)
        except re.error as err:
            raise CommandError(f"--step-pattern {args.step_pattern!r} is not a regex: {err}") from None
    try:
        timeline = load_trace(args.trace)
    except TraceError as err:
        raise CommandError(_one_line(str(err))) from None
    result = analyze(timeline, gap_us=args.gap_us, step_pattern=args.step_pattern, top=args.top)
    if args.json:
        print(json.dumps(finite(result), indent=1, allow_nan=False))
    else:
        print(render_text(result), end="")
    return 0


def finite(value):
    """The result with every NaN or infinity replaced by None: JSON has no such numbers, and a
    consumer's parser may reject them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def _one_line(text: str) -> str:
    return " ".join(text.split())
