"""The fleet options, checked in pytest_configure: bad input is one line and exit 4, before any
node is asked to do anything. The connection made here is the session's (ray.init once)."""

from __future__ import annotations

import math
import shlex
from pathlib import Path

import pytest

from .nodes import FleetError, connect

__all__ = ["FleetError", "configure", "nccl_ops", "node_args"]


def node_args(config: pytest.Config) -> list[str]:
    """--fleet-args as an argument list (shell quoting, no shell)."""
    text = config.getoption("--fleet-args", None) or ""
    try:
        args = shlex.split(text)
    except ValueError as exc:
        raise FleetError(f"--fleet-args {text!r} does not parse: {exc}") from None
    if not args:
        raise FleetError("--fleet-args is empty: give the node's pytest arguments, e.g. 'tests/hardware -m hardware'")
    if "--report-dir" in args or any(a.startswith("--report-dir=") for a in args):
        raise FleetError("--fleet-args must not set --report-dir: each node's run writes its own, read back by the driver")
    return args


def nccl_ops(config: pytest.Config) -> tuple[str, ...]:
    """--fleet-nccl-ops as a tuple of known collectives."""
    from gpucert.physics.nccl import OPS

    ops = tuple(op.strip() for op in (config.getoption("--fleet-nccl-ops", None) or "").split(",") if op.strip())
    unknown = [op for op in ops if op not in OPS]
    if unknown or not ops:
        raise FleetError(f"--fleet-nccl-ops: {'unknown collective ' + repr(unknown[0]) if unknown else 'none given'} "
                         f"(valid: {', '.join(OPS)})")
    return ops


def configure(config: pytest.Config) -> None:
    node_args(config)
    nccl_ops(config)
    per_node = config.getoption("--fleet-ranks-per-node", None)
    if per_node is not None and per_node < 1:
        raise FleetError(f"--fleet-ranks-per-node must be at least 1, got {per_node}")
    timeout = config.getoption("--fleet-timeout-min", None)
    if timeout is not None and not (timeout > 0 and math.isfinite(timeout)):
        raise FleetError(f"--fleet-timeout-min must be a positive number of minutes, got {timeout:g}")
    python = config.getoption("--fleet-python", None)
    address = config.getoption("--ray-address", None)
    if address:
        if python and not Path(python).is_absolute():
            raise FleetError(f"--fleet-python must be an absolute path on the nodes, got {python!r}")
        connect(address)
