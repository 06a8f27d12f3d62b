"""`gpucert bench p2p [--size 1G] [--reps N] [--json]`: the p2pBandwidthLatencyTest matrices of
this node's GPUs, then one row per ordered pair with its topology link and expected peak.

Exit status: 0 every entry measured, 1 some entry failed (listed), 2 bad input or fewer than two
GPUs."""

from __future__ import annotations

import json
import sys

from gpucert.cli import CommandError

from . import p2p, p2p_matrix, units



def parse_size(text: str) -> int:
    """"1G" → 1073741824: binary multiples, as nccl-tests reads -b/-e ("256M", "1GiB", "4096")."""
    try:
        size = units.parse_size(text)
    except ValueError:
        raise CommandError(f"bad size {text!r}: use a byte count with an optional K, M, G or T suffix, e.g. 1G") from None
    if size < 1:
        raise CommandError(f"bad size {text!r}: must be at least 1 byte")
    return size


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "p2p", help="GPU-to-GPU copy bandwidth and latency matrices (p2pBandwidthLatencyTest)",
        description="Measure every ordered GPU pair: one-way and both-way copy bandwidth and "
                    "small-copy latency, with P2P access on and off (staged through host memory), "
                    "printed as p2pBandwidthLatencyTest prints its matrices.")
    parser.add_argument("--size", default="1G", help="bytes per bandwidth copy (default: 1G)")
    parser.add_argument("--reps", type=int, default=10, help="timed repetitions per entry (default: 10)")
    parser.add_argument("--json", action="store_true", help="print the pairs' rows and the matrices as JSON")
    parser.set_defaults(run=run)


def run(args) -> int:
    size = parse_size(args.size)
    if args.reps < 1:
        raise CommandError(f"--reps must be at least 1, got {args.reps}")
    count, reason = p2p.available_gpus()
    if count < 2:
        raise CommandError(p2p.too_few_gpus(count, reason))
    devices = [f"cuda:{i}" for i in range(count)]
    config = p2p_matrix.SweepConfig(size=size, reps=args.reps)
    progress = None if args.json else (lambda title: print(f"measuring: {title}", file=sys.stderr))
    result = p2p_matrix.sweep(devices, config, progress=progress)
    expectations, notes = _expectations(devices)
    if args.json:
        print(json.dumps({**result.to_dict(expectations), "notes": notes}, indent=2))
    else:
        print(p2p_matrix.format_sweep(result))
        print()
        _print_pairs(result.pair_rows(expectations))
        for note in notes:
            print(f"note: {note}")
    for failure in result.failures():
        print(f"gpucert: {failure['matrix']} {failure['src']}→{failure['dst']}: {failure['status']}: "
              f"{failure['error']}", file=sys.stderr)
    return 1 if result.failures() else 0


def _expectations(devices: list[str]) -> tuple[dict, list[str]]:
    """Expected one-way peaks per pair from a live stack snapshot; without one, none (noted)."""
    from gpucert import snapshot as stack

    try:
        snap = stack.collect()
    except (stack.SnapshotError, OSError) as err:
        return {}, [f"no stack snapshot ({err}): links and peaks unknown"]
    gpus = p2p.snapshot_gpus(snap, devices)
    expectations = {(i, j): p2p.pair_expectation(snap, src, dst)
                    for i, src in enumerate(gpus) for j, dst in enumerate(gpus) if i != j}
    bases = sorted({e.basis for e in expectations.values()})
    return expectations, [f"peak: {basis}" for basis in bases]


def _print_pairs(rows: list[dict]) -> None:
    columns = ("src", "dst", "link", "p2p_access", "oneway_gbps", "peak_gbps", "pct_of_peak", "bothway_gbps",
               "latency_us", "oneway_gbps_p2p_off", "bothway_gbps_p2p_off", "latency_us_p2p_off")
    widths = {c: max(len(c), *(len(_cell(r.get(c))) for r in rows)) for c in columns}
    print("  ".join(f"{c:>{widths[c]}}" for c in columns))
    for row in rows:
        print("  ".join(f"{_cell(row.get(c)):>{widths[c]}}" for c in columns))


def _cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.2f}" if isinstance(value, float) else str(value)
