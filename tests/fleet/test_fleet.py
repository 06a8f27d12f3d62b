"""The fleet checks (`make fleet`): the node-level checks on every GPU node of a Ray cluster at
once, one check here per node, `test_node[<node>]`.

Each node's own run judges it against its own profile's baselines (its verdict line is this
check's finding); this check fails when that run had failed checks, when the node died or hung
(with what it measured before), and when one of its headline figures falls 10 % below the fleet
median (thresholds.yaml, `# ---- fleet`): the one thing a node cannot see from inside.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucert.fleet import fleet
from gpucert.fleet.options import node_args
from gpucert.fleet.runner import run_fleet

from .conftest import NO_ADDRESS, NO_NODES, REPO, cluster_nodes

pytestmark = [pytest.mark.fleet, pytest.mark.gpucert_check(name="fleet_node", family="fleet")]

def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "node" not in metafunc.fixturenames:
        return
    if not metafunc.config.getoption("--ray-address", None):
        metafunc.parametrize("node", [pytest.param(NO_NODES, marks=pytest.mark.skip(reason=NO_ADDRESS))])
        return
    names = [node.name for node in cluster_nodes(metafunc.config)]
    metafunc.parametrize("node", names or [NO_NODES])


class FleetRun:
    """Every node's outcome and summary, and the fleet's medians over the nodes that completed."""

    def __init__(self, outcomes: dict):
        self.outcomes = outcomes
        self.summaries = {name: fleet.summarize(o.metrics, o.log_tail) for name, o in outcomes.items()}
        # a node that died or hung measured part of its run under whatever went wrong: not the norm
        completed = {name for name, o in outcomes.items() if o.state == "completed"}
        self.medians = fleet.medians(self.summaries, completed)

    def rows(self) -> list[dict]:
        return [o.as_dict() for o in self.outcomes.values()]


@pytest.fixture(scope="session")
def fleet_run(request: pytest.FixtureRequest, gpucert_report_dir: Path, gpucert_note) -> FleetRun:
    """The whole fleet's run, all nodes in parallel, once per session."""
    config = request.config
    nodes = cluster_nodes(config)
    if not nodes:
        pytest.fail("no node of the cluster has GPUs (nor the gpucert_node resource of a CPU rehearsal)", pytrace=False)

    def save(outcomes: dict) -> None:
        fleet.write_state(gpucert_report_dir, [o.as_dict() for o in outcomes.values()],
                          {name: o.metrics for name, o in outcomes.items()})

    outcomes = run_fleet(nodes, python=config.getoption("--fleet-python"), repo=str(REPO), args=node_args(config),
                         deadline_s=config.getoption("--fleet-timeout-min") * 60, on_poll=save)
    save(outcomes)
    run = FleetRun(outcomes)
    (gpucert_report_dir / "fleet.md").write_text(fleet.table(run.rows(), run.summaries, run.medians))
    for line in fleet.outliers(run.summaries, run.medians):
        gpucert_note(line)
    gpucert_note(f"fleet of {len(nodes)} node(s): the per-node table is {gpucert_report_dir / 'fleet.md'}")
    return run


def test_node(gpucert, fleet_run: FleetRun, node: str) -> None:
    if node not in fleet_run.outcomes:
        pytest.fail(f"node {node} was collected but is not in the fleet's run (it left the cluster)", pytrace=False)
    outcome = fleet_run.outcomes[node]
    summary = fleet_run.summaries[node]
    gpucert.finding("node", host=outcome.node.host, ip=outcome.node.ip, node_id=outcome.node.node_id,
                    state=outcome.state, verdict=summary.verdict_line or "(no verdict line)", reason=outcome.reason)
    gpucert.record("node_checks_run", summary.checks_run, unit="checks", direction="higher")
    gpucert.record("node_checks_failed", len(summary.failed), unit="checks", direction="lower",
                   note=("failed: " + ", ".join(summary.failed[:5]) + (" …" if len(summary.failed) > 5 else ""))
                   if summary.failed else None)
    for figure, value in summary.figures.items():
        gpucert.record(figure, value, unit=fleet.FIGURES[figure][2], direction="higher")
        median = fleet_run.medians.get(figure)
        pct = fleet.distance_pct(value, median) if median is not None else None
        if pct is not None:
            gpucert.record("vs_fleet_median_pct", pct, unit="%", direction="higher", params={"figure": figure},
                           note=f"fleet median {median:.4g} {fleet.FIGURES[figure][2]}")
    if outcome.state != "completed":
        pytest.fail(f"{node} ({outcome.node.host} {outcome.node.ip}): {outcome.state}: {outcome.reason}", pytrace=False)
