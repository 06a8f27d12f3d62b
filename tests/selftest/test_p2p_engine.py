"""The P2P engine on the CPU: the p2pBandwidthLatencyTest layout, the expected peak per topology
link, the byte formulas, the copy and latency benchmarks on CPU tensors, the whole sweep."""

import copy
import json

import pytest

from gpucert import snapshot
from gpucert.physics import p2p, p2p_matrix
from gpucert.physics.core import Result, measure
from gpucert.physics.datasheet import GpuSpec, lookup

from .captures import FIXTURE
from .machine import without_gpu

H100 = lookup("NVIDIA H100 80GB HBM3")


@pytest.fixture(scope="module")
def node():
    """The captured 2× H100 NV18 node: per-link 26.562 GB/s, PCIe gen5 x16."""
    return snapshot.collect(from_dir=FIXTURE)


def _gpus(node):
    return node["gpus"][0], node["gpus"][1]


# ---- the layout p2pBandwidthLatencyTest prints -----------------------------------------------

def test_bandwidth_matrix_has_the_sample_layout():
    # printf("   D\\D"); printf("%6d ", j) ...; printf("%6d ", i); printf("%6.02f ", v): values wider
    # than 6 characters push the row right, exactly as the sample's output does
    text = p2p_matrix.format_matrix("Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)",
                                    [[2631.66, 391.24], [391.57, 2640.1]])
    assert text == ("Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)\n"
                    "   D\\D     0      1 \n"
                    "     0 2631.66 391.24 \n"
                    "     1 391.57 2640.10 ")


def test_latency_matrix_uses_the_gpu_corner_and_failed_entries_show():
    kind = p2p_matrix.KIND_BY_KEY["latency_us"]
    text = p2p_matrix.format_matrix(kind.title, [[2.07, None], [2.31, 2.05]], kind.corner)
    assert text.splitlines() == ["P2P=Enabled Latency (P2P Writes) Matrix (us)",
                                 "   GPU     0      1 ",
                                 "     0   2.07    n/a ",
                                 "     1   2.31   2.05 "]


def test_connectivity_matrix_has_the_sample_layout():
    text = p2p_matrix.format_connectivity([[True, True, False], [True, True, False], [False, False, True]])
    assert text.splitlines() == ["P2P Connectivity Matrix",
                                 "     D\\D     0     1     2",
                                 "     0\t     1     1     0",
                                 "     1\t     1     1     0",
                                 "     2\t     0     0     1"]


def test_matrix_titles_in_the_order_the_sample_prints_them():
    assert [kind.title for kind in p2p_matrix.KINDS] == [
        "Unidirectional P2P=Disabled Bandwidth Matrix (GB/s)",
        "Unidirectional P2P=Enabled Bandwidth (P2P Writes) Matrix (GB/s)",
        "Bidirectional P2P=Disabled Bandwidth Matrix (GB/s)",
        "Bidirectional P2P=Enabled Bandwidth Matrix (GB/s)",
        "P2P=Disabled Latency Matrix (us)",
        "P2P=Enabled Latency (P2P Writes) Matrix (us)",
    ]


def test_card_rows_are_one_dict_per_matrix_row():
    rows = p2p_matrix.card_rows([[2631.664, 391.236], [None, 2640.1]])
    assert rows == [{"D\\D": 0, "0": 2631.66, "1": 391.24}, {"D\\D": 1, "0": None, "1": 2640.1}]
    assert list(rows[0]) == ["D\\D", "0", "1"]  # the card's columns, in order


# ---- what a pair should reach -------------------------------------------------------------------

def test_pcie_lane_rates_follow_the_spec_encodings():
    assert p2p.PCIE_LANE_GBPS[5] * 16 == pytest.approx(63.015, abs=1e-3)   # 32 GT/s, 128b/130b
    assert p2p.PCIE_LANE_GBPS[4] * 16 == pytest.approx(31.508, abs=1e-3)
    assert p2p.PCIE_LANE_GBPS[3] * 16 == pytest.approx(15.754, abs=1e-3)
    assert p2p.PCIE_LANE_GBPS[2] == 0.5 and p2p.PCIE_LANE_GBPS[1] == 0.25      # 8b/10b
    assert p2p.PCIE_LANE_GBPS[6] * 16 == pytest.approx(121.0)                  # FLIT 242/256


def test_nv18_pair_expects_the_datasheet_nvlink_peak(node):
    a, b = _gpus(node)
    expected = p2p.pair_expectation(node, a, b)
    assert expected.link == "NV18"
    # the datasheet's 450 GB/s per direction, as the NCCL check uses; not nvidia-smi's signalling rate
    assert expected.peak_gbps == pytest.approx(450.0)
    assert "18/18 of the datasheet NVLink 450 GB/s" in expected.basis


def test_nv18_pair_of_an_unknown_model_uses_the_snapshot_link_speed(node):
    a, b = (copy.deepcopy(g) for g in _gpus(node))
    expected = p2p.expected_oneway_peak("NV18", a, b, None)
    assert expected.peak_gbps == pytest.approx(18 * 26.562)
    assert "18 links × 26.562 GB/s" in expected.basis and "no datasheet entry" in expected.basis


def test_nvlink_without_snapshot_speeds_uses_the_datasheet_scaled_by_links(node):
    a, b = (copy.deepcopy(g) for g in _gpus(node))
    for gpu in (a, b):
        gpu["nvlink"] = None
    nv18 = p2p.expected_oneway_peak("NV18", a, b, H100)
    assert nv18.peak_gbps == pytest.approx(H100.nvlink_gbps)
    nv4 = p2p.expected_oneway_peak("NV4", a, b, H100)
    assert nv4.peak_gbps == pytest.approx(H100.nvlink_gbps * 4 / H100.nvlink_links)
    assert "4/18 of the datasheet NVLink" in nv4.basis and H100.model in nv4.basis
    assert p2p.expected_oneway_peak("NV4", a, b, None).peak_gbps is None


def test_nv4_with_snapshot_speeds_and_the_slower_gpu_decides(node):
    a, b = (copy.deepcopy(g) for g in _gpus(node))
    for link in b["nvlink"]:
        link["speed_gbps"] = 25.0
    expected = p2p.expected_oneway_peak("NV4", a, b, H100)
    assert expected.peak_gbps == pytest.approx(4 * 25.0)


def test_pcie_links_expect_the_pcie_peak(node):
    a, b = (copy.deepcopy(g) for g in _gpus(node))
    for link in ("PIX", "PXB", "PHB", "NODE", "SYS"):
        expected = p2p.expected_oneway_peak(link, a, b, H100)
        assert expected.peak_gbps == pytest.approx(63.015, abs=1e-3), link
        assert "PCIe gen5 x16" in expected.basis
    # an idle board reports a lower current generation: the max one is what a copy trains to
    a["pcie"]["gen_current"] = 1
    assert p2p.expected_oneway_peak("PIX", a, b).peak_gbps == pytest.approx(63.015, abs=1e-3)
    # a narrower link is real: the slower end decides
    b["pcie"]["width_current"] = 8
    assert p2p.expected_oneway_peak("SYS", a, b).peak_gbps == pytest.approx(31.508, abs=1e-3)


def test_pcie_without_snapshot_fields_uses_the_datasheet_then_nothing():
    l40s = GpuSpec(model="L40S 48GB", dense_tflops={}, memory_gbps=864, nvlink_gbps=None, nvlink_links=None,
                   pcie_gen=4, pcie_gbps=32.0)
    expected = p2p.expected_oneway_peak("SYS", None, None, l40s)
    assert expected.peak_gbps == 32.0 and "datasheet" in expected.basis
    assert p2p.expected_oneway_peak("SYS", None, None, None).peak_gbps is None


@pytest.mark.parametrize("link", [None, "X", "weird"])
def test_unknown_links_have_no_peak(link):
    expected = p2p.expected_oneway_peak(link, None, None, H100)
    assert expected.peak_gbps is None and "baselines only" in expected.basis


def test_staged_expectation_is_the_pcie_peak(node):
    staged = p2p.staged_expectation(*_gpus(node))
    assert staged.link == "host" and staged.peak_gbps == pytest.approx(63.015, abs=1e-3)


def test_torch_devices_map_to_snapshot_gpus_by_uuid(node):
    # torch prints UUIDs without nvidia-smi's "GPU-" prefix; CUDA may order devices differently
    second = node["gpus"][1]["uuid"].removeprefix("GPU-")
    assert p2p.snapshot_gpu(node, second, 0)["index"] == 1
    assert p2p.snapshot_gpu(node, None, 0)["index"] == 0            # no UUID: same index
    assert p2p.snapshot_gpu(node, "GPU-unknown", 1)["index"] == 1
    assert p2p.snapshot_gpu({}, None, 0) is None
    a, b = _gpus(node)
    assert p2p.topology_link(node, a, b) == "NV18" and p2p.topology_link(node, a, None) is None


# ---- byte formulas --------------------------------------------------------------------------------

def test_bytes_per_iteration_follow_the_sample():
    size = 1 << 30
    assert p2p.copy_bytes(size, same_device=False) == size
    assert p2p.copy_bytes(size, same_device=False, both_ways=True) == 2 * size
    assert p2p.copy_bytes(size, same_device=True) == 2 * size                 # read + write
    assert p2p.copy_bytes(size, same_device=True, both_ways=True) == 4 * size
    assert p2p.OneWayCopy("cuda:0", "cuda:1", size).bytes_moved() == size
    assert p2p.BothWayCopy("cuda:0", "cuda:1", size).bytes_moved() == 2 * size
    assert p2p.OneWayCopy("cuda:1", "cuda:1", size).bytes_moved() == 2 * size
    assert p2p.SmallCopies("cuda:0", "cuda:1", nbytes=4, copies=100).bytes_moved() == 400


# ---- the benchmarks on CPU tensors ------------------------------------------------------------------

@pytest.mark.parametrize("use_p2p", [True, False])
@pytest.mark.parametrize("measure", [p2p.measure_oneway, p2p.measure_bothway])
def test_copies_on_cpu_measure_and_land(measure, use_p2p):
    result = measure("cpu", "cpu", 1 << 20, p2p=use_p2p, warmup=1, reps=3)
    assert result.status == "ok", result.error
    assert result.params["p2p"] is use_p2p
    assert len(result.samples_s) == 3 and result.gbps > 0
    assert len(result.rate_samples("gbps")) == 3


def test_staged_copy_pipelines_in_chunks_with_a_short_tail():
    bench = p2p.OneWayCopy("cpu", "cpu", 1000, p2p=False, chunk=64)  # 15 full chunks and one of 40
    bench.setup("cpu")
    lane = bench.lanes[0]
    assert lane.host is not None and lane.chunk == 64
    assert bench.check() is not None          # nothing copied yet: the check sees it
    bench.op()
    assert bench.check() is None
    assert bool((lane.dst == lane.src).all())


@pytest.mark.fault('engine', 'a P2P copy that never happens', 'status error: sampled bytes differ after the copy')
def test_a_copy_that_did_not_happen_is_caught():
    class NoCopy(p2p.OneWayCopy):
        def op(self):
            pass

    result = measure(NoCopy("cpu", "cpu", 1 << 16), "cpu", warmup=0, reps=2)
    assert result.status == "error"
    assert "sampled bytes differ after the copy cpu → cpu" in result.error


def test_latency_on_cpu_is_per_copy():
    result = p2p.measure_latency("cpu", "cpu", nbytes=4, copies=20, warmup=1, reps=3)
    assert result.status == "ok", result.error
    assert result.name == "p2p_latency" and result.bytes == 4
    assert len(result.samples_s) == 3 and 0 < result.median_s < 1e-3
    assert result.note is None


def test_latency_subtracts_the_hold_and_divides_by_copies():
    timed = Result("p2p_latency", {"copies": 100}, "cuda:0", samples_s=[0.0012, 0.0013, 0.0014], bytes=400)
    held = Result("p2p_hold", {}, "cuda:0", samples_s=[0.001, 0.001, 0.001])
    result = p2p.per_copy_latency(timed, held, 100, launch_s=[0.0005] * 3)
    assert result.samples_s == pytest.approx([2e-6, 3e-6, 4e-6])
    assert result.median_s == pytest.approx(3e-6) and result.bytes == 4 and result.note is None
    slow = p2p.per_copy_latency(timed, held, 100, launch_s=[0.002] * 3)
    assert "host-bound: launching took 2000 µs, longer than the 1000 µs hold" in slow.note
    assert p2p.host_outran_hold([0.002] * 3, held) == pytest.approx(2.0)
    broken = Result("p2p_hold", {}, "cuda:0", status="error", error="RuntimeError: no kernel image")
    failed = p2p.per_copy_latency(timed, broken, 100)
    assert failed.status == "error" and failed.error == "hold kernel: RuntimeError: no kernel image"
    too_short = p2p.per_copy_latency(timed, Result("p2p_hold", {}, "cuda:0", samples_s=[0.002]), 100)
    assert too_short.status == "error" and "no measurable time beyond" in too_short.error


def test_hold_covers_the_launch_budget_at_any_clock():
    cycles = p2p.hold_cycles_for(100, staged=False)
    assert cycles / p2p.MAX_SM_CLOCK_HZ == pytest.approx(100 * p2p.LAUNCH_BUDGET_S["direct"])
    assert p2p.hold_cycles_for(100, staged=True) > cycles


def test_peer_access_rules_without_cuda():
    assert p2p.peer_access("cpu", "cpu") is True
    assert p2p.peer_access("cuda:0", "cuda:0") is True
    assert p2p.peer_access("cpu", "cuda:0") is False


@without_gpu
def test_too_few_gpus_says_how_many():
    assert p2p.too_few_gpus(1) == "not applicable: P2P needs ≥ 2 GPUs, found 1 (this node's shape)"
    assert p2p.too_few_gpus(0, "no CUDA device: x") == "P2P needs ≥ 2 GPUs, found 0 (no CUDA device: x)"
    count, reason = p2p.available_gpus()
    assert count == 0 and "CPU build" in reason  # this machine


# ---- the sweep ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu_sweep():
    config = p2p_matrix.SweepConfig(size=1 << 20, latency_copies=10, warmup=1, reps=2)
    return p2p_matrix.sweep(["cpu", "cpu"], config)


def test_sweep_fills_every_matrix_on_cpu(cpu_sweep):
    assert list(cpu_sweep.results) == [kind.key for kind in p2p_matrix.KINDS]
    assert cpu_sweep.failures() == []
    for key in cpu_sweep.results:
        values = cpu_sweep.matrix(key)
        assert len(values) == 2 and all(v is not None and v > 0 for row in values for v in row), key
    # off the diagonal P2P=Disabled is staged through the host; the diagonal never is
    off = cpu_sweep.results["oneway_gbps_p2p_off"]
    assert off[0][1].params["p2p"] is False and off[0][0].params["p2p"] is True
    text = p2p_matrix.format_sweep(cpu_sweep)
    assert text.startswith("P2P Connectivity Matrix\n")
    assert all(kind.title in text for kind in p2p_matrix.KINDS)


def test_sweep_rows_and_json(cpu_sweep, node):
    expected = {(0, 1): p2p.Expectation("NV18", 100.0, "test"), (1, 0): p2p.Expectation("NV18", None, "test")}
    data = json.loads(json.dumps(cpu_sweep.to_dict(expected)))
    assert [(r["src"], r["dst"]) for r in data["pairs"]] == [(0, 1), (1, 0)]
    first = data["pairs"][0]
    assert first["link"] == "NV18" and first["peak_gbps"] == 100.0
    assert first["pct_of_peak"] == pytest.approx(first["oneway_gbps"], rel=0.01)
    assert data["pairs"][1]["pct_of_peak"] is None
    assert set(data["matrices"]) == {kind.key for kind in p2p_matrix.KINDS}
    assert data["connectivity"] == [[1, 1], [1, 1]] and data["failures"] == []


@pytest.mark.fault('engine', 'one pair of the P2P matrix fails', 'the entry stays in the matrix as failed with its error')
def test_a_failed_entry_stays_visible(cpu_sweep):
    broken = copy.copy(cpu_sweep)
    broken.results = dict(cpu_sweep.results)
    grid = [list(row) for row in broken.results["latency_us"]]
    grid[0][1] = Result("p2p_latency", {}, "cpu", status="error", error="RuntimeError: boom")
    broken.results["latency_us"] = grid
    assert broken.matrix("latency_us")[0][1] is None
    assert broken.failures() == [{"matrix": "latency_us", "src": 0, "dst": 1, "status": "error",
                                  "error": "RuntimeError: boom"}]
    assert "   n/a " in p2p_matrix.format_sweep(broken)
