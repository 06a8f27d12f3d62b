"""Fault injection for the self-tests (test hooks; inert unless the variable is set).

GPUCERT_NCCL_FAULT holds one or more comma-separated faults, `kind:key=value:…`:

    corrupt:rank=1:op=all_reduce      after the data-check collective, rank 1 adds 1 to the first
                                      3 elements of its result (so the wrong-element count is > 0)
    hang:rank=1:op=all_gather         rank 1 sleeps forever before the first all_gather, so its
                                      peers block in the collective (the sweep's stall timeout)
    crash:rank=1:op=reduce            rank 1 raises before the first reduce (a rank that dies)
    slow:node=gpu-07:ms=20            every rank on node gpu-07 waits 20 ms before each timed
                                      eager collective, so its peers wait in it: a slow node
    slow:node=gpu-07:peer=gpu-08:ms=20  the same, only in a group that has a rank on gpu-08: a
                                      slow link between the two (a cross-node sweep's pairs)

A node fault (without peer) also applies in a node's own sweep of a fleet run: there every rank
runs on the node the fleet names in GPUCERT_FLEET_NODE (a slow node, as the fleet median sees it).

Keys: rank or node (one required; node: the names of a fleet's nodes, gpucert.fleet), op
(default: any), bytes (default: any size), peer and ms (slow only). The worker reads the variable;
the sweep parses it before launching so a typo is an error, not a silently healthy run. A bad link
or a sick NIC cannot exist on the self-tests' one host: `slow` stands in for them there.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .formulas import OPS

ENV = "GPUCERT_NCCL_FAULT"
# the node's name in its fleet, which the fleet's runner gives each node's run (gpucert.fleet.runner)
FLEET_NODE_ENV = "GPUCERT_FLEET_NODE"
KINDS = ("corrupt", "hang", "crash", "slow")
KEYS = ("rank", "node", "peer", "op", "bytes", "ms")
CORRUPTED_ELEMENTS = 3


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int | None = None
    op: str | None = None
    nbytes: int | None = None
    node: str | None = None
    peer: str | None = None
    ms: float = 0.0

    def applies(self, kind: str, rank: int, op: str, nbytes: int, nodes: list[str] | None = None) -> bool:
        """`nodes`: the node of every rank of the group (a cross-node sweep), else None (a node's
        own sweep: its ranks are all on the node FLEET_NODE_ENV names, in a fleet run)."""
        if self.kind != kind or self.op not in (None, op) or self.nbytes not in (None, nbytes):
            return False
        if self.node is not None and not nodes:
            return self.peer is None and os.environ.get(FLEET_NODE_ENV) == self.node
        if self.node is not None:
            return nodes[rank] == self.node and (self.peer is None or self.peer in nodes)
        return self.rank == rank


def forwarded_environment() -> dict[str, str]:
    """The hook as a process started elsewhere (a Ray actor on another node) needs it: the driver's
    GPUCERT_NCCL_FAULT, or nothing."""
    return {ENV: os.environ[ENV]} if os.environ.get(ENV) else {}


def parse(text: str | None) -> list[Fault]:
    faults = []
    for spec in (text or "").split(","):
        if not spec.strip():
            continue
        kind, *pairs = spec.strip().split(":")
        if kind not in KINDS:
            raise ValueError(f"{ENV}: unknown fault {kind!r} (valid: {', '.join(KINDS)})")
        fields = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or key not in KEYS:
                raise ValueError(f"{ENV}: bad field {pair!r} in {spec!r} (expected rank=N or node=NAME, "
                                 "op=NAME, bytes=N, and for slow ms=N, peer=NAME)")
            fields[key] = value
        if "rank" not in fields and "node" not in fields:
            raise ValueError(f"{ENV}: {spec!r} names no rank (rank=N) nor node (node=NAME)")
        if fields.get("op") not in (None, *OPS):
            raise ValueError(f"{ENV}: unknown op {fields['op']!r} in {spec!r}")
        if (kind == "slow") != ("ms" in fields) or ("peer" in fields and kind != "slow"):
            raise ValueError(f"{ENV}: {spec!r}: ms=N (and peer=NAME) belong to slow, which needs ms")
        try:
            fault = Fault(kind, int(fields["rank"]) if "rank" in fields else None, fields.get("op"),
                          int(fields["bytes"]) if "bytes" in fields else None, fields.get("node"),
                          fields.get("peer"), float(fields.get("ms", 0)))
        except ValueError:
            raise ValueError(f"{ENV}: {spec!r}: rank, bytes and ms must be numbers") from None
        faults.append(fault)
    return faults


def from_env() -> list[Fault]:
    return parse(os.environ.get(ENV))


def slowed(run, delay_s: float):
    """`run`, waiting `delay_s` before each call (the slow fault)."""
    if delay_s <= 0:
        return run

    def late() -> None:
        time.sleep(delay_s)
        run()
    return late
