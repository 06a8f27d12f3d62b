"""A real Ray cluster of several nodes on this machine for the self-tests (ray.cluster_utils.Cluster:
each node a raylet of its own), shut down after — with a check that no raylet outlived it."""

from __future__ import annotations

import contextlib
import fcntl
import signal
import socket
import time
from pathlib import Path

import pytest

from gpucert.fleet.nodes import short_names

# each node's object store: Ray's default (30 % of RAM per node) would not fit several on a small box
OBJECT_STORE_BYTES = 80 * 1024 * 1024


@contextlib.contextmanager
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory):
    """A test's cluster waits its turn across the xdist workers of one run (a lock in the run's
    shared temporary folder): two clusters of four nodes starting their actors and ranks at once
    beside the CPU model's tests, on CI's two cores, once kept a sweep's first rows from coming
    within 180 s, where one alone takes ~15 s. Only for a cluster of one test: a module's cluster
    would hold the lock while its worker waits for more tests, and another worker wait on it."""
    with open(tmp_path_factory.getbasetemp().parent / "gpucert-ray-cluster.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextlib.contextmanager
def cluster_for_one_test(count: int, tmp_path_factory: pytest.TempPathFactory, **node_args):
    """local_cluster for one test, taking its turn."""
    with one_at_a_time(tmp_path_factory), local_cluster(count, **node_args) as cluster:
        yield cluster


@contextlib.contextmanager
def local_cluster(count: int, **node_args):
    """`count` nodes (the head included), each with `node_args` (resources, num_gpus, …) on top of
    one CPU and a small object store."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    import ray
    # ray.init in this process (a test that connects, as gpucert's session does) installs its own
    # SIGTERM and SIGINT handlers and leaves them after shutdown: the next test on this xdist
    # worker would find them (the engine lifecycle installs its own only over the default)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    node_args = {"num_cpus": 1, "object_store_memory": OBJECT_STORE_BYTES, **node_args}
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    raylets = []
    try:
        for _ in range(count - 1):
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        raylets = [p.process for node in cluster.list_all_nodes() for p in node.all_processes.get("raylet", [])]
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert all(raylet.poll() is not None for raylet in raylets), "a raylet outlived the cluster"


def processes_running(marker: str, within_s: float) -> list[str]:
    """Command lines of processes naming `marker` still there after `within_s` (read from /proc)."""
    deadline = time.monotonic() + within_s
    while True:
        found = []
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in args:
                found.append(args)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.5)


def node_names(cluster) -> dict[str, str]:
    """node id → the name the fleet gives it (fleet.nodes.short_names over Ray's hostname and node id)."""
    return short_names([(socket.gethostname(), node.node_id) for node in cluster.list_all_nodes()])
