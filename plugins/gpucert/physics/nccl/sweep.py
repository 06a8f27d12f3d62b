"""Run a sweep: plan the rows, start one process per rank, collect rank 0's rows, and stop every
rank when one hangs or dies.

Timeouts, all enforced here in the parent (a rank blocked inside a collective cannot time itself
out): `startup_timeout_s` until every rank joined the process group, `stall_timeout_s` for one
size (no progress from rank 0 for that long means a rank hangs or a peer never joined the
collective), `timeout_s` for the whole sweep. On any of them, or when a rank dies, every rank's
process group gets SIGTERM, then SIGKILL; rows finished before stay, the others say `timeout`
(or `error`, for a crash) with the reason.

Where the ranks run is a `Ranks` object: `LocalRanks` starts one process per rank on this host;
gpucert.fleet.nccl_ranks starts them across the nodes of a Ray cluster, one actor per GPU. The
timeouts, the rows and the naming of a failed rank are the same for both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpucert import gpus, process_group

from . import faults, formulas, rows

POLL_S = 0.05
TERM_GRACE_S = 5.0  # SIGTERM → SIGKILL
EXIT_GRACE_S = 30.0  # after rank 0 is done, time for the others to leave destroy_process_group
BACKENDS = ("nccl", "gloo")
SOCKET_IFNAME_ENV = "GPUCERT_SOCKET_IFNAME"  # the interface of the ranks' sockets; default lo
LOOPBACK_IFNAME = "lo"
_IFNAME_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
# a TCP rendezvous the caller's environment could ask for; the ranks use a FileStore instead
_RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE")


class SweepError(ValueError):
    """The sweep cannot start as asked (unknown op, too few ranks or GPUs); one line."""


@dataclass(frozen=True)
class SweepConfig:
    backend: str = "nccl"
    nproc: int = 2
    ops: tuple[str, ...] = formulas.OPS
    sizes: tuple[int, ...] = formulas.HARDWARE_SIZES  # requested sizes; rows carry nccl-tests' rounding
    dtype: str = "float32"
    warmup: int = 5
    iters: int = 20
    size_budget_s: float = 1.0  # timed iterations of one size stop near this (never below 3)
    timeout_s: float = 600.0  # the whole sweep, startup included
    stall_timeout_s: float = 60.0  # one size
    startup_timeout_s: float = 180.0  # interpreter, CUDA and communicator start


@dataclass
class SweepResult:
    config: SweepConfig
    rows: list[dict[str, Any]]
    status: str  # ok | error | timeout: how the run ended (data errors are in the rows)
    error: str | None = None
    ranks: list[dict[str, Any]] = field(default_factory=list)  # what each rank ran on
    notes: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok" and all(r["status"] == "ok" for r in self.rows)

    def row(self, op: str, size: int) -> dict[str, Any] | None:
        """The row of `op` at a requested size (rounded as nccl-tests rounds it)."""
        _, nbytes = formulas.op_count(op, size, self.config.nproc, formulas.element_size(self.config.dtype))
        return next((r for r in self.rows if r["op"] == op and r["bytes"] == nbytes), None)

    def to_dict(self) -> dict[str, Any]:
        config = asdict(self.config)
        return {"backend": config.pop("backend"), "nproc": config.pop("nproc"), "dtype": config.pop("dtype"),
                "status": self.status, "error": self.error, **config, "ranks": self.ranks,
                "notes": self.notes, "wall_s": self.wall_s, "rows": self.rows}


def validate(config: SweepConfig, local: bool = True) -> SweepConfig:
    """Reject what cannot run, with one line naming it; returns the config with a canonical dtype.
    `local`: the ranks run here, so this host must have the GPUs (a cluster's are counted by its launcher)."""
    if config.backend not in BACKENDS:
        raise SweepError(f"unknown backend {config.backend!r} (valid: {', '.join(BACKENDS)})")
    unknown = [op for op in config.ops if op not in formulas.OPS]
    if unknown:
        raise SweepError(f"unknown op {unknown[0]!r} (valid: {', '.join(formulas.OPS)})")
    if not config.ops:
        raise SweepError("no op to run")
    if config.nproc < 2:
        raise SweepError(f"nproc must be >= 2 (a collective needs two ranks), got {config.nproc}")
    if config.iters < 1 or config.warmup < 0:
        raise SweepError(f"need iters >= 1 and warmup >= 0, got {config.iters} and {config.warmup}")
    try:
        dtype = formulas.canonical_dtype(config.dtype)
        faults.from_env()
    except ValueError as err:
        raise SweepError(str(err)) from None
    _check_backend(config.backend, config.nproc if local else 0)
    return SweepConfig(**{**asdict(config), "dtype": dtype, "ops": tuple(config.ops), "sizes": tuple(config.sizes)})


def _check_backend(backend: str, nproc: int) -> None:
    """This host can run `nproc` ranks of `backend` (0: the ranks run elsewhere, nothing to ask here)."""
    import torch
    import torch.distributed as dist

    if backend == "gloo":
        if not dist.is_available() or not dist.is_gloo_available():
            raise SweepError(f"this PyTorch {torch.__version__} has no gloo backend")
        return
    if not nproc:
        return
    found = gpus.count()
    if found < nproc:
        raise SweepError(f"--backend nccl needs {nproc} CUDA devices, found {found}")
    if not dist.is_nccl_available():
        raise SweepError(f"this PyTorch {torch.__version__} has no NCCL backend")


def plan(config: SweepConfig) -> list[tuple[str, int, int]]:
    """(op, count, bytes) in run order: op by op, sizes ascending. A size that rounds to 0 bytes
    for this rank count is left out, and one that rounds onto a previous size is run once."""
    elsize = formulas.element_size(config.dtype)
    planned: list[tuple[str, int, int]] = []
    for op in config.ops:
        seen = set()
        for size in sorted(config.sizes):
            count, nbytes = formulas.op_count(op, size, config.nproc, elsize)
            if nbytes and nbytes not in seen:
                seen.add(nbytes)
                planned.append((op, count, nbytes))
    return planned


class Ranks(Protocol):
    """The ranks of one sweep, wherever they run."""

    poll_s: float

    def collect(self, offsets: list[int]) -> list[bytes]:
        """Every rank's event lines from its offset on (and the exit codes, refreshed)."""

    def exit_codes(self) -> list[int | None]:
        """Per rank: None while it runs, else its exit status (negative: the signal)."""

    def wait(self, rank: int, timeout_s: float) -> int | None:
        """The rank's exit status once it has one, None after `timeout_s`."""

    def log_tail(self, rank: int, lines: int) -> str:
        """The last lines the rank printed, or why there are none."""

    def label(self, rank: int) -> str:
        """How the errors name the rank: "rank 1", "rank 1 (node gpu-07)"."""

    def gone(self) -> list[int]:
        """Ranks whose host is gone (a node of a cluster): the cause, whatever their peers said."""

    def stop(self) -> None:
        """End every rank and all it started, SIGTERM then SIGKILL."""


RankLauncher = Callable[[SweepConfig, dict[str, Any], Path], Ranks]


def run(config: SweepConfig, launch: RankLauncher | None = None) -> SweepResult:
    """Validate, run every rank, and return the rows (never raises for what happens in a rank).
    `launch` starts the ranks from the sweep's config document (LocalRanks: here, one process each)."""
    config = validate(config, local=launch is None)
    planned = plan(config)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpucert-nccl-") as tmp:
        folder = Path(tmp)
        document = {**asdict(config), "plan": planned,
                    # backstop for a rank whose parent is gone; the parent's own timeouts come first
                    "pg_timeout_s": max(config.startup_timeout_s, config.stall_timeout_s) + 30}
        env_notes: list[str] = []
        ranks = None
        try:
            if launch is None:
                env, env_notes = rank_environment(dict(os.environ))
                ranks = LocalRanks(config, document, folder, env)
            else:
                ranks = launch(config, document, folder)
            watch = _Watch(ranks, config.nproc)
            stop = _monitor(config, ranks, watch, started)
        except SweepError as exc:  # the ranks could not be placed or started (a cluster's answer)
            watch, stop = _Watch(None, config.nproc), _Stop("error", str(exc))
        finally:
            # also on KeyboardInterrupt: no rank (nor what it started) outlives the sweep
            if ranks is not None:
                ranks.stop()
        watch.poll()  # a row written while the ranks were being stopped still counts
        measured = {(r["op"], r["bytes"]): r for r in watch.rows}
        result = SweepResult(config, _complete(planned, measured, config.dtype, stop), stop.status,
                             stop.error, [watch.info.get(r, {}) for r in range(config.nproc)],
                             env_notes + stop.notes)
    result.wall_s = time.monotonic() - started
    return result


def rank_environment(inherited: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The ranks' environment and the notes it is worth: every socket they open stays on loopback.

    Every rank runs on this host, so nothing needs to be reachable from another machine: the
    rendezvous is a FileStore in the sweep's private folder (worker.py; no TCPStore, which
    listens on all interfaces whatever MASTER_ADDR says), and gloo's and NCCL's own transport
    sockets are pinned to `lo`. An inherited GLOO_/NCCL_SOCKET_IFNAME (cluster images often set
    one for eth0/ib0) is replaced, not kept, since it would open listeners on that interface;
    GPUCERT_SOCKET_IFNAME is the one override (for later multi-node work)."""
    env = {k: v for k, v in inherited.items() if k not in _RENDEZVOUS_VARIABLES}
    ifname = inherited.get(SOCKET_IFNAME_ENV) or LOOPBACK_IFNAME
    notes = [f"{name}={inherited[name]} in the environment ignored: the ranks' sockets use {ifname} "
             f"(set {SOCKET_IFNAME_ENV} to choose another interface)"
             for name in _IFNAME_VARIABLES if inherited.get(name) not in (None, ifname)]
    env.update({name: ifname for name in _IFNAME_VARIABLES})
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off unless the caller chose
    env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: ranks must not fight over the cores
    return env, notes


class LocalRanks:
    """Every rank a process on this host, meeting through a FileStore in the sweep's folder."""

    poll_s = POLL_S

    def __init__(self, config: SweepConfig, document: dict[str, Any], folder: Path, env: dict[str, str]):
        self.folder = folder
        config_file = folder / "config.json"
        # the rendezvous: a FileStore in this private (0700) folder, so no TCP listener at all
        config_file.write_text(json.dumps({**document, "rendezvous": str(folder / "rendezvous")}))
        env = {**env, "WORLD_SIZE": str(config.nproc), "LOCAL_WORLD_SIZE": str(config.nproc)}
        self.procs: list[subprocess.Popen] = []
        for rank in range(config.nproc):
            log = (folder / f"rank{rank}.log").open("wb")
            # a fresh interpreter per rank (never a fork after CUDA init), in its own process group
            # so a hung rank and anything it started can be killed together
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "gpucert.physics.nccl.worker", str(config_file), str(rank)],
                env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()

    def collect(self, offsets: list[int]) -> list[bytes]:
        return [read_from(self.folder / f"rank{rank}.jsonl", offset) for rank, offset in enumerate(offsets)]

    def exit_codes(self) -> list[int | None]:
        return [p.poll() for p in self.procs]

    def wait(self, rank: int, timeout_s: float) -> int | None:
        try:
            return self.procs[rank].wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, rank: int, lines: int) -> str:
        return tail_of(self.folder / f"rank{rank}.log", lines)

    def label(self, rank: int) -> str:
        return f"rank {rank}"

    def gone(self) -> list[int]:
        return []  # this host runs the sweep: it is not gone

    def stop(self) -> None:
        process_group.stop_groups(self.procs, TERM_GRACE_S)


def read_from(path: Path, offset: int) -> bytes:
    """A file's bytes from `offset` on (nothing yet: b"")."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read()
    except FileNotFoundError:
        return b""


def tail_of(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no output)"
    tail = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
    return _clip(" | ".join(tail) or "(no output)")


class _Watch:
    """Reads every rank's event lines as they grow."""

    def __init__(self, ranks: Ranks | None, nranks: int):
        self.ranks = ranks
        self.offsets = [0] * nranks
        self.rows: list[dict[str, Any]] = []
        self.info: dict[int, dict[str, Any]] = {}
        self.position: dict[int, str] = {}  # the size each rank last started
        self.errors: dict[int, dict[str, Any]] = {}
        self.ready: set[int] = set()
        self.done = False

    def poll(self) -> bool:
        """Read new lines; True when rank 0 made progress."""
        if self.ranks is None:
            return False
        progressed = False
        for rank, data in enumerate(self.ranks.collect(self.offsets)):
            complete = data[:data.rfind(b"\n") + 1]  # a line still being written waits for the next poll
            self.offsets[rank] += len(complete)
            for line in complete.splitlines():
                if not line.strip():
                    continue
                event = json.loads(line)
                kind = event["event"]
                if kind == "ready":
                    self.ready.add(rank)
                    self.info[rank] = {k: v for k, v in event.items() if k not in ("event", "t")}
                elif kind == "start":
                    self.position[rank] = f"{event['op']} at {event['bytes']} B"
                elif kind == "row":
                    self.rows.append(event["row"])
                elif kind == "error":
                    self.errors[rank] = event
                elif kind == "done" and rank == 0:
                    self.done = True
                progressed |= rank == 0
        return progressed


def _clip(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


@dataclass
class _Stop:
    status: str = "ok"
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def _monitor(config: SweepConfig, ranks: Ranks, watch: _Watch, started: float) -> _Stop:
    last_progress = started
    exit_deadline = None
    while True:
        now = time.monotonic()
        if watch.poll():
            last_progress = now
        codes = ranks.exit_codes()
        if watch.done:
            if all(c is not None for c in codes):
                return _Stop(notes=[f"rank {r} exited with status {c} after the sweep finished"
                                    for r, c in enumerate(codes) if c])
            exit_deadline = exit_deadline or now + EXIT_GRACE_S
            if now > exit_deadline:
                return _Stop(notes=[f"ranks still running {EXIT_GRACE_S:g} s after the sweep finished "
                                    "(destroy_process_group hung): stopped"])
        elif any(c is not None and c != 0 for c in codes):
            time.sleep(0.5)  # let the other ranks' failures land, to name the first one
            watch.poll()
            return _crashed(ranks, watch)
        elif all(c is not None for c in codes):
            return _Stop("error", "every rank exited without finishing the sweep")
        elif len(watch.ready) < config.nproc and now - started > config.startup_timeout_s:
            missing = ", ".join(ranks.label(r) for r in sorted(set(range(config.nproc)) - watch.ready))
            return _Stop("timeout", f"{missing} not ready after "
                                    f"{config.startup_timeout_s:g} s (interpreter, CUDA or process-group start)")
        elif len(watch.ready) == config.nproc and now - last_progress > config.stall_timeout_s:
            where = watch.position.get(0)
            return _Stop("timeout", f"no progress for {config.stall_timeout_s:g} s in {where} (a rank hangs or "
                                    f"never joined the collective; {_positions(ranks, watch)}); ranks stopped")
        elif now - started > config.timeout_s:
            where = watch.position.get(0)
            return _Stop("timeout", f"sweep budget of {config.timeout_s:g} s spent in {where}; ranks stopped")
        time.sleep(ranks.poll_s)


def _positions(ranks: Ranks, watch: _Watch) -> str:
    return ", ".join(f"{ranks.label(r)} last started {pos}" for r, pos in sorted(watch.position.items()))


CRASH_EXIT_WAIT_S = 5.0


def _crashed(ranks: Ranks, watch: _Watch) -> _Stop:
    """Name the rank that failed first: the earliest error event, else the first non-zero exit."""
    failed = [r for r, code in enumerate(ranks.exit_codes()) if code not in (None, 0)]
    reported = sorted((e["t"], r) for r, e in watch.errors.items())
    # a rank whose node is gone cannot report; its peers' errors (connection reset) follow from it
    gone = ranks.gone()
    rank = gone[0] if gone else reported[0][1] if reported else failed[0]
    # a rank that reported its error may still be tearing down: let its exit status land
    code = ranks.wait(rank, CRASH_EXIT_WAIT_S)
    event = watch.errors.get(rank)
    where = event.get("where") if event else watch.position.get(rank)
    text = _clip(event["error"]) if event else ranks.log_tail(rank, 3)
    status = f"status {code}" if code is not None and code >= 0 else f"signal {-code}" if code else "an error"
    error = f"{ranks.label(rank)} failed ({status}) in {where or 'startup'}: {text}"
    others = [str(r) for r in failed if r != rank]
    if others:
        error += f" (then rank {', '.join(others)} failed too)"
    return _Stop("error", error)


def _complete(planned: list[tuple[str, int, int]], measured: dict, dtype: str, stop: _Stop) -> list[dict]:
    """Every planned row, in plan order: measured ones as they came, the rest with why not."""
    out = []
    stopped_at = None
    for op, count, nbytes in planned:
        row = measured.get((op, nbytes))
        if row is not None:
            out.append(row)
            continue
        status = "timeout" if stop.status == "timeout" else "error"
        reason = stop.error or "rank 0 finished without this row"
        if stopped_at is None:
            stopped_at = f"{op} at {nbytes} B"
            out.append(rows.unmeasured(op, count, nbytes, dtype, status, f"{status}: {reason}"))
        else:
            out.append(rows.unmeasured(op, count, nbytes, dtype, status,
                                       f"{status}: not run, the sweep stopped at {stopped_at}"))
    return out
