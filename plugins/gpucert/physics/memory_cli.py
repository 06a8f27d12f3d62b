"""`gpucert bench memory`: copy bandwidth per GPU (device copy, H2D/D2H pinned and pageable).

    gpucert bench memory [--device cuda|cuda:N|cpu] [--size 2G] [--kinds device_copy,h2d_pinned,...]
                         [--json]

`--json` prints a list of rows {kind, device, size_bytes, bytes, time_us, gbps, pct_of_peak,
status, error}: `bytes` moved per iteration (2 × size for a device copy: read + written), GB/s
= bytes / median time / 1e9, pct_of_peak against the datasheet memory bandwidth (device copy) or
PCIe per direction (host copies), null without a datasheet entry. Exit status 1 when a copy
failed or copied wrong data, 0 otherwise.
"""

from __future__ import annotations

import json
import sys

from gpucert.cli import CommandError

from . import datasheet, units
from . import memory as engine
from .gemm_cli import check_device, cuda_devices, fmt, gpu_spec

EXIT_OK, EXIT_MEASUREMENT_FAILED = 0, 1
CPU_SIZE = 256 << 20  # the CPU run is the engine's self-test: a quick host memcpy
TIMING = {"device_copy": {"warmup": 3, "reps": 20}, "host": {"warmup": 2, "reps": 10}}


def register(engines) -> None:
    parser = engines.add_parser(
        "memory", help="copy bandwidth per GPU: device copy, H2D and D2H (pinned, pageable)",
        description="Time dst.copy_(src) on each GPU and across PCIe and print GB/s and % of the "
                    "datasheet peak (memory bandwidth for the device copy, PCIe per direction otherwise).")
    parser.add_argument("--device", default=None,
                        help="cuda (every visible GPU), cuda:N or cpu (default: cuda when a GPU is visible, else cpu)")
    parser.add_argument("--size", default=None,
                        help="bytes per copy, binary units: 512M, 2G, 2GiB (default: 2G device copy, "
                             "1G host copies; 256M on the CPU)")
    parser.add_argument("--kinds", default="all",
                        help=f"comma-separated among {', '.join(engine.KINDS)}, or all (default: all)")
    parser.add_argument("--reps", type=int, default=None, help="timed copies (default: 20 device, 10 host)")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    parser.set_defaults(run=run)


def parse_size(text: str) -> int:
    """'2G', '512M', '2GiB', '4096' → bytes (K, M, G, T are powers of 1024, as nccl-tests reads them)."""
    try:
        size = units.parse_size(text)
    except ValueError:
        raise CommandError(f"--size {text!r}: expected a byte count like 4096, 512M or 2G") from None
    if size < engine.PATTERN_BYTES:
        raise CommandError(f"--size {text!r}: at least {engine.PATTERN_BYTES} bytes")
    return size


def _kinds(text: str) -> list[str]:
    names = list(engine.KINDS) if text == "all" else [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in names if k not in engine.KINDS]
    if unknown or not names:
        raise CommandError(f"unknown copy kind {', '.join(unknown) or repr(text)} (valid: {', '.join(engine.KINDS)}, all)")
    return names


def _devices(text: str | None) -> list[str]:
    if text == "cuda":
        return cuda_devices(text)
    device = check_device(text)
    return cuda_devices("cuda") if text is None and device != "cpu" else [device]


def _size_for(kind: str, device: str, size: int | None) -> int:
    if size is not None:
        return size
    if device == "cpu":
        return CPU_SIZE
    return engine.DEVICE_COPY_BYTES if kind == "device_copy" else engine.HOST_COPY_BYTES


def run(args) -> int:
    from .core import measure
    size = parse_size(args.size) if args.size else None
    kinds = _kinds(args.kinds)
    if args.reps is not None and args.reps < 1:
        raise CommandError("--reps must be >= 1")
    devices = _devices(args.device)
    rows = []
    for device in devices:
        name, spec = gpu_spec(device)
        if not args.json:
            _print_header(device, name, spec)
        for kind in kinds:
            timing = dict(TIMING["device_copy" if kind == "device_copy" else "host"])
            if args.reps is not None:
                timing["reps"] = args.reps
            bench = engine.MemoryCopy(kind, _size_for(kind, device, size))
            result = measure(bench, device, **timing)
            peak = engine.datasheet_peak(kind, spec)
            median = result.median_s
            rows.append({
                "kind": kind, "device": device, "size_bytes": result.params["size_bytes"],
                "bytes": engine.bytes_per_iteration(kind, result.params["size_bytes"]),
                "time_us": median * 1e6 if median else None, "gbps": result.gbps,
                "pct_of_peak": 100.0 * result.gbps / peak if result.gbps is not None and peak else None,
                "status": result.status, "error": result.error,
            })
            if not args.json:
                _print_row(rows[-1])
    if args.json:
        print(json.dumps(rows, indent=2))
    return EXIT_MEASUREMENT_FAILED if any(r["status"] == "error" for r in rows) else EXIT_OK


_FORMAT = "{:<13} {:>9} {:>10} {:>9} {:>7}  {}"


def _print_header(device: str, name: str, spec) -> None:
    if device == "cpu":
        peak = "no datasheet peak on the CPU"
    else:
        peak = (f"datasheet {spec.model}: memory {spec.memory_gbps:,.0f} GB/s, PCIe Gen{spec.pcie_gen} "
                f"{spec.pcie_gbps:,.0f} GB/s per direction") if spec else datasheet.no_entry_note(name)
    print(f"# gpucert bench memory on {name if device != 'cpu' else 'cpu'} ({device}): {peak}")
    print(_FORMAT.format("kind", "size", "time us", "GB/s", "% peak", "status"))


def _print_row(row: dict) -> None:
    status = "ok" if row["status"] == "ok" else f"{row['status']}: {row['error']}"
    size = f"{row['size_bytes'] / (1 << 20):,.0f}M"
    print(_FORMAT.format(row["kind"], size, fmt(row["time_us"]), fmt(row["gbps"]), fmt(row["pct_of_peak"]), status))
    sys.stdout.flush()
