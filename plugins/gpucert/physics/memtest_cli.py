"""`gpucert bench memtest`: memory integrity of each GPU — patterns written over most of its free
memory, verified on the device, errors counted and located (physics/memtest.py says what exactly).

    gpucert bench memtest [--device cuda|cuda:N|cpu] [--fraction 0.9] [--size 1G] [--chunk 1G]
                          [--patterns walking,address,random] [--bits 0,9,...,63] [--passes 1]
                          [--seed 0] [--max-located 32] [--json]

`--json` prints a list with one object per device (MemtestResult.to_dict(): status, bytes tested,
fraction of free and total memory, errors in all and per chunk, per pattern its errors, located
errors, bytes and seconds, GB/s). Exit status 0 when every word read back as written, 1 when a
mismatch was found or the test failed (a CUDA error, as an uncorrectable ECC error raises), 2 on
bad input.
"""

from __future__ import annotations

import json
import sys

from gpucert.cli import CommandError

from . import memtest as engine
from . import units
from .gemm_cli import check_device, cuda_devices, fmt, gpu_spec

EXIT_OK, EXIT_ERRORS = 0, 1
CPU_SIZE = 256 << 20  # the CPU run is the engine's self-test, not a test of the host's RAM
_BITS_DEFAULT = ",".join(map(str, engine.DEFAULT_WALKING_BITS))


def register(engines) -> None:
    parser = engines.add_parser(
        "memtest", help="memory integrity per GPU: write-and-verify patterns over its free memory",
        description="Write walking-bit, address-in-address and seeded random patterns over most of "
                    "each GPU's free memory, verify them on the device, count and locate every "
                    "mismatching word, and print GB/s.")
    parser.add_argument("--device", default=None,
                        help="cuda (every visible GPU), cuda:N or cpu (default: cuda when a GPU is visible, else cpu)")
    parser.add_argument("--fraction", type=float, default=engine.DEFAULT_FRACTION,
                        help="share of the GPU's free memory to test, in (0, 1]; a reserve of "
                             f"{engine.RESERVE_BYTES >> 20} MiB is always left (default: {engine.DEFAULT_FRACTION:g})")
    parser.add_argument("--size", default=None,
                        help="bytes to test, binary units: 512M, 1G (default: on a GPU the --fraction of "
                             f"free memory, which --size caps; on the CPU {CPU_SIZE >> 20}M)")
    parser.add_argument("--chunk", default="1G",
                        help="bytes per allocation (one tensor), binary units (default: 1G)")
    parser.add_argument("--patterns", default=",".join(engine.PATTERN_GROUPS),
                        help=f"comma-separated among {', '.join(engine.PATTERN_GROUPS)}, or all "
                             f"(default: {','.join(engine.PATTERN_GROUPS)})")
    parser.add_argument("--bits", default=_BITS_DEFAULT,
                        help=f"bit positions 0-63 of the walking patterns, comma-separated, or all "
                             f"(default: {_BITS_DEFAULT}: one per byte lane)")
    parser.add_argument("--passes", type=int, default=1, help="times the whole pattern list runs (default: 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random pattern (default: 0)")
    parser.add_argument("--max-located", type=int, default=engine.MAX_LOCATED,
                        help=f"errors located per pattern (default: {engine.MAX_LOCATED})")
    parser.add_argument("--json", action="store_true", help="print JSON, one object per device, instead of tables")
    parser.set_defaults(run=run)


def _size(text: str, option: str) -> int:
    try:
        size = units.parse_size(text)
    except ValueError:
        raise CommandError(f"{option} {text!r}: expected a byte count like 4096, 512M or 1G") from None
    if size < engine.MIN_CHUNK_BYTES:
        raise CommandError(f"{option} {text!r}: at least {engine.MIN_CHUNK_BYTES} bytes")
    return size


def _patterns(text: str) -> list[str]:
    if text == "all":
        return list(engine.PATTERN_GROUPS)
    names = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in names if p not in engine.PATTERN_GROUPS]
    if unknown or not names:
        raise CommandError(f"unknown pattern {', '.join(unknown) or repr(text)} "
                           f"(valid: {', '.join(engine.PATTERN_GROUPS)}, all)")
    return names


def _bits(text: str) -> list[int]:
    if text == "all":
        return list(range(64))
    try:
        bits = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        bits = []
    if not bits or any(not 0 <= b < 64 for b in bits) or len(set(bits)) != len(bits):
        raise CommandError(f"--bits {text!r}: expected distinct bit positions 0-63, comma-separated, or all")
    return bits


def _options(args) -> dict:
    """The engine's keyword arguments, every one checked (CommandError) before any device is touched."""
    if not 0 < args.fraction <= 1:
        raise CommandError(f"--fraction {args.fraction:g}: expected a share of free memory in (0, 1]")
    for option, value, least in (("--passes", args.passes, 1), ("--seed", args.seed, 0),
                                 ("--max-located", args.max_located, 0)):
        if value < least:
            raise CommandError(f"{option} {value}: expected an integer >= {least}")
    return {"size_bytes": _size(args.size, "--size") if args.size else None, "fraction": args.fraction,
            "chunk_bytes": _size(args.chunk, "--chunk"), "patterns": _patterns(args.patterns),
            "walking_bits": _bits(args.bits), "passes": args.passes, "seed": args.seed,
            "max_located": args.max_located}


def _devices(text: str | None) -> list[str]:
    """As `bench memory`: cuda or none given (with a GPU visible) is every visible GPU, one after another."""
    if text == "cuda":
        return cuda_devices(text)
    device = check_device(text)
    return cuda_devices("cuda") if text is None and device != "cpu" else [device]


def run(args) -> int:
    options = _options(args)
    devices = _devices(args.device)
    results = []
    for device in devices:
        kwargs = dict(options)
        if device == "cpu" and kwargs["size_bytes"] is None:
            kwargs["size_bytes"] = CPU_SIZE
        try:
            engine.check_params(device, **kwargs)
        except ValueError as err:
            raise CommandError(str(err)) from None
        result = engine.run_memtest(device, **kwargs)
        results.append(result)
        if not args.json:
            _print(result, gpu_spec(device)[0])
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    return EXIT_OK if all(r.status == "ok" for r in results) else EXIT_ERRORS


# ---- text ---------------------------------------------------------------------------------------

_ROW = "{:<22} {:>4} {:>10} {:>9} {:>9} {:>9}"
_LOCATED = "{:<22} {:>5} {:>12} {:>14} {:>16} {:>18} {:>18}  {}"


def _mib(nbytes: int | None) -> str:
    return "-" if nbytes is None else f"{nbytes / (1 << 20):,.0f} MiB"


def _coverage(result: engine.MemtestResult) -> str:
    text = f"{_mib(result.bytes_tested)} tested in {len(result.chunks)} chunk(s)"
    if result.fraction_of_free is not None:
        text += (f" = {100 * result.fraction_of_free:.1f} % of free {_mib(result.free_bytes)}"
                 f" ({100 * result.fraction_of_total:.1f} % of total {_mib(result.total_bytes)})")
    return text


def _print(result: engine.MemtestResult, name: str) -> None:
    print(f"# gpucert bench memtest on {name} ({result.device}): {_coverage(result)}, seed {result.params['seed']}")
    print(_ROW.format("pattern", "pass", "errors", "GB/s", "write s", "verify s"))
    for p in result.patterns:
        print(_ROW.format(p.name, p.pass_index, f"{p.errors:,}", fmt(p.gbps), fmt(p.write_s, 3), fmt(p.verify_s, 3)))
    status = result.status if result.error is None else f"{result.status}: {result.error}"
    print(f"total: {result.errors:,} mismatching words in {len(result.patterns)} patterns, "
          f"{result.bytes_moved / 1e9:,.2f} GB written+read in {result.seconds:.3f} s = {fmt(result.gbps)} GB/s; "
          f"status {status}")
    if result.note:
        print(f"note: {result.note}")
    if result.errors:
        _print_errors(result)
    sys.stdout.flush()


def _print_errors(result: engine.MemtestResult) -> None:
    bad = [f"{index}: {count:,}" for index, count in enumerate(result.errors_per_chunk) if count]
    print(f"errors per chunk (chunk: words): {', '.join(bad)}")
    print(_LOCATED.format("located: pattern", "chunk", "offset", "address", "pointer", "expected", "actual",
                          "flipped bits"))
    for p in result.patterns:
        for e in p.located:
            print(_LOCATED.format(p.name, e["chunk"], f"0x{e['offset']:x}", f"0x{e['address']:x}", e["pointer"],
                                  e["expected"], e["actual"], ",".join(map(str, e["flipped_bits"]))))
