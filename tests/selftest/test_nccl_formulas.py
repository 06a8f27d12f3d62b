"""nccl-tests' size and bandwidth arithmetic, the row builder, the plan, faults and the NVLink
peak: pure functions, against hand-computed values."""

from types import SimpleNamespace

import pytest

from gpucert.physics import units
from gpucert.physics.nccl import faults, formulas, rows, sweep
from gpucert.physics.nccl.peak import nvlink_peak

# busbw / algbw from nccl-tests doc/PERFORMANCE.md, worked out by hand
FACTORS = {
    2: {"all_reduce": 1.0, "all_gather": 0.5, "reduce_scatter": 0.5, "alltoall": 0.5,
        "broadcast": 1.0, "reduce": 1.0, "sendrecv": 1.0},
    4: {"all_reduce": 1.5, "all_gather": 0.75, "reduce_scatter": 0.75, "alltoall": 0.75,
        "broadcast": 1.0, "reduce": 1.0, "sendrecv": 1.0},
    8: {"all_reduce": 1.75, "all_gather": 0.875, "reduce_scatter": 0.875, "alltoall": 0.875,
        "broadcast": 1.0, "reduce": 1.0, "sendrecv": 1.0},
}


@pytest.mark.parametrize("nranks", sorted(FACTORS))
def test_bus_factors_match_hand_computed_values(nranks):
    assert {op: formulas.bus_factor(op, nranks) for op in formulas.OPS} == FACTORS[nranks]


def test_bandwidth_of_a_known_case():
    # 1 GiB all_reduce in 10 ms on 8 ranks: algbw = 2^30 / 0.01 / 1e9, busbw = algbw × 14/8
    assert formulas.algbw_gbps(1 << 30, 0.01) == pytest.approx(107.3741824)
    assert formulas.busbw_gbps("all_reduce", 1 << 30, 0.01, 8) == pytest.approx(187.9048192)
    assert formulas.busbw_gbps("sendrecv", 1 << 30, 0.01, 8) == pytest.approx(107.3741824)


@pytest.mark.parametrize("op,size,nranks,elsize,expected", [
    ("all_reduce", 10, 3, 4, (2, 8)),  # count = 10 // 4
    ("all_gather", 100, 3, 4, (8, 96)),  # 25 elements → 8 per rank → 8 × 3 × 4 bytes
    ("reduce_scatter", 100, 3, 4, (8, 96)),
    ("alltoall", 1000, 8, 2, (62, 992)),  # bf16: 500 elements → 62 to each peer
    ("all_gather", 8, 4, 4, (0, 0)),  # 2 elements cannot split over 4 ranks
    ("broadcast", 7, 2, 4, (1, 4)),
    ("sendrecv", 8 << 30, 2, 4, (2 << 30, 8 << 30)),
])
def test_sizes_round_down_like_nccl_tests(op, size, nranks, elsize, expected):
    assert formulas.op_count(op, size, nranks, elsize) == expected


def test_size_list_parse_and_format():
    assert formulas.size_list(8, 128, 2) == [8, 16, 32, 64, 128]
    assert formulas.size_list(8, 100, 4) == [8, 32]
    assert formulas.HARDWARE_SIZES[0] == 8 and formulas.HARDWARE_SIZES[-1] == 8 << 30
    assert len(formulas.HARDWARE_SIZES) == 16
    assert [units.parse_size(t) for t in ("8", "64K", "1M", "8G", "2KiB", "3mb")] == \
        [8, 64 << 10, 1 << 20, 8 << 30, 2 << 10, 3 << 20]
    assert [units.format_size(n) for n in (8, 2048, 8 << 30, 1000)] == ["8B", "2KiB", "8GiB", "1000B"]
    with pytest.raises(ValueError, match="bad size '8X'"):
        units.parse_size("8X")
    with pytest.raises(ValueError, match="step factor"):
        formulas.size_list(8, 64, 1)


def test_plan_drops_empty_sizes_and_duplicates():
    config = sweep.SweepConfig(backend="gloo", nproc=4, ops=("all_gather", "all_reduce"), sizes=(8, 16, 20, 32))
    assert sweep.plan(config) == [
        ("all_gather", 1, 16),  # 8 B: 2 elements over 4 ranks → nothing; 20 B rounds onto 16 B
        ("all_gather", 2, 32),
        ("all_reduce", 2, 8), ("all_reduce", 4, 16), ("all_reduce", 5, 20), ("all_reduce", 8, 32),
    ]


def test_row_takes_the_slowest_rank_average_and_counts_wrong_elements():
    # rank 0: 10, 20, 30 us (avg 20); rank 1: 25, 15, 35 us (avg 25) → time 25 us
    row = rows.measured("all_reduce", 256, 1024, "float32", 2,
                        [[10e-6, 20e-6, 30e-6], [25e-6, 15e-6, 35e-6]], [0, 0], "note")
    assert row["time_us"] == pytest.approx(25.0)
    assert row["samples_us"] == pytest.approx([25.0, 20.0, 35.0])  # slowest rank per iteration
    assert row["min_time_us"] == pytest.approx(20.0)
    assert row["algbw_gbps"] == pytest.approx(1024 / 25e-6 / 1e9)
    assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"] * 1.0)
    assert row["status"] == "ok" and row["wrong"] == 0 and row["iters"] == 3
    assert list(row) == list(rows.ROW_KEYS)
    assert rows.busbw_samples(row, 2) == pytest.approx([1024 / 25e-6 / 1e9, 1024 / 20e-6 / 1e9, 1024 / 35e-6 / 1e9])

    bad = rows.measured("all_gather", 128, 1024, "float32", 2, [[1e-5], [1e-5]], [0, 3])
    assert bad["wrong"] == 3 and bad["status"] == "error"
    assert bad["error"] == "data check: 3 wrong element(s) (rank 1: 3)"
    assert bad["busbw_gbps"] == pytest.approx(bad["algbw_gbps"] * 0.5)

    missing = rows.unmeasured("reduce", 2, 8, "float32", "timeout", "timeout: no progress")
    assert list(missing) == list(rows.ROW_KEYS) and missing["time_us"] is None and missing["wrong"] is None


def test_fault_specs():
    assert faults.parse("corrupt:rank=1:op=all_reduce, hang:rank=0:op=all_gather:bytes=8") == [
        faults.Fault("corrupt", 1, "all_reduce"), faults.Fault("hang", 0, "all_gather", 8)]
    assert faults.parse(None) == [] and faults.parse("") == []
    fault = faults.Fault("corrupt", 1, "all_reduce")
    assert fault.applies("corrupt", 1, "all_reduce", 64) and not fault.applies("corrupt", 0, "all_reduce", 64)
    for bad, message in (("explode:rank=1", "unknown fault"), ("hang:op=reduce", "names no rank"),
                         ("hang:rank=1:op=allreduce", "unknown op"), ("hang:rank=1:size=8", "bad field")):
        with pytest.raises(ValueError, match=message):
            faults.parse(bad)


def test_summed_patterns_stay_exact_in_bfloat16():
    torch = pytest.importorskip("torch")
    from gpucert.physics.nccl.collectives import pattern, summed

    index = torch.arange(0, 1000)
    for nranks in (2, 8, 32):
        exact = summed(nranks)(index)
        assert exact.abs().max() <= 8 * nranks
        assert torch.equal(exact.to(torch.bfloat16).to(torch.int64), exact)
    assert not torch.equal(pattern(0, index), pattern(1, index))  # ranks are told apart


# stand-ins for datasheet.GpuSpec: the peak reads only these two fields
H100 = SimpleNamespace(model="H100 SXM5 80GB", nvlink_gbps=450.0)
PCIE_ONLY = SimpleNamespace(model="L40S", nvlink_gbps=None)


def _snapshot(name, link):
    return {"gpus": [{"name": name}, {"name": name}],
            "topology": {"matrix": {"GPU0": {"GPU0": "X", "GPU1": link}, "GPU1": {"GPU0": link, "GPU1": "X"}}}}


def test_nvlink_peak_follows_datasheet_and_topology():
    table = {"NVIDIA H100 80GB HBM3": H100, "NVIDIA L40S": PCIE_ONLY}
    lookup = table.get
    assert nvlink_peak(_snapshot("NVIDIA H100 80GB HBM3", "NV18"), 2, lookup) == (450.0, None)
    peak, why = nvlink_peak(_snapshot("NVIDIA H100 80GB HBM3", "PHB"), 2, lookup)
    assert peak is None and "PHB, not NVLink" in why
    peak, why = nvlink_peak(_snapshot("NVIDIA L40S", "PHB"), 2, lookup)
    assert peak is None and "has no NVLink" in why
    peak, why = nvlink_peak(_snapshot("NVIDIA X999", "NV4"), 2, lookup)
    assert peak is None and "no datasheet entry for NVIDIA X999" in why
    peak, why = nvlink_peak({"gpus": []}, 2, lookup)
    assert peak is None and "0 GPU(s)" in why
