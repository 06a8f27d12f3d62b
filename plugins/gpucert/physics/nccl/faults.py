"""Fault injection for the self-tests (test hooks; inert unless the variable is set).

GPUCERT_NCCL_FAULT holds one or more comma-separated faults, `kind:key=value:…`:

    corrupt:rank=1:op=all_reduce      after the data-check collective, rank 1 adds 1 to the first
                                      3 elements of its result (so the wrong-element count is > 0)
    hang:rank=1:op=all_gather         rank 1 sleeps forever before the first all_gather, so its
                                      peers block in the collective (the sweep's stall timeout)
    crash:rank=1:op=reduce            rank 1 raises before the first reduce (a rank that dies)

Keys: rank (required), op (default: any), bytes (default: any size). The worker reads the variable;
the sweep parses it before launching so a typo is an error, not a silently healthy run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .formulas import OPS

ENV = "GPUCERT_NCCL_FAULT"
KINDS = ("corrupt", "hang", "crash")
CORRUPTED_ELEMENTS = 3


@dataclass(frozen=True)
class Fault:
    kind: str
    rank: int
    op: str | None = None
    nbytes: int | None = None

    def applies(self, kind: str, rank: int, op: str, nbytes: int) -> bool:
        return (self.kind == kind and self.rank == rank and self.op in (None, op)
                and self.nbytes in (None, nbytes))


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
            if not sep or key not in ("rank", "op", "bytes"):
                raise ValueError(f"{ENV}: bad field {pair!r} in {spec!r} (expected rank=N, op=NAME, bytes=N)")
            fields[key] = value
        if "rank" not in fields:
            raise ValueError(f"{ENV}: {spec!r} names no rank")
        if fields.get("op") not in (None, *OPS):
            raise ValueError(f"{ENV}: unknown op {fields['op']!r} in {spec!r}")
        faults.append(Fault(kind, int(fields["rank"]), fields.get("op"),
                            int(fields["bytes"]) if "bytes" in fields else None))
    return faults


def from_env() -> list[Fault]:
    return parse(os.environ.get(ENV))
