"""A real Ray cluster of several nodes on this machine for the self-tests (ray.cluster_utils.Cluster:
each node a raylet of its own), shut down after — with a check that no raylet outlived it."""

from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path

import pytest

# each node's object store: Ray's default (30 % of RAM per node) would not fit several on a small box
OBJECT_STORE_BYTES = 80 * 1024 * 1024


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
