"""The GPUs of the Ray cluster vLLM's Ray backend (`distributed_executor_backend: ray`) will use.

vLLM joins the cluster RAY_ADDRESS names (gpucert puts `--ray-address`, else the caller's
RAY_ADDRESS, into the engine's environment); `tensor_parallel_size: auto` and
`pipeline_parallel_size: auto` are then planned from that cluster's GPU nodes — vLLM's own advice
for many nodes: tensor parallel over the GPUs of a node, pipeline parallel over the nodes — and
the "enough GPUs?" gate counts the cluster's, not this node's.

The connection is gpucert's session's (the fleet's `connect`: ray.init once, after a plain TCP
probe, so an unreachable address is one line in seconds rather than Ray's minutes of retries).
Only nodes with GPUs count: the fleet's CPU rehearsal resource `gpucert_node` is no GPU.
"""

from __future__ import annotations

import importlib.util
import os
import re

ENV = "RAY_ADDRESS"


class RayClusterError(ValueError):
    """No Ray, or no cluster at the address: one line for the user. (A ValueError, so the option
    errors' handlers — engine_setup.engine_config — turn it into `gpucert: …`, exit 4.)"""


def address(option: str | None, environ: dict[str, str] | None = None) -> tuple[str | None, str]:
    """The cluster the engine joins and where that came from: `--ray-address` (`auto` included)
    if given, else the caller's RAY_ADDRESS; (None, "") for neither (vLLM then starts a Ray of
    its own on this node)."""
    if option:
        return option, "--ray-address"
    found = (os.environ if environ is None else environ).get(ENV)
    return (found, ENV) if found else (None, "")


def gpus_per_node(ray_address: str) -> list[int]:
    """The GPU count of each alive GPU node of the cluster at `ray_address` (sorted by node name;
    empty for a cluster without GPU nodes). Raises RayClusterError."""
    if importlib.util.find_spec("ray") is None:
        raise RayClusterError(f"distributed_executor_backend=ray: finding the GPUs of the Ray cluster at "
                              f"{ray_address} needs Ray in gpucert's Python (pip install ray)")
    from ..fleet.nodes import FleetError, alive_nodes, connect
    try:
        connect(ray_address)
    except FleetError as exc:
        # the fleet's words name its option; here the address may be RAY_ADDRESS's
        reason = re.sub(r"^--ray-address (\S+?):? ", "", str(exc))
        raise RayClusterError(f"distributed_executor_backend=ray: the Ray cluster at {ray_address}: {reason}") from None
    return [node.gpus for node in alive_nodes() if node.gpus > 0]


def in_words(per_node: list[int]) -> str:
    """"8 GPU(s) per node on 2 node(s)" — the smallest GPU node's count, which every stage fits."""
    if not per_node:
        return "no GPU node in the Ray cluster"
    uneven = "" if len(set(per_node)) == 1 else " (the smallest node's)"
    return f"{min(per_node)} GPU(s) per node{uneven} on {len(per_node)} node(s)"
