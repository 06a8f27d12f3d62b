"""NCCL across the nodes of a Ray cluster (`make fleet`), one Ray actor per GPU (gpucert.fleet.nccl_ranks):

- fleet_nccl[op-size]: the sweep over every GPU of every node (ranks node by node), each row
  recorded as the node's own NCCL check records its rows: bus and algorithm bandwidth, time,
  wrong elements (any fails);
- fleet_nccl_large_message_busbw: all_reduce at the sweep's largest size, the headline;
- fleet_pair[a-b]: all_reduce at that size over every GPU of two nodes, for every pair of nodes, in
  rounds of disjoint pairs (gpucert.fleet.pairs). Each pair is judged against its own baseline and
  against the fleet's healthy-pair reference; a low pair fails naming what the pattern points to —
  a node (all its pairs low) or the link between the two.

With one node there is nothing across nodes: the checks do not apply. --nccl-backend gloo runs the
same on CPU ranks (the self-tests' local cluster; certifies nothing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from gpucert.certification import not_applicable
from gpucert.fleet import nccl_ranks, pairs
from gpucert.fleet.options import nccl_ops
from gpucert.physics import nccl
from gpucert.physics.nccl import rows

from ..hardware.nccl_record import TIMING, headline_row, record_row, sweep_plan
from .conftest import NO_ADDRESS, NO_NODES, REPO, cluster_nodes

pytestmark = [pytest.mark.fleet]

PAIR_METRIC = "vs_pair_reference_pct"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    config = metafunc.config
    if not config.getoption("--ray-address", None):
        for name in {"op", "size", "pair"} & set(metafunc.fixturenames):
            metafunc.parametrize(name, [pytest.param(NO_NODES, marks=pytest.mark.skip(reason=NO_ADDRESS))])
        return
    if "op" in metafunc.fixturenames:
        metafunc.parametrize("op", nccl_ops(config))
        metafunc.parametrize("size", [nccl.format_size(size) for size in sweep_plan(config)[1]])
    if "pair" in metafunc.fixturenames:
        names = [node.name for node in cluster_nodes(config)]
        found = [f"{a}-{b}" for round_ in pairs.rounds(names) for a, b in round_]
        metafunc.parametrize("pair", sorted(found) or [NO_NODES])


def nodes_or_skip(config: pytest.Config) -> list:
    nodes = cluster_nodes(config)
    if len(nodes) < 2:
        pytest.skip(not_applicable(f"NCCL across nodes needs ≥ 2 nodes, the cluster has {len(nodes)}"))
    return nodes


def sweep_across(config: pytest.Config, nodes: list, ops: tuple[str, ...], sizes: list[int]) -> nccl.SweepResult:
    backend, _ = sweep_plan(config)
    try:
        places = nccl_ranks.places_for(nodes, backend, config.getoption("--fleet-ranks-per-node"))
        launch = nccl_ranks.launcher(places, config.getoption("--fleet-python"), str(REPO))
        return nccl.run(nccl.SweepConfig(backend=backend, nproc=len(places), ops=ops, sizes=tuple(sizes), **TIMING),
                        launch=launch)
    except nccl.SweepError as err:
        pytest.fail(f"the NCCL sweep across nodes cannot start: {err}", pytrace=False)


@pytest.fixture(scope="module")
def fleet_sweep(request: pytest.FixtureRequest, gpucert_report_dir: Path) -> nccl.SweepResult:
    nodes = nodes_or_skip(request.config)
    _, sizes = sweep_plan(request.config)
    sweep = sweep_across(request.config, nodes, nccl_ops(request.config), sizes)
    (gpucert_report_dir / "fleet_nccl.json").write_text(json.dumps(sweep.to_dict(), indent=1))
    return sweep


@dataclass
class PairRun:
    size: int
    sweeps: dict[pairs.Pair, nccl.SweepResult]

    def busbw(self, pair: pairs.Pair) -> float | None:
        row = self.sweeps[pair].row("all_reduce", self.size)
        return row["busbw_gbps"] if row and row["status"] == "ok" else None


@pytest.fixture(scope="module")
def fleet_pairs(request: pytest.FixtureRequest, gpucert_report_dir: Path) -> PairRun:
    config = request.config
    if config.getoption("--fleet-pairs") == "off":
        pytest.skip(not_applicable("--fleet-pairs off"))
    nodes = nodes_or_skip(config)
    by_name = {node.name: node for node in nodes}
    size = max(sweep_plan(config)[1])
    schedule = pairs.rounds(sorted(by_name))
    sweeps = pairs.run_rounds(schedule, lambda pair: sweep_across(config, [by_name[n] for n in pair],
                                                                   ("all_reduce",), [size]),
                              parallel=config.getoption("--fleet-pairs") == "parallel")
    run = PairRun(size, sweeps)
    (gpucert_report_dir / "fleet_pairs.json").write_text(json.dumps(
        {"size": size, "rounds": [[f"{a}-{b}" for a, b in r] for r in schedule],
         "pairs": {f"{a}-{b}": sweep.to_dict() for (a, b), sweep in sweeps.items()}}, indent=1))
    return run


@pytest.mark.gpucert_check(name="fleet_nccl", family="fleet")
def test_fleet_nccl(gpucert, fleet_sweep: nccl.SweepResult, op: str, size: str) -> None:
    row = fleet_sweep.row(op, nccl.parse_size(size))
    if row is None:
        pytest.skip(not_applicable(f"{size} rounds down to 0 bytes for {op} on {fleet_sweep.config.nproc} ranks"))
    record_row(gpucert, row, fleet_sweep.config.nproc,
               why=f"{fleet_sweep.config.nproc} ranks across nodes: {nodes_in_words(fleet_sweep)}")


@pytest.mark.gpucert_check(name="fleet_nccl_large_message_busbw", family="fleet")
def test_fleet_nccl_large_message_busbw(gpucert, fleet_sweep: nccl.SweepResult) -> None:
    size = max(fleet_sweep.config.sizes)
    row, params = headline_row(gpucert, fleet_sweep, size, "busbw_gbps", "busbw_gbps", "GB/s", "higher")
    if row:
        gpucert.record("busbw_gbps", row["busbw_gbps"], unit="GB/s", direction="higher", params=params,
                       samples=rows.busbw_samples(row, fleet_sweep.config.nproc),
                       note=f"all ranks of {nodes_in_words(fleet_sweep)}")


@pytest.mark.gpucert_check(name="fleet_pair", family="fleet")
def test_fleet_pair(gpucert, fleet_pairs: PairRun, pair: str) -> None:
    key = next((p for p in fleet_pairs.sweeps if f"{p[0]}-{p[1]}" == pair), None)
    if key is None:
        pytest.fail(f"pair {pair} was collected but not measured (a node left the cluster)", pytrace=False)
    sweep = fleet_pairs.sweeps[key]
    row = sweep.row("all_reduce", fleet_pairs.size)
    params = {"op": "all_reduce", "size": nccl.format_size(fleet_pairs.size)}
    if row is None or row["status"] != "ok":
        error = (row or {}).get("error") or sweep.error or "no all_reduce row"
        gpucert.record("busbw_gbps", None, unit="GB/s", direction="higher", params=params, status="error", error=error)
        return
    # the diagnosis needs every pair's figure and the limit this check is judged by
    rule = gpucert.rule(PAIR_METRIC)
    limit = -rule.min if rule.min is not None else 10.0
    diagnosis = pairs.diagnose({p: fleet_pairs.busbw(p) for p in fleet_pairs.sweeps}, limit)
    gpucert.record("busbw_gbps", row["busbw_gbps"], unit="GB/s", direction="higher", params=params,
                   samples=rows.busbw_samples(row, sweep.config.nproc))
    distance = diagnosis.distance_pct(row["busbw_gbps"])
    if distance is not None:
        gpucert.record(PAIR_METRIC, distance, unit="%", direction="higher",
                       note=f"reference {diagnosis.reference:.4g} GB/s: the median of each node's best pair"
                            + (f"; {diagnosis.explain(key)}" if diagnosis.explain(key) else ""))
    gpucert.finding("pair", nodes=pair, a=key[0], b=key[1], ranks=sweep.config.nproc, busbw_gbps=round(row["busbw_gbps"], 3),
                    reference_gbps=round(diagnosis.reference, 3) if diagnosis.reference else None,
                    suspect=diagnosis.explain(key) or "none",
                    suspect_nodes=", ".join(diagnosis.nodes) or "none",
                    suspect_links=", ".join(f"{a}↔{b}" for a, b in diagnosis.links) or "none")


def nodes_in_words(sweep: nccl.SweepResult) -> str:
    """"nodes a, b": the nodes whose ranks joined the sweep (each rank's ready event names it)."""
    nodes = sorted({rank["node"] for rank in sweep.ranks if rank.get("node")})
    return f"nodes {', '.join(nodes)}" if nodes else "no rank started"
