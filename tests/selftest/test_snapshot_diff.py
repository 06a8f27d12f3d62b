"""Drift between snapshots: the severity policy, one entry per real change, a stable digest."""

import copy

import pytest

from gpucert import snapshot
from gpucert.snapshot import RULES, SEVERITIES, SnapshotError

from .captures import DRIFT_EDITS, FIXTURE, NEW_UUID1, UUID1, edited_capture

@pytest.fixture(scope="module")
def baseline():
    return snapshot.collect(from_dir=FIXTURE)


def changes_of(baseline, tmp_path, edits):
    return snapshot.diff(baseline, snapshot.collect(from_dir=edited_capture(tmp_path, edits)))


def test_link_down_uuid_swap_and_driver_bump(baseline, tmp_path):
    changes = changes_of(baseline, tmp_path, DRIFT_EDITS)
    assert [(c["path"], c["severity"]) for c in changes] == [
        ("gpus[1].nvlink[3].active", "critical"),
        ("gpus[1].uuid", "critical"),
        ("driver.version", "warning"),
    ]
    assert changes[0]["old"] is True and changes[0]["new"] is False
    assert changes[1] == {"path": "gpus[1].uuid", "old": UUID1, "new": NEW_UUID1,
                          "severity": "critical"}
    assert changes[2]["old"] == "580.159.04" and changes[2]["new"] == "580.172.08"


def test_driver_major_bump_is_critical(baseline, tmp_path):
    changes = changes_of(baseline, tmp_path, {"nvidia-smi-q.txt": [
        (": 580.159.04", ": 590.48.01", None)]})  # also rewrites the GSP firmware line
    assert [(c["path"], c["severity"]) for c in changes] == [("driver.version", "critical")]


def test_pcie_width_drop_is_critical(baseline, tmp_path):
    changes = changes_of(baseline, tmp_path, {"nvidia-smi-q.txt": [
        ("Current                                : 16x", "Current                                : 8x",
         "GPU 00000000:00:07.0")]})
    assert [(c["path"], c["old"], c["new"], c["severity"]) for c in changes] == [
        ("gpus[1].pcie.width_current", 16, 8, "critical")]


def test_weaker_topology_is_reported_once_per_pair(baseline, tmp_path):
    changes = changes_of(baseline, tmp_path,
                         {"nvidia-smi-topo-m.txt": [("NV18", "NV12", None)]})
    assert [(c["path"], c["old"], c["new"], c["severity"]) for c in changes] == [
        ("topology.matrix.GPU0.GPU1", "NV18", "NV12", "critical")]


def test_ecc_counters(baseline):
    new = copy.deepcopy(baseline)
    new["gpus"][0]["ecc"]["aggregate"]["dram_uncorrectable"] = 2
    new["gpus"][0]["ecc"]["volatile"]["sram_correctable"] = 5
    new["gpus"][1]["remapped_rows"]["uncorrectable"] = 1
    severities = {c["path"]: c["severity"] for c in snapshot.diff(baseline, new)}
    assert severities == {
        "gpus[0].ecc.aggregate.dram_uncorrectable": "critical",
        "gpus[1].remapped_rows.uncorrectable": "critical",
        "gpus[0].ecc.volatile.sram_correctable": "warning",
    }
    # counters that went down (reset by a reboot) are not a failure
    assert [c["severity"] for c in snapshot.diff(new, baseline)] == ["info"] * 3


def test_gpu_count_change_is_one_critical_entry(baseline):
    new = copy.deepcopy(baseline)
    new["gpus"] = new["gpus"][:1]
    changes = snapshot.diff(baseline, new)
    assert changes == [{"path": "gpus", "old": 2, "new": 1, "severity": "critical"}]


def test_nvlink_link_gone_is_one_entry(baseline):
    new = copy.deepcopy(baseline)
    del new["gpus"][0]["nvlink"][17]
    changes = snapshot.diff(baseline, new)
    assert [(c["path"], c["new"], c["severity"]) for c in changes] == [
        ("gpus[0].nvlink[17]", None, "critical")]


def test_slower_nvlink_is_critical_faster_is_info(baseline):
    new = copy.deepcopy(baseline)
    new["gpus"][0]["nvlink"][2]["speed_gbps"] = 20.0
    assert [c["severity"] for c in snapshot.diff(baseline, new)] == ["critical"]
    assert [c["severity"] for c in snapshot.diff(new, baseline)] == ["info"]


def test_warning_and_info_fields(baseline):
    new = copy.deepcopy(baseline)
    new["gpus"][0]["power_limit_w"]["current"] = 600.0
    new["gpus"][1]["throttle_reasons"] = ["sw_power_cap"]
    new["software"] = {"torch": "2.9.0"}
    old = copy.deepcopy(baseline)
    old["software"] = {"torch": "2.8.0"}
    by_path = {c["path"]: c["severity"] for c in snapshot.diff(old, new)}
    assert by_path == {"gpus[0].power_limit_w.current": "warning",
                       "software.torch": "warning",
                       "gpus[1].throttle_reasons": "info"}


def test_sorted_by_severity_then_path(baseline):
    new = copy.deepcopy(baseline)
    new["gpus"][1]["vbios"] = "96.00.DA.00.0D"
    new["gpus"][0]["mig_mode"]["current"] = True
    new["host"] = {"hostname": "other"}
    changes = snapshot.diff(baseline, new)
    assert [c["severity"] for c in changes] == ["critical", "warning", "info"]


def test_volatile_fields_are_not_drift(baseline):
    new = copy.deepcopy(baseline)
    new["taken_at"] = "2030-01-01T00:00:00Z"
    new["source"] = "live"
    new["notes"] = ["something else"]
    for gpu in new["gpus"]:
        gpu["volatile"]["temperature_c"] = 80
        gpu["volatile"]["clocks_mhz"]["sm"] = 1980
        gpu["volatile"]["power_draw_w"] = 650.0
        gpu["volatile"]["utilization_pct"]["gpu"] = 100
    assert snapshot.diff(baseline, new) == []
    assert snapshot.digest(new) == snapshot.digest(baseline)


def test_digest_is_stable_across_collections_and_sensitive_to_stable_fields(baseline):
    again = snapshot.collect(from_dir=FIXTURE)
    assert again["taken_at"] is not None
    assert snapshot.digest(again) == snapshot.digest(baseline)
    assert snapshot.digest(baseline).startswith("sha256:")
    changed = copy.deepcopy(baseline)
    changed["gpus"][0]["vbios"] = "other"
    assert snapshot.digest(changed) != snapshot.digest(baseline)
    throttled = copy.deepcopy(baseline)
    throttled["gpus"][0]["throttle_reasons"] = ["hw_slowdown"]  # moment-to-moment state
    assert snapshot.digest(throttled) == snapshot.digest(baseline)


def test_diff_refuses_what_is_not_a_snapshot(baseline):
    with pytest.raises(SnapshotError):
        snapshot.diff(baseline, {"changes": []})
    with pytest.raises(SnapshotError):
        snapshot.diff([], baseline)


def test_rules_table_is_well_formed():
    for pattern, condition, severity, why in RULES:
        assert severity in SEVERITIES and callable(condition) and why and pattern


def test_another_node_of_the_profile_is_not_a_gpu_swap(baseline):
    """Every GPU's UUID differs: another machine of this profile (its serials follow), info only;
    one UUID differs: a GPU was swapped on this machine, critical (the test above)."""
    new = copy.deepcopy(baseline)
    for i, gpu in enumerate(new["gpus"]):
        gpu["uuid"] = f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd"
        gpu["serial"] = f"999{i}"
        gpu["vbios"] = "96.00.99.00.0D"
    changes = snapshot.explain(baseline, new)
    by_path = {c["path"]: c for c in changes}
    assert {p: by_path[p]["severity"] for p in ("gpus[0].uuid", "gpus[1].uuid")} == {
        "gpus[0].uuid": "info", "gpus[1].uuid": "info"}
    assert "another node of this profile" in by_path["gpus[0].uuid"]["reason"]
    assert by_path["gpus[0].vbios"]["severity"] == "warning"  # the rest is judged as usual
    assert snapshot.counts(snapshot.diff(baseline, new))["critical"] == 0
    assert not snapshot.another_node(baseline, baseline)
