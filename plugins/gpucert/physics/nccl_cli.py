"""`gpucert bench nccl`: sweep collectives over sizes by hand; a table like nccl-tests, or --json.

    gpucert bench nccl --backend nccl|gloo --nproc N --ops all_reduce,all_gather,... \
        --min-bytes 8 --max-bytes 8G [--step-factor 2] [--iters 20] [--warmup 5] \
        [--dtype float32] [--timeout S] [--json]

Exit status: 0 every row measured with right data, 1 a row failed (error, timeout, wrong data),
2 bad input.
"""

from __future__ import annotations

import json

from gpucert import gpus
from gpucert.cli import CommandError

from . import units
from .nccl import formulas, sweep

EXIT_OK, EXIT_FAILED = 0, 1
DEFAULT_MAX_BYTES = {"nccl": "8G", "gloo": "1M"}  # gloo runs on host memory and CPU cores


def register(engines) -> None:
    parser = engines.add_parser(
        "nccl", help="collectives (all_reduce, all_gather, …) over sizes: algbw, busbw, #wrong",
        description="Sweep NCCL (GPU) or gloo (CPU) collectives over message sizes, one process per "
                    "rank, measured and checked the way nccl-tests does (out-of-place where torch "
                    "allows, busbw per doc/PERFORMANCE.md, data checked at every size).")
    parser.add_argument("--backend", choices=sweep.BACKENDS, default="nccl",
                        help="nccl: one process per GPU; gloo: CPU processes (default: nccl)")
    parser.add_argument("--nproc", type=int, default=None,
                        help="ranks (default: every CUDA device with nccl, 2 with gloo)")
    parser.add_argument("--ops", default=",".join(formulas.OPS),
                        help=f"comma-separated collectives (default: all: {','.join(formulas.OPS)})")
    parser.add_argument("--min-bytes", default="8", help="smallest size, K/M/G binary suffixes (default: 8)")
    parser.add_argument("--max-bytes", default=None,
                        help="largest size (default: 8G with nccl, 1M with gloo)")
    parser.add_argument("--step-factor", type=int, default=2, help="size multiplier per step (default: 2)")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations per size (default: 20)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up iterations per size (default: 5)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16 or float16 (default: float32)")
    parser.add_argument("--size-budget", type=float, default=1.0, metavar="S",
                        help="seconds of timed iterations per size before fewer are run (default: 1)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S",
                        help="budget of the whole sweep in seconds (default: 600)")
    parser.add_argument("--stall-timeout", type=float, default=60.0, metavar="S",
                        help="seconds one size may go without progress before the ranks are killed (default: 60)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(run=run)


def config_from(args) -> sweep.SweepConfig:
    ops = tuple(op.strip() for op in args.ops.split(",") if op.strip())
    try:
        sizes = formulas.size_list(units.parse_size(args.min_bytes),
                                   units.parse_size(args.max_bytes or DEFAULT_MAX_BYTES[args.backend]),
                                   args.step_factor)
    except ValueError as err:
        raise CommandError(str(err)) from None
    nproc = args.nproc if args.nproc is not None else _default_nproc(args.backend)
    return sweep.SweepConfig(backend=args.backend, nproc=nproc, ops=ops, sizes=tuple(sizes), dtype=args.dtype,
                             warmup=args.warmup, iters=args.iters, size_budget_s=args.size_budget,
                             timeout_s=args.timeout, stall_timeout_s=args.stall_timeout)


def _default_nproc(backend: str) -> int:
    if backend == "gloo":
        return 2
    return max(gpus.count(), 2)  # with fewer than 2 GPUs, validation says how many were found


def run(args) -> int:
    try:
        config = sweep.validate(config_from(args))
    except sweep.SweepError as err:
        raise CommandError(str(err)) from None
    result = sweep.run(config)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print_table(result)
    return EXIT_OK if result.ok else EXIT_FAILED


_TYPE_NAMES = {"float32": "float", "bfloat16": "bfloat16", "float16": "half"}  # nccl-tests' names


def print_table(result: sweep.SweepResult) -> None:
    c = result.config
    print(f"# gpucert bench nccl: backend {c.backend}, {c.nproc} ranks, {c.dtype}, "
          f"{c.warmup} warm-up + up to {c.iters} timed iterations per size")
    for rank, info in enumerate(result.ranks):
        if info:
            extra = f", NCCL {info['nccl']} (NCCL_NVLS_ENABLE={info.get('nccl_nvls_enable')})" if info.get("nccl") else ""
            print(f"#  rank {rank}: {info.get('device', 'cpu')} on {info.get('host')}, torch {info.get('torch')}{extra}")
    for op in c.ops:
        op_rows = [r for r in result.rows if r["op"] == op]
        call = next((r["note"] for r in op_rows if r["note"]), "")
        print(f"#\n# {op}" + (f" — {call}" if call else ""))
        print(f"# {'size':>10}  {'count':>12}  {'type':>8}  {'time':>10}  {'min time':>10}  "
              f"{'algbw':>8}  {'busbw':>8}  {'#wrong':>6}  status")
        print(f"# {'(B)':>10}  {'(elements)':>12}  {'':>8}  {'(us)':>10}  {'(us)':>10}  "
              f"{'(GB/s)':>8}  {'(GB/s)':>8}")
        errors = []
        for r in op_rows:
            print(f"  {r['bytes']:>10}  {r['count']:>12}  {_TYPE_NAMES.get(r['dtype'], r['dtype']):>8}  "
                  f"{_num(r['time_us'], 10, 2)}  {_num(r['min_time_us'], 10, 2)}  {_num(r['algbw_gbps'], 8, 2)}  "
                  f"{_num(r['busbw_gbps'], 8, 2)}  {_num(r['wrong'], 6, 0)}  {r['status']}")
            if r["error"] and r["error"] not in errors and "not run" not in r["error"]:
                errors.append(r["error"])
        for error in errors:
            print(f"#  ! {error}")
        measured = [r["busbw_gbps"] for r in op_rows if r["busbw_gbps"] is not None]
        if measured:
            print(f"# Avg bus bandwidth    : {sum(measured) / len(measured):.3f}")
    if result.error:
        print(f"#\n# sweep {result.status}: {result.error}")
    for note in result.notes:
        print(f"# note: {note}")


def _num(value, width: int, digits: int) -> str:
    if value is None:
        return f"{'n/a':>{width}}"
    return f"{value:>{width}.{digits}f}" if digits else f"{value:>{width}}"
