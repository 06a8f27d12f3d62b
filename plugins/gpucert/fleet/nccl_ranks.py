"""The NCCL sweep's ranks across the nodes of a Ray cluster: one Ray actor per GPU.

Each `RankProcess` actor is pinned to its node (NodeAffinitySchedulingStrategy, soft=False: a rank
must never move to another node) and given one GPU by Ray (CUDA_VISIBLE_DEVICES, so the rank's
device is its LOCAL_RANK 0). It starts the same `python -m gpucert.physics.nccl.worker` the local
sweep starts, in a session of its own, and hands the driver its event lines and exit status; the
driver's sweep (physics/nccl/sweep.py) keeps the timeouts, the rows and the naming of a failed
rank exactly as on one node.

Across nodes there is no shared folder for a FileStore: rank 0's actor serves a TCPStore on a port
the kernel gives it and the ranks meet there as clients, at tcp://IP:PORT (the store listens on
every interface — reachable from the other nodes, which is the point here). Gloo's and NCCL's own
sockets take the interface that carries the node's Ray address unless the node's environment names
one (cluster images set NCCL_SOCKET_IFNAME for their fabric) or GPUCERT_SOCKET_IFNAME is given.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from gpucert import process_group
from gpucert.physics.nccl import faults
from gpucert.physics.nccl.sweep import (SOCKET_IFNAME_ENV, TERM_GRACE_S, SweepConfig, SweepError, read_from,
                                        tail_of)

from .nodes import FleetNode

RAY_POLL_S = 0.2  # one round trip per rank per poll: slower than the local sweep's 50 ms
CALL_TIMEOUT_S = 30.0  # a live actor answers a progress call in milliseconds
_IFNAME_VARIABLES = ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME")
_RENDEZVOUS_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE")
DIED = -9  # the exit status a rank whose actor (or node) is gone is given


class RankProcess:
    """One rank, on its node (a Ray actor)."""

    def __init__(self, python: str, repo: str):
        self.python, self.repo = python, repo
        self.folder = Path(tempfile.mkdtemp(prefix="gpucert-fleet-nccl-"))
        self.proc: subprocess.Popen | None = None
        self.store = None  # the ranks' TCPStore, held for the sweep's life (rendezvous)

    def rendezvous(self) -> str:
        """tcp://IP:PORT of the TCPStore this actor serves for the sweep's ranks, every rank a client.
        The kernel picks the port as the store binds it: a port probed free and bound by rank 0 only
        after its interpreter started could be taken meanwhile (gloo's own listeners, a server
        beside it), and the sweep would fail for no fault of the node."""
        import ray
        from torch.distributed import TCPStore
        ip = ray.util.get_node_ip_address()
        self.store = TCPStore(ip, 0, is_master=True, wait_for_workers=False)
        port = self.store.port
        return f"tcp://[{ip}]:{port}" if ":" in ip else f"tcp://{ip}:{port}"

    def start(self, document: dict[str, Any], rank: int, forwarded: dict[str, str]) -> str:
        import json

        import ray
        config_file = self.folder / "config.json"
        config_file.write_text(json.dumps(document))
        env = rank_environment(dict(os.environ), forwarded, ray.util.get_node_ip_address())
        env.update(RANK=str(rank), WORLD_SIZE=str(document["nproc"]), LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                   PYTHONPATH=os.pathsep.join(p for p in (str(Path(self.repo) / "plugins"), env.get("PYTHONPATH")) if p))
        with open(self.folder / f"rank{rank}.log", "wb") as log:
            # under the fleet's guard: if this actor dies (its node removed, its worker killed) the
            # rank is interrupted and its group killed, not left holding the GPU as an orphan
            self.proc = subprocess.Popen(
                [self.python, "-m", "gpucert.fleet.guard", "--",
                 self.python, "-m", "gpucert.physics.nccl.worker", str(config_file), str(rank)],
                cwd=self.repo, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.rank = rank
        return socket.gethostname()

    def progress(self, offset: int) -> tuple[int | None, bytes]:
        if self.proc is None:
            return None, b""
        return self.proc.poll(), read_from(self.folder / f"rank{self.rank}.jsonl", offset)

    def wait(self, timeout_s: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int) -> str:
        return tail_of(self.folder / f"rank{self.rank}.log", lines) if self.proc else "(not started)"

    def stop(self) -> None:
        """End the rank's process group, then remove its folder: the driver holds the rows and
        has read what it needed of the log (a failed rank's tail is taken before the ranks stop)."""
        if self.proc is not None:
            process_group.stop_groups([self.proc], TERM_GRACE_S)
        shutil.rmtree(self.folder, ignore_errors=True)


def rank_environment(node_env: dict[str, str], forwarded: dict[str, str], node_ip: str) -> dict[str, str]:
    """The rank's environment: its node's own (NCCL_IB_*, the fabric's interface names), no TCP
    rendezvous variables, and what the driver forwards (the fault hook, GPUCERT_SOCKET_IFNAME)."""
    env = {k: v for k, v in node_env.items() if k not in _RENDEZVOUS_VARIABLES}
    env.update(forwarded)
    ifname = forwarded.get(SOCKET_IFNAME_ENV) or interface_of(node_ip)
    for name in _IFNAME_VARIABLES:
        if forwarded.get(SOCKET_IFNAME_ENV) or not env.get(name):
            if ifname:
                env[name] = ifname
    env.setdefault("NCCL_NVLS_ENABLE", "0")  # NVLink multicast off unless the node's image chose
    env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: ranks must not fight over the cores
    return env


def interface_of(ip: str) -> str | None:
    """The network interface that carries `ip` on this host (psutil comes with Ray), or None."""
    import psutil
    for name, addresses in psutil.net_if_addrs().items():
        if any(address.address.split("%")[0] == ip for address in addresses):
            return name
    return None


def forwarded_environment() -> dict[str, str]:
    """What the driver's environment hands every rank: the self-tests' fault hook and the interface
    override (each node's other settings are its own)."""
    ifname = {SOCKET_IFNAME_ENV: os.environ[SOCKET_IFNAME_ENV]} if os.environ.get(SOCKET_IFNAME_ENV) else {}
    return {**faults.forwarded_environment(), **ifname}


class RayRanks:
    """The driver's side: the sweep's `Ranks` over one actor per rank."""

    poll_s = RAY_POLL_S

    def __init__(self, places: list[FleetNode], python: str, repo: str, config: SweepConfig,
                 document: dict[str, Any]):
        import ray
        from ray.exceptions import GetTimeoutError
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.places = places
        self.codes: list[int | None] = [None] * len(places)
        self.lost: dict[int, str] = {}
        # num_cpus=0: the actor only waits on its rank's process; num_gpus=1 for NCCL: Ray hands it
        # one GPU of its node and schedules nothing else there meanwhile
        actor_class = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=4)(RankProcess)
        gpus = 1 if config.backend == "nccl" else 0
        self.actors = [actor_class.options(num_gpus=gpus, scheduling_strategy=NodeAffinitySchedulingStrategy(
            node.node_id, soft=False)).remote(python, repo) for node in places]
        try:
            rendezvous = ray.get(self.actors[0].rendezvous.remote(), timeout=config.startup_timeout_s)
        except GetTimeoutError:
            self.stop()
            raise SweepError(f"rank 0's actor was not placed on node {places[0].name} within "
                             f"{config.startup_timeout_s:g} s (its GPUs busy, or the node gone)") from None
        except ray.exceptions.RayActorError as exc:
            self.stop()
            raise SweepError(f"rank 0's actor on node {places[0].name} died before the sweep: "
                             f"{' '.join(str(exc).split())[:300]}") from None
        document = {**document, "rendezvous": rendezvous, "nodes": [node.name for node in places]}
        forwarded = forwarded_environment()
        # not waited on: a rank whose actor cannot be placed shows as "not ready" at the sweep's
        # startup timeout, named with its node
        self._starts = [actor.start.remote(document, rank, forwarded) for rank, actor in enumerate(self.actors)]

    def collect(self, offsets: list[int]) -> list[bytes]:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        refs = {self.actors[rank].progress.remote(offset): rank for rank, offset in enumerate(offsets)
                if rank not in self.lost}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=CALL_TIMEOUT_S)
        out = [b""] * len(offsets)
        for ref in ready:
            rank = refs[ref]
            try:
                code, out[rank] = ray.get(ref)
            except ActorUnavailableError:
                continue  # a transient loss of contact: asked again next poll
            except RayActorError as exc:
                self.lost[rank] = f"its actor died: {' '.join(str(exc).split())[:300]}"
                code = DIED
            self.codes[rank] = code
        return out

    def exit_codes(self) -> list[int | None]:
        return list(self.codes)

    def wait(self, rank: int, timeout_s: float) -> int | None:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        if rank in self.lost:
            return DIED
        try:
            code = ray.get(self.actors[rank].wait.remote(timeout_s), timeout=timeout_s + CALL_TIMEOUT_S)
        except (GetTimeoutError, RayActorError):
            return self.codes[rank]
        self.codes[rank] = code if code is not None else self.codes[rank]
        return self.codes[rank]

    def log_tail(self, rank: int, lines: int) -> str:
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        if rank in self.lost:
            return self.lost[rank]
        try:
            return ray.get(self.actors[rank].log_tail.remote(lines), timeout=CALL_TIMEOUT_S)
        except (GetTimeoutError, RayActorError) as exc:
            return f"(its log could not be read: {type(exc).__name__})"

    def label(self, rank: int) -> str:
        return f"rank {rank} (node {self.places[rank].name})"

    def gone(self) -> list[int]:
        return sorted(self.lost)

    def stop(self) -> None:
        """Each actor ends its rank's process group (SIGTERM, then SIGKILL), then the actors go."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError

        stops = [actor.stop.remote() for rank, actor in enumerate(self.actors) if rank not in self.lost]
        deadline = time.monotonic() + 2 * TERM_GRACE_S + CALL_TIMEOUT_S
        for ref in stops:
            try:
                ray.get(ref, timeout=max(1.0, deadline - time.monotonic()))
            except (GetTimeoutError, RayActorError):
                pass  # an actor that does not answer is killed below, its rank's session with it
        for actor in self.actors:
            ray.kill(actor, no_restart=True)


def places_for(nodes: list[FleetNode], backend: str, ranks_per_node: int | None = None) -> list[FleetNode]:
    """Rank r's node, node by node (ranks of one node adjacent, so NCCL's ring crosses each node
    boundary once): every GPU of each node for NCCL; `ranks_per_node` (default 1) CPU ranks each for gloo."""
    places = []
    for node in nodes:
        count = ranks_per_node or (node.gpus if backend == "nccl" else 1)
        if backend == "nccl" and count > node.gpus:
            raise SweepError(f"node {node.name} has {node.gpus} GPU(s), {count} NCCL ranks asked")
        places += [node] * count
    return places


def launcher(places: list[FleetNode], python: str, repo: str):
    """The sweep's `launch` argument (physics.nccl.run(config, launch=…)) for these places."""
    def launch(config: SweepConfig, document: dict[str, Any], folder: Path) -> RayRanks:
        if config.nproc != len(places):
            raise SweepError(f"the sweep has {config.nproc} ranks, {len(places)} placed")
        return RayRanks(places, python, repo, config, document)
    return launch
