"""Profile names: GPU model × count × the weakest GPU↔GPU link."""


import pytest

from gpucert import snapshot
from gpucert.snapshot.profile import link_rank

from .captures import FIXTURE



def node(names, matrix=None):
    return {"gpus": [{"index": i, "name": name} for i, name in enumerate(names)],
            "topology": {"matrix": matrix} if matrix is not None else None}


def full_matrix(n, link_of):
    names = [f"GPU{i}" for i in range(n)]
    return {a: {b: "X" if a == b else link_of(a, b) for b in names} for a in names}


def test_fixture_profile():
    assert snapshot.profile_name(snapshot.collect(from_dir=FIXTURE)) == "2xH100-80GB-HBM3-NV18"


def test_single_gpu_has_no_interconnect():
    assert snapshot.profile_name(node(["NVIDIA H100 80GB HBM3"], {"GPU0": {"GPU0": "X"}})) \
        == "1xH100-80GB-HBM3"


@pytest.mark.parametrize("gpus", [[], None])
def test_no_gpu(gpus):
    assert snapshot.profile_name({"gpus": gpus, "topology": None}) == "no-gpu"


def test_weakest_link_names_the_profile():
    weak = {("GPU0", "GPU3"), ("GPU3", "GPU0")}
    matrix = full_matrix(4, lambda a, b: "NV12" if (a, b) in weak else "NV18")
    assert snapshot.profile_name(node(["NVIDIA H200"] * 4, matrix)) == "4xH200-NV12"


def test_pcie_only_pairs():
    matrix = full_matrix(2, lambda a, b: "SYS")
    assert snapshot.profile_name(node(["NVIDIA L40S"] * 2, matrix)) == "2xL40S-SYS"


def test_mixed_models_join_groups_in_index_order():
    matrix = full_matrix(3, lambda a, b: "PHB")
    names = ["NVIDIA A100-SXM4-80GB", "NVIDIA H100 PCIe", "NVIDIA A100-SXM4-80GB"]
    assert snapshot.profile_name(node(names, matrix)) == "2xA100-SXM4-80GB-1xH100-PCIe-PHB"


def test_unsafe_characters_are_dropped():
    assert snapshot.profile_name(node(["NVIDIA RTX 6000 Ada (beta)/x"])) == "1xRTX-6000-Ada-betax"


def test_link_strength_order():
    order = ["NV18", "NV12", "NV4", "PIX", "PXB", "PHB", "NODE", "SYS"]
    assert sorted(order, key=link_rank, reverse=True) == order
