"""Connecting to a Ray cluster and listing the nodes that can run the node-level checks.

A node qualifies when it has GPUs, or — for CPU rehearsals (the self-tests' local cluster) — the
custom resource `gpucert_node`. Each gets a short name that stays the same between runs (its
hostname), so the driver's checks `test_node[<name>]` line up with the history; several Ray nodes
on one host (a local test cluster) add a piece of their node id to tell them apart.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

REHEARSAL_RESOURCE = "gpucert_node"
# ray.init retries an unreachable GCS for minutes; a plain TCP connect answers in seconds
PROBE_TIMEOUT_S = 5.0


class FleetError(Exception):
    """Bad input or an unreachable cluster: one line for the user, no traceback."""


@dataclass(frozen=True)
class FleetNode:
    name: str
    node_id: str
    host: str
    ip: str
    gpus: int

    def as_dict(self) -> dict:
        return {"name": self.name, "node_id": self.node_id, "host": self.host, "ip": self.ip, "gpus": self.gpus}


def connect(address: str) -> None:
    """ray.init(address=...) after checking the address answers; raises FleetError with the reason."""
    try:
        import ray
    except ImportError:
        raise FleetError("--ray-address needs Ray on the driver (pip install ray)") from None
    if ray.is_initialized():
        return
    _probe(address)
    try:
        # log_to_driver off: the nodes' pytest output goes to their own log, read back by the driver
        ray.init(address=address, logging_level="ERROR", log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise FleetError(f"--ray-address {address}: cannot connect: {exc}") from None


def _probe(address: str) -> None:
    """TCP-connect to the cluster's bootstrap address ("auto" resolved as Ray resolves it)."""
    target = address.removeprefix("ray://")
    if address == "auto":
        target = _auto_address()
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise FleetError(f"--ray-address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise FleetError(f"--ray-address {address}: cannot be reached ({host}:{port}: "
                         f"{exc.strerror or exc})") from None


def _auto_address() -> str:
    from ray._private import services  # the resolution `ray.init("auto")` itself does
    try:
        found = services.canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError) as exc:
        raise FleetError(f"--ray-address auto: no running Ray cluster found on this machine ({exc})") from None
    if not found:
        raise FleetError("--ray-address auto: no running Ray cluster found on this machine")
    return found


def alive_nodes() -> list[FleetNode]:
    """The alive nodes with GPUs or the rehearsal resource, named, sorted by name."""
    import ray
    rows = [n for n in ray.nodes() if n.get("Alive") and _qualifies(n.get("Resources") or {})]
    names = short_names([(n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or "node", n["NodeID"])
                         for n in rows])
    nodes = [FleetNode(name=names[n["NodeID"]], node_id=n["NodeID"],
                       host=n.get("NodeManagerHostname") or "", ip=n.get("NodeManagerAddress") or "",
                       gpus=int((n.get("Resources") or {}).get("GPU", 0)))
             for n in rows]
    return sorted(nodes, key=lambda node: node.name)


def _qualifies(resources: dict) -> bool:
    return resources.get("GPU", 0) > 0 or resources.get(REHEARSAL_RESOURCE, 0) > 0


def short_names(hosts_and_ids: list[tuple[str, str]]) -> dict[str, str]:
    """node id → a short name: the host's first label; where several nodes share a host, with the
    first 6 characters of their node id (unique within a cluster)."""
    labels = {node_id: _label(host) for host, node_id in hosts_and_ids}
    shared = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    return {node_id: f"{label}-{node_id[:6]}" if label in shared else label for node_id, label in labels.items()}


def _label(host: str) -> str:
    """A hostname's first label; an IP address whole (its first octet names nothing)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        return host.split(".")[0] or host
