"""NCCL (and gloo) collectives swept over sizes, measured the way nccl-tests measures them.

    formulas.py     sizes, counts, algbw/busbw factors (nccl-tests doc/PERFORMANCE.md)
    collectives.py  one function per collective: buffers, torch call, expected result
    rows.py         the row every size produces (measured or not)
    worker.py       one process per rank (python -m gpucert.physics.nccl.worker)
    sweep.py        launches the ranks, collects rows, enforces the timeouts
    peak.py         the NVLink peak a node's busbw is judged against
    faults.py       fault injection for the self-tests (GPUCERT_NCCL_FAULT)

Importing this package does not import torch; the worker and collectives do.
"""

from ..units import format_size, parse_size
from .formulas import HARDWARE_SIZES, OPS, bus_factor
from .sweep import SweepConfig, SweepError, SweepResult, run

__all__ = ["HARDWARE_SIZES", "OPS", "SweepConfig", "SweepError", "SweepResult", "bus_factor",
           "format_size", "parse_size", "run"]
