"""What the fleet checks share: the cluster's nodes (connected in pytest_configure, --ray-address)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NO_ADDRESS = "--ray-address not given: the fleet checks run across a Ray cluster (make fleet RAY_ADDRESS=…)"
NO_NODES = "none"


def cluster_nodes(config: pytest.Config) -> list:
    """The cluster's alive GPU nodes (or CPU rehearsal nodes), sorted by name; [] without --ray-address."""
    if not config.getoption("--ray-address", None):
        return []
    from gpucert.fleet.nodes import alive_nodes  # connected in pytest_configure
    return alive_nodes()
