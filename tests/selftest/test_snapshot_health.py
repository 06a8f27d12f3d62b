"""Absolute health findings of one snapshot: degraded links and memory errors with no baseline."""

import copy

import pytest

from gpucert import snapshot

from .captures import FIXTURE


@pytest.fixture(scope="module")
def healthy():
    return snapshot.collect(from_dir=FIXTURE)


def test_the_captured_node_is_healthy(healthy):
    assert snapshot.health(healthy) == []


def test_degraded_node_findings(healthy):
    sick = copy.deepcopy(healthy)
    gpu0, gpu1 = sick["gpus"]
    gpu1["nvlink"][5]["active"] = False
    gpu0["pcie"]["width_current"] = 8
    gpu0["pcie"]["gen_current"] = 3
    gpu0["ecc"]["volatile"]["dram_uncorrectable"] = 2
    gpu1["ecc"]["aggregate"]["dram_uncorrectable"] = 746
    gpu1["remapped_rows"]["failure"] = True
    gpu1["throttle_reasons"] = ["hw_thermal_slowdown", "idle"]
    found = {(f["path"], f["severity"]) for f in snapshot.health(sick)}
    assert found == {
        ("gpus[1].nvlink[5].active", "critical"),
        ("gpus[0].pcie.width_current", "critical"),
        ("gpus[0].pcie.gen_current", "warning"),
        ("gpus[0].ecc.volatile.dram_uncorrectable", "critical"),
        ("gpus[1].ecc.aggregate.dram_uncorrectable", "warning"),
        ("gpus[1].remapped_rows.failure", "critical"),
        ("gpus[1].throttle_reasons", "warning"),
    }
    assert [f["severity"] for f in snapshot.health(sick)][:4] == ["critical"] * 4


def test_a_board_with_every_link_down_warns_once(healthy):
    pcie_only = copy.deepcopy(healthy)
    for link in pcie_only["gpus"][0]["nvlink"]:
        link["active"] = False
    findings = snapshot.health(pcie_only)
    assert [(f["path"], f["severity"]) for f in findings] == [("gpus[0].nvlink", "warning")]


def test_no_gpu_no_findings():
    assert snapshot.health({"gpus": None}) == []
