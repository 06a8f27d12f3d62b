"""`gpucert bench <engine>`: run one physics engine by hand and print its table (or --json).

Each engine registers its own sub-subcommand from a `*_cli.py` module listed here, so adding an
engine never touches the others."""

from __future__ import annotations

import importlib

BENCH_MODULES: tuple[str, ...] = (
    "gpucert.physics.nccl_cli",
    "gpucert.physics.gemm_cli",
    "gpucert.physics.memory_cli",
    "gpucert.physics.memtest_cli",
    "gpucert.physics.p2p_cli",
)


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="run one hardware benchmark engine by hand")
    engines = parser.add_subparsers(dest="engine", metavar="ENGINE", required=True)
    for module in BENCH_MODULES:
        importlib.import_module(module).register(engines)
