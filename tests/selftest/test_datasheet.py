"""Datasheet matching from NVML / nvidia-smi product names, and the shape of every entry."""

import pytest

from gpucert.physics import datasheet
from gpucert.physics.datasheet import DTYPES, SPECS, lookup

# product name as NVML / nvidia-smi prints it → canonical model
NAMES = {
    "NVIDIA H100 80GB HBM3": "H100 SXM5 80GB",
    "NVIDIA H100 PCIe": "H100 PCIe 80GB",
    "NVIDIA H100 NVL": "H100 NVL 94GB",
    "NVIDIA H200": "H200 SXM 141GB",
    "NVIDIA H200 NVL": "H200 NVL 141GB",
    "NVIDIA A100-SXM4-80GB": "A100 SXM4 80GB",
    "NVIDIA A100-SXM4-40GB": "A100 SXM4 40GB",
    "NVIDIA A100-PCIE-40GB": "A100 PCIe 40GB",
    "NVIDIA A100 80GB PCIe": "A100 PCIe 80GB",
    "NVIDIA B200": "B200 180GB",
    "NVIDIA L40S": "L40S 48GB",
    "NVIDIA L4": "L4 24GB",
}


@pytest.mark.parametrize("name,model", NAMES.items())
def test_every_product_name_matches_its_model(name, model):
    assert lookup(name).model == model


@pytest.mark.parametrize("name", ["A100-SXM4-40GB", "nvidia h100 80gb hbm3", "  NVIDIA  H200 NVL "])
def test_matching_tolerates_old_drivers_case_and_spacing(name):
    assert lookup(name) is not None


@pytest.mark.parametrize("name", [
    "NVIDIA GeForce RTX 4090", "NVIDIA L40", "NVIDIA H800", "NVIDIA GH200 480GB", "NVIDIA H100",
    "NVIDIA A10", "NVIDIA L4S", "Tesla V100-SXM2-32GB", "", None,
])
def test_unknown_models_have_no_entry(name):
    assert lookup(name) is None


def test_the_fixture_gpu_of_the_suite_resolves():
    snapshot = {"gpus": [{"name": "NVIDIA H100 80GB HBM3"}, {"name": "NVIDIA H100 80GB HBM3"}]}
    name, spec = datasheet.gpu_of(snapshot, 1)
    assert name == "NVIDIA H100 80GB HBM3" and spec.model == "H100 SXM5 80GB"


def test_every_spec_has_every_dtype_except_fp8_on_ampere():
    for spec in SPECS:
        expected = set(DTYPES) - {"fp8"} if spec.model.startswith("A100") else set(DTYPES)
        assert set(spec.dense_tflops) == expected, spec.model
        assert all(v > 0 for v in spec.dense_tflops.values()), spec.model


def test_dense_peaks_are_half_the_sparse_datasheet_figures_unless_printed():
    h100 = lookup("NVIDIA H100 80GB HBM3")
    assert h100.dense_tflops == {"fp8": 1979, "bf16": 989.5, "fp16": 989.5, "tf32": 494.5, "fp32": 67}
    assert lookup("NVIDIA A100-SXM4-80GB").dense_tflops["bf16"] == 312
    assert lookup("NVIDIA L40S").dense_tflops["bf16"] == 362.05  # printed dense by its datasheet


def test_tensor_dtypes_rank_as_the_hardware_does():
    for spec in SPECS:
        peaks = spec.dense_tflops
        assert peaks["bf16"] == peaks["fp16"], spec.model
        assert peaks.get("fp8", 2 * peaks["bf16"]) == pytest.approx(2 * peaks["bf16"], rel=0.02), spec.model
        assert peaks["bf16"] == pytest.approx(2 * peaks["tf32"], rel=0.05), spec.model
        assert peaks["fp32"] < peaks["tf32"], spec.model


def test_links_and_pcie_are_per_direction():
    h100 = lookup("NVIDIA H100 80GB HBM3")
    assert (h100.nvlink_gbps, h100.nvlink_links, h100.pcie_gen, h100.pcie_gbps) == (450, 18, 5, 64)
    assert lookup("NVIDIA B200").nvlink_gbps == 900
    for spec in SPECS:
        assert spec.pcie_gbps == {4: 32, 5: 64}[spec.pcie_gen], spec.model
        assert (spec.nvlink_gbps is None) == (spec.nvlink_links is None), spec.model
    assert lookup("NVIDIA L40S").nvlink_gbps is None and lookup("NVIDIA L4").nvlink_links is None


def test_names_are_unique_and_the_note_names_the_gpu():
    assert len({spec.model for spec in SPECS}) == len(SPECS)
    assert datasheet.no_entry_note("NVIDIA H800") == "no datasheet entry for NVIDIA H800: judged on baselines only"
