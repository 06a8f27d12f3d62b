"""One rank of the sweep: `python -m gpucert.physics.nccl.worker CONFIG.json RANK`.

sweep.py starts one fresh interpreter per rank (never a fork after CUDA init), with RANK,
WORLD_SIZE and LOCAL_RANK set, and the sockets of gloo/NCCL pinned to loopback; the ranks meet
through a FileStore (the config's `rendezvous` file), not torch's TCPStore, which would listen on
every interface (sweep.rank_environment says why); across nodes (gpucert.fleet.nccl_ranks) there
is no shared folder, and `rendezvous` is the tcp://IP:PORT of the store rank 0's actor serves.
The rank writes its progress as JSON lines to rank<R>.jsonl beside the config: `ready` once
initialized, `start` before each size, `row` (rank 0 only) after each size, `done` at the end. A
failure is not caught: the traceback goes to stderr, the exit status is non-zero, and the sweep
stops the other ranks.

Per size: warm-up, then the timed iterations through core.time_op (the one timing loop), then a
data check; every rank sends its per-iteration times and wrong-element count to the others and
rank 0 writes the row.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import torch
import torch.distributed as dist

from gpucert.physics import core

from . import collectives, faults, rows
from .formulas import element_size

# the first timed iterations also estimate the time per iteration, from which all ranks agree on
# how many more fit the size's budget; never fewer than MIN_REPS (baselines need 3 samples)
ESTIMATE_REPS = 2
MIN_REPS = 3
# sizes up to this run for less than ~1 ms, where torch's per-call host path (~50 µs) and its
# jitter show in eager timing (seen on 2x H100: 2-32 MiB rows varied 15-50 % between runs): timed
# as CUDA graph replays of GRAPH_BATCH collectives each, free of host gaps. Larger sizes are
# timed eagerly, as nccl-tests does; there the host path is under 1 % of the time.
GRAPH_MAX_BYTES = 256 << 20
GRAPH_BATCH = 20
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class Events:
    """Append-only JSON lines the sweep polls; each line is flushed as it is written."""

    def __init__(self, path: Path):
        self._file = path.open("a", encoding="utf-8")

    def write(self, event: str, **fields) -> None:
        self._file.write(json.dumps({"event": event, "t": time.time(), **fields}) + "\n")
        self._file.flush()


def init(backend: str, rank: int, nranks: int, timeout_s: float, rendezvous: str) -> tuple[str, dict]:
    """Join the process group through `rendezvous` (a FileStore path, or tcp://IP:PORT across
    nodes); returns the device string and what the rank runs on."""
    timeout = timedelta(seconds=timeout_s)
    # across nodes: a store rank 0's actor serves (fleet/nccl_ranks.py); every rank, 0 too, a client
    if "://" in rendezvous:
        where = urlsplit(rendezvous)
        store = dist.TCPStore(where.hostname, where.port, world_size=nranks, is_master=False, timeout=timeout)
        join = {"store": store}
    else:
        join = {"init_method": Path(rendezvous).as_uri()}
    info = {"torch": torch.__version__, "host": socket.gethostname(), "pid": os.getpid()}
    if backend == "nccl":
        # LOCAL_RANK: this rank's GPU among those visible (a Ray actor sees only its own: 0)
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
        # device_id makes the communicator initialize here (eagerly), not inside the first timed op
        dist.init_process_group("nccl", **join, rank=rank, world_size=nranks,
                                timeout=timeout, device_id=torch.device(device))
        info.update(device=torch.cuda.get_device_name(local), cuda=torch.version.cuda,
                    nccl=_nccl_version(),
                    nccl_nvls_enable=os.environ.get("NCCL_NVLS_ENABLE"))
    else:
        device = "cpu"
        dist.init_process_group("gloo", **join, rank=rank, world_size=nranks,
                                timeout=timeout)
    dist.barrier()
    return device, info


def _nccl_version() -> str:
    version = torch.cuda.nccl.version()  # a tuple in recent torch, one integer in old builds
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def agreed_max(value: float, device: str) -> float:
    """The largest of every rank's value, so all ranks take the same decision."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def gather_floats(values: list[float], device: str, nranks: int) -> list[list[float]]:
    t = torch.tensor(values, dtype=torch.float64, device=device)
    parts = [torch.empty_like(t) for _ in range(nranks)]
    dist.all_gather(parts, t)
    return [p.tolist() for p in parts]


def eager_timing(device: str) -> str:
    """How core.time_op times one eager call on `device`, as the row's note says it: CUDA events on
    a GPU; on the CPU (gloo) the host's perf_counter around the call, which returns when this
    rank's part of the collective is done — no CUDA event anywhere, so the note must not claim one."""
    if core.is_cuda(device):
        return "eager, CUDA events per call"
    return "eager, host wall clock (perf_counter) around each blocking call"


def time_case(case: collectives.Case, device: str, warmup: int, iters: int, budget_s: float,
              graph_batch: int = 0) -> tuple[list[float], str]:
    """(per-collective seconds, how they were timed). Every rank must run the same number of
    collectives, so the time budget cannot be a per-rank deadline (a rank that stopped early
    would leave its peers waiting forever); the ranks agree on the count after the first
    iterations. With `graph_batch`, each sample is one replay of a CUDA graph of that many
    collectives, divided by the batch: small messages then measure NCCL, not torch's ~50 µs
    host path per call (nccl-tests launches from C and is not host-bound there)."""
    run, batch, how = case.run, 1, eager_timing(device)
    if graph_batch:
        for _ in range(warmup):
            case.run()
        try:
            replay, error = core.capture_graph(case.run, device, graph_batch), ""
        except RuntimeError as exc:
            replay, error = None, str(exc).splitlines()[0]
        # one rank replaying graphs while another runs eagerly would mismatch the collectives
        if agreed_max(0.0 if replay else 1.0, device) == 0.0:
            run, batch, how = replay, graph_batch, f"CUDA graph of {graph_batch} calls per sample"
        else:
            how = f"{how} (graph capture failed on a rank{': ' + error if error else ''})"
    first = min(ESTIMATE_REPS, iters)
    samples, _ = core.time_op(run, device, warmup=warmup, reps=first, max_time_s=math.inf)
    per_iteration = agreed_max(max(samples), device)
    fit = int(budget_s / per_iteration) if per_iteration > 0 else iters
    total = max(min(MIN_REPS, iters), min(iters, fit))
    if total > first:
        more, _ = core.time_op(run, device, warmup=0, reps=total - first, max_time_s=math.inf)
        samples += more
    return [s / batch for s in samples], how


def check_case(case: collectives.Case, device: str, corrupt: bool) -> int:
    """nccl-tests' check: fresh inputs, poisoned outputs, one more collective, compare."""
    case.prepare()
    case.run()
    core.synchronize(device)
    if corrupt:
        case.corrupt(faults.CORRUPTED_ELEMENTS)
    return case.count_wrong()


def run_size(config: dict, buffers: collectives.Buffers, device: str, op: str, count: int, nbytes: int,
             active: list[faults.Fault]) -> dict | None:
    rank, nranks = buffers.rank, buffers.nranks
    nodes = config.get("nodes")  # each rank's node, in a sweep across nodes

    def planted(kind: str) -> list[faults.Fault]:
        return [f for f in active if f.applies(kind, rank, op, nbytes, nodes)]
    if planted("hang"):
        while True:  # test hook: a rank that never joins the collective
            time.sleep(3600)
    if planted("crash"):
        raise RuntimeError(f"injected crash on rank {rank} before {op} at {nbytes} B ({faults.ENV})")
    case = collectives.BUILDERS[op](buffers, count)
    case.prepare()
    graph_batch = GRAPH_BATCH if core.is_cuda(device) and nbytes <= GRAPH_MAX_BYTES else 0
    delay_s = sum(f.ms for f in planted("slow")) / 1e3
    if delay_s:  # test hook: a slow node or link, on eager timing only (a graph replay skips Python)
        case.run, graph_batch = faults.slowed(case.run, delay_s), 0
    samples, how = time_case(case, device, config["warmup"], config["iters"], config["size_budget_s"], graph_batch)
    wrong = check_case(case, device, bool(planted("corrupt")))
    gathered = gather_floats(samples + [float(wrong)], device, nranks)
    if rank != 0:
        return None
    note = f"{case.call}; {how}"
    if len(samples) < config["iters"]:
        note += f"; {len(samples)} of {config['iters']} iterations fit the {config['size_budget_s']:g} s size budget"
    return rows.measured(op, count, nbytes, config["dtype"], nranks,
                         [g[:-1] for g in gathered], [int(g[-1]) for g in gathered], note)


def main(argv: list[str]) -> int:
    # NVLink SHARP (multicast) stays off unless the caller chose otherwise; NCCL reads its
    # environment when the communicator is created, in init() below
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    config_path, rank = Path(argv[1]), int(argv[2])
    config = json.loads(config_path.read_text())
    nranks = config["nproc"]
    events = Events(config_path.parent / f"rank{rank}.jsonl")
    where = "startup"
    try:
        active = faults.from_env()
        device, info = init(config["backend"], rank, nranks, config["pg_timeout_s"],
                            config["rendezvous"])
        dtype = DTYPES[config["dtype"]]
        elements = max((nbytes for _, _, nbytes in config["plan"]), default=0) // element_size(config["dtype"])
        # allocated once for the largest size; every size is a slice of these
        buffers = collectives.Buffers(rank, nranks, torch.empty(elements, dtype=dtype, device=device),
                                      torch.empty(elements, dtype=dtype, device=device))
        if config.get("nodes"):  # across nodes: the rank's node, as the cluster names it
            info["node"] = config["nodes"][rank]
        events.write("ready", **info)
        for op, count, nbytes in config["plan"]:
            where = f"{op} at {nbytes} B"
            events.write("start", op=op, bytes=nbytes)
            row = run_size(config, buffers, device, op, count, nbytes, active)
            if row is not None:
                events.write("row", row=row)
    except BaseException as exc:
        # the time stamp tells the sweep which rank failed first (its peers fail after it);
        # the traceback still goes to stderr
        events.write("error", error=f"{type(exc).__name__}: {exc}", where=where)
        raise
    events.write("done")
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
