"""`gpucert bench gemm`: GEMM TFLOP/s per dtype and shape, and % of the datasheet dense peak.

    gpucert bench gemm [--device cuda|cuda:N|cpu] [--dtype bf16,fp8,...|all]
                       [--shapes square|model|search|all] [--sizes 4096,8192]
                       [--model qwen2.5-1.5b] [--tp 2] [--tokens 1,16,128]
                       [--search-range 4096:16384:4096] [--m-range|--n-range|--k-range S:E:STEP]
                       [--search-budget 10] [--json]

`--json` prints a list of rows {dtype, shape, m, n, k, tflops, pct_of_peak, status, error};
pct_of_peak is null where the GPU has no datasheet entry (and always on the CPU). Exit status 1
when a measurement failed (a wrong result or an exception), 0 otherwise; skipped rows (fp8 where
the GPU has no fp8 tensor cores, fp8/tf32 on the CPU) carry their reason in `error`.
"""

from __future__ import annotations

import json
import re
import sys

from gpucert import gpus
from gpucert.cli import CommandError

from . import datasheet
from . import gemm as engine

EXIT_OK, EXIT_MEASUREMENT_FAILED = 0, 1
# The CPU is the engine's self-test, not a benchmark: small defaults that finish in seconds.
CPU_SIZES = (256, 512)
CPU_TOKENS = (1, 16, 128)
TIMING = {"cuda": {"warmup": 5, "reps": 20}, "cpu": {"warmup": 1, "reps": 5}}


def register(engines) -> None:
    parser = engines.add_parser(
        "gemm", help="GEMM TFLOP/s per dtype and shape against the datasheet dense peak",
        description="Time C = A @ B (random normal inputs, L2 flushed between iterations, a slice "
                    "checked against fp64) and print TFLOP/s and % of the datasheet dense peak.")
    parser.add_argument("--device", default=None,
                        help="cuda, cuda:N or cpu (default: cuda:0 when a GPU is visible, else cpu)")
    parser.add_argument("--dtype", default="all",
                        help=f"comma-separated dtypes among {', '.join(engine.DTYPES)}, or all (default: all)")
    parser.add_argument("--shapes", choices=("square", "model", "search", "all"), default="square",
                        help="square sizes, the model preset's projection GEMMs, the max-achievable "
                             "search, or all three (default: square)")
    parser.add_argument("--sizes", default=None,
                        help="square sizes, comma-separated (default: 4096,8192,16384; tf32/fp32 "
                             f"4096,8192; on the CPU {','.join(map(str, CPU_SIZES))})")
    parser.add_argument("--model", default=engine.DEFAULT_MODEL,
                        help=f"model preset for --shapes model (default: {engine.DEFAULT_MODEL}; "
                             f"valid: {', '.join(engine.model_presets())})")
    parser.add_argument("--tp", type=int, default=engine.DEFAULT_TP,
                        help=f"tensor-parallel degree the projections are sharded for (default: {engine.DEFAULT_TP})")
    parser.add_argument("--tokens", default=None,
                        help="token counts m of the projection GEMMs (default: "
                             f"{','.join(map(str, engine.TOKEN_COUNTS))}; on the CPU {','.join(map(str, CPU_TOKENS))})")
    parser.add_argument("--search-range", default=None, metavar="START:STOP:STEP",
                        help="m, n and k values of the search, both ends included (default: "
                             "4096:16384:4096; tf32/fp32 2048:8192:2048)")
    for dim in "mnk":
        parser.add_argument(f"--{dim}-range", default=None, metavar="START:STOP:STEP",
                            help=f"{dim} values of the search alone (default: --search-range)")
    parser.add_argument("--search-budget", type=float, default=engine.SEARCH_BUDGET_S, metavar="SECONDS",
                        help=f"time budget of the search per dtype (default: {engine.SEARCH_BUDGET_S:g})")
    parser.add_argument("--warmup", type=int, default=None, help="untimed iterations (default: 5; cpu 1)")
    parser.add_argument("--reps", type=int, default=None, help="timed iterations (default: 20; cpu 5)")
    parser.add_argument("--sustain-s", type=float, default=None, metavar="SECONDS",
                        help="time each shape over this many seconds of back-to-back GEMMs in ~100 ms blocks (the "
                             "median block), not --reps single iterations (default: off, a burst)")
    parser.add_argument("--warmup-s", type=float, default=0.5, metavar="SECONDS",
                        help="with --sustain-s: untimed back-to-back GEMMs before each shape's")
    parser.add_argument("--preheat-s", type=float, default=0.0, metavar="SECONDS",
                        help="with --sustain-s: untimed GEMMs before a dtype's search, the GPU at full power first "
                             "(mamf-finder: 30)")
    parser.add_argument("--sustain-top", type=int, default=None, metavar="N",
                        help="with --sustain-s and a search: rank the grid by bursts, time only its N fastest shapes "
                             f"sustained (make certify: {engine.SEARCH_SUSTAIN_TOP}; default: every shape sustained)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    parser.set_defaults(run=run)


# ---- shared by the bench CLIs ------------------------------------------------------------------

def cuda_devices(text: str) -> list[str]:
    """`cuda` (every visible GPU) or `cuda:N`, checked against what is visible."""
    count, reason = gpus.visible()
    if count == 0:
        raise CommandError(f"--device {text}: {reason}")
    if text == "cuda":
        return [f"cuda:{i}" for i in range(count)]
    index = int(text.split(":", 1)[1])
    if index >= count:
        raise CommandError(f"--device {text}: only {count} CUDA device(s) visible")
    return [text]


def check_device(text: str | None) -> str:
    """One device for an engine that runs on one: default cuda:0 if there is a GPU, else cpu."""
    if text is None:
        return "cuda:0" if gpus.count() else "cpu"
    if text == "cpu":
        return text
    if re.fullmatch(r"cuda(:\d+)?", text):
        return cuda_devices(text)[0]
    raise CommandError(f"--device {text!r}: expected cuda, cuda:N or cpu")


def int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CommandError(f"{option} {text!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise CommandError(f"{option} {text!r}: expected integers >= 1")
    return values


def gpu_spec(device: str) -> tuple[str, datasheet.GpuSpec | None]:
    """(the device's product name, its datasheet entry or None)."""
    if device == "cpu":
        return "cpu", None
    import torch
    name = torch.cuda.get_device_name(device)
    return name, datasheet.lookup(name)


def fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


# ---- gemm ---------------------------------------------------------------------------------------

def _dtypes(text: str) -> list[str]:
    names = list(engine.DTYPES) if text == "all" else [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in names if d not in engine.DTYPES]
    if unknown or not names:
        raise CommandError(f"unknown dtype {', '.join(unknown) or repr(text)} (valid: {', '.join(engine.DTYPES)}, all)")
    return names


def _search_values(text: str | None, dtype: str) -> list[int]:
    if text is None:
        return engine.span(*engine.SEARCH_RANGES[dtype])
    try:
        start, stop, step = (int(part) for part in text.split(":"))
        return engine.span(start, stop, step)
    except ValueError as err:
        raise CommandError(f"--search-range {text!r}: expected START:STOP:STEP integers ({err})") from None


def _shapes(args, dtype: str, on_cpu: bool) -> list[engine.GemmShape]:
    shapes = []
    if args.shapes in ("square", "all"):
        sizes = int_list(args.sizes, "--sizes") if args.sizes else (CPU_SIZES if on_cpu else engine.SQUARE_SIZES[dtype])
        shapes += [engine.square(size) for size in sizes]
    if args.shapes in ("model", "all"):
        tokens = int_list(args.tokens, "--tokens") if args.tokens else (CPU_TOKENS if on_cpu else engine.TOKEN_COUNTS)
        try:
            shapes += engine.projection_shapes(engine.model_preset(args.model), args.tp, tokens)
        except ValueError as err:
            raise CommandError(str(err)) from None
    return shapes


def _row(dtype, shape, m, n, k, tflops, peak, status, error) -> dict:
    pct = 100.0 * tflops / peak if tflops is not None and peak else None
    return {"dtype": dtype, "shape": shape, "m": m, "n": n, "k": k, "tflops": tflops,
            "pct_of_peak": pct, "status": status, "error": error}


def run(args) -> int:
    device = check_device(args.device)
    on_cpu = device == "cpu"
    dtypes = _dtypes(args.dtype)
    timing = dict(TIMING["cpu" if on_cpu else "cuda"])
    timing.update({k: v for k, v in (("warmup", args.warmup), ("reps", args.reps)) if v is not None})
    if timing["reps"] < 1 or timing["warmup"] < 0:
        raise CommandError("--reps must be >= 1 and --warmup >= 0")
    if args.sustain_s is not None and not args.sustain_s > 0:
        raise CommandError(f"--sustain-s must be > 0, got {args.sustain_s:g}")
    if args.warmup_s < 0 or args.preheat_s < 0:
        raise CommandError("--warmup-s and --preheat-s must be >= 0")
    if args.sustain_top is not None and (args.sustain_top < 1 or not args.sustain_s):
        raise CommandError(f"--sustain-top needs --sustain-s and must be >= 1, got {args.sustain_top}")
    sustained = {"sustain_s": args.sustain_s, "warmup_s": args.warmup_s} if args.sustain_s else {}
    plan = [(dtype, _shapes(args, dtype, on_cpu)) for dtype in dtypes]  # bad input fails before any work
    search_grids = {dtype: [_search_values(getattr(args, f"{dim}_range") or args.search_range, dtype) for dim in "mnk"]
                    for dtype in dtypes} if args.shapes in ("search", "all") else {}
    name, spec = gpu_spec(device)
    table = None if args.json else _Table(device, name, spec)
    rows = []
    for dtype, shapes in plan:
        peak = spec.dense_tflops.get(dtype) if spec else None
        for shape in shapes:
            result = engine.run_shape(dtype, shape, device, **timing, **sustained)
            rows.append(_row(dtype, shape.name, shape.m, shape.n, shape.k, result.tflops, peak,
                             result.status, result.error))
            if table:
                table.print(rows[-1], result.note)
        if dtype in search_grids:
            found = engine.search_max(dtype, device, *search_grids[dtype], budget_s=args.search_budget,
                                      warmup=min(timing["warmup"], 3), reps=min(timing["reps"], 10), **sustained,
                                      preheat_s=args.preheat_s if sustained else 0.0,
                                      sustain_top=args.sustain_top if sustained else None)
            best = found.best.params if found.best else {}
            rows.append(_row(dtype, "search", best.get("m"), best.get("n"), best.get("k"),
                             found.best.tflops if found.best else None, peak, found.status, found.error))
            if table:
                table.print(rows[-1], found.note or f"best of {len(found.tried)} shapes")
    if args.json:
        print(json.dumps(rows, indent=2))
    return EXIT_MEASUREMENT_FAILED if any(r["status"] == "error" for r in rows) else EXIT_OK


class _Table:
    """Fixed-width rows printed as they are measured (a long sweep shows progress)."""

    FORMAT = "{:>5}  {:<30} {:>6} {:>6} {:>6} {:>10} {:>7}  {}"

    def __init__(self, device: str, name: str, spec):
        where = f"{name} ({device})" if device != "cpu" else "cpu"
        peak = (f"datasheet {spec.model}" if spec else datasheet.no_entry_note(name)) if device != "cpu" \
            else "no datasheet peak on the CPU"
        print(f"# gpucert bench gemm on {where}: {peak}")
        print(self.FORMAT.format("dtype", "shape", "m", "n", "k", "TFLOP/s", "% peak", "status"))
        sys.stdout.flush()

    def print(self, row: dict, note: str | None) -> None:
        status = row["status"] if row["status"] == "ok" else f"{row['status']}: {row['error']}"
        if note and row["status"] == "ok":
            status = f"ok ({note})"
        print(self.FORMAT.format(row["dtype"], row["shape"], *(row[d] if row[d] is not None else "-" for d in "mnk"),
                                 fmt(row["tflops"], 2), fmt(row["pct_of_peak"]), status))
        sys.stdout.flush()
