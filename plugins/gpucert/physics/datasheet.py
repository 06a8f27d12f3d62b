"""Datasheet peaks per GPU model: what the physics checks are judged against.

Interface (kept stable; the checks and engines use it):

    @dataclass(frozen=True)
    class GpuSpec:
        model: str                          canonical name, e.g. "H100 SXM5 80GB"
        dense_tflops: dict[str, float]      dense (no sparsity) peak per dtype: fp8, bf16, fp16, tf32, fp32
        memory_gbps: float                  HBM/GDDR bandwidth, 1e9 B/s
        nvlink_gbps: float | None           NVLink bandwidth per GPU per direction, 1e9 B/s (None: no NVLink)
        nvlink_links: int | None
        pcie_gen: int
        pcie_gbps: float                    PCIe per direction, 1e9 B/s (x16 of that generation)

    lookup(gpu_name: str) -> GpuSpec | None     from the NVML / nvidia-smi product name

Conventions, so every row reads the same:
- NVIDIA's datasheets print tensor-core peaks "with sparsity" (2:4 structured); the dense peak a
  plain GEMM can reach is half of that, so `dense_tflops` = datasheet figure / 2 for every tensor
  dtype (fp8, bf16, fp16, tf32), except where the datasheet prints the dense figure itself (L40S),
  which is taken as printed. fp32 is the non-tensor (FFMA) peak, which has no sparse figure.
  A100 (Ampere) has no fp8 tensor cores: its entry has no "fp8" key.
- NVLink and PCIe figures in datasheets are bidirectional totals ("NVLink: 900GB/s", "PCIe Gen5:
  128GB/s"); gpucert compares one-way copies, so both are stored per direction (total / 2).
  nvidia-smi reports 26.562 GB/s per NVLink4 link (the signalling rate); the datasheet's usable
  figure is 25 GB/s per link per direction (900 / 18 / 2), and that is the one stored.
- PCIe cards (H100 PCIe, H100 NVL, H200 NVL, A100 PCIe) reach their NVLink figure only with the
  NVLink bridge fitted; the P2P check follows the topology the snapshot reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DTYPES = ("fp8", "bf16", "fp16", "tf32", "fp32")


@dataclass(frozen=True)
class GpuSpec:
    model: str
    dense_tflops: dict[str, float]
    memory_gbps: float
    nvlink_gbps: float | None
    nvlink_links: int | None
    pcie_gen: int
    pcie_gbps: float


# PCIe x16 per direction, 1e9 B/s: the datasheets' bidirectional x16 figure halved
# ("PCIe Gen4: 64GB/s" in the A100, L40S and L4 datasheets; "PCIe Gen5: 128GB/s" in the H100,
# H200 and HGX B200 datasheets).
_PCIE_PER_DIRECTION = {4: 64 / 2, 5: 128 / 2}


def _sparse_halved(**sparse_tflops: float) -> dict[str, float]:
    """Dense peaks from the datasheet's "with sparsity" tensor figures (dense = sparse / 2)."""
    return {dtype: value / 2 for dtype, value in sparse_tflops.items()}


def _spec(model: str, *, fp32: float, memory_gbps: float, nvlink_total_gbps: float | None,
          nvlink_links: int | None, pcie_gen: int, tensor_sparse: dict[str, float] | None = None,
          tensor_dense: dict[str, float] | None = None) -> GpuSpec:
    """One row. Tensor peaks as the datasheet prints them: `tensor_sparse` (halved here) or, where
    the datasheet prints the dense figure itself, `tensor_dense` (taken as is)."""
    tensor = _sparse_halved(**tensor_sparse) if tensor_sparse else dict(tensor_dense or {})
    return GpuSpec(
        model=model,
        dense_tflops={**tensor, "fp32": fp32},
        memory_gbps=memory_gbps,
        nvlink_gbps=nvlink_total_gbps / 2 if nvlink_total_gbps else None,
        nvlink_links=nvlink_links,
        pcie_gen=pcie_gen,
        pcie_gbps=_PCIE_PER_DIRECTION[pcie_gen],
    )


# ---- Hopper ---------------------------------------------------------------------------------
# Source: NVIDIA H100 Tensor Core GPU datasheet (H100 SXM / H100 PCIe columns; later revisions
# H100 SXM / H100 NVL), figures "with sparsity": SXM TF32 989, BF16/FP16 1,979, FP8 3,958,
# FP32 67 TFLOPS, 3.35 TB/s, NVLink 900GB/s, PCIe Gen5 128GB/s. 18 NVLink4 links per SXM GPU
# (NVIDIA H100 Tensor Core GPU Architecture whitepaper: 18 fourth-generation links, 900 GB/s total).
H100_SXM = _spec("H100 SXM5 80GB", tensor_sparse={"fp8": 3958, "bf16": 1979, "fp16": 1979, "tf32": 989},
                 fp32=67, memory_gbps=3350, nvlink_total_gbps=900, nvlink_links=18, pcie_gen=5)
# H100 datasheet, H100 PCIe column: TF32 756, BF16/FP16 1,513, FP8 3,026, FP32 51 TFLOPS,
# 2TB/s (2,000 GB/s), "NVLink: 600GB/s" through the NVLink bridge (12 links, NV12 in
# `nvidia-smi topo -m`), PCIe Gen5 128GB/s.
H100_PCIE = _spec("H100 PCIe 80GB", tensor_sparse={"fp8": 3026, "bf16": 1513, "fp16": 1513, "tf32": 756},
                  fp32=51, memory_gbps=2000, nvlink_total_gbps=600, nvlink_links=12, pcie_gen=5)
# H100 datasheet, H100 NVL column (94 GB per GPU): TF32 835, BF16/FP16 1,671, FP8 3,341,
# FP32 60 TFLOPS, 3.9TB/s, "NVLink: 600GB/s" (bridge, 12 links), PCIe Gen5 128GB/s.
H100_NVL = _spec("H100 NVL 94GB", tensor_sparse={"fp8": 3341, "bf16": 1671, "fp16": 1671, "tf32": 835},
                 fp32=60, memory_gbps=3900, nvlink_total_gbps=600, nvlink_links=12, pcie_gen=5)
# NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column: same compute as H100 SXM (TF32 989,
# BF16/FP16 1,979, FP8 3,958, FP32 67 TFLOPS), 141GB HBM3e at 4.8TB/s, NVLink 900GB/s (18
# links), PCIe Gen5 128GB/s.
H200_SXM = _spec("H200 SXM 141GB", tensor_sparse={"fp8": 3958, "bf16": 1979, "fp16": 1979, "tf32": 989},
                 fp32=67, memory_gbps=4800, nvlink_total_gbps=900, nvlink_links=18, pcie_gen=5)
# H200 datasheet, H200 NVL column: TF32 835, BF16/FP16 1,671, FP8 3,341, FP32 60 TFLOPS,
# 141GB at 4.8TB/s, "2- or 4-way NVIDIA NVLink bridge: 900GB/s per GPU" (18 links), PCIe Gen5
# 128GB/s.
H200_NVL = _spec("H200 NVL 141GB", tensor_sparse={"fp8": 3341, "bf16": 1671, "fp16": 1671, "tf32": 835},
                 fp32=60, memory_gbps=4800, nvlink_total_gbps=900, nvlink_links=18, pcie_gen=5)

# ---- Ampere (no fp8) -------------------------------------------------------------------------
# Source: NVIDIA A100 Tensor Core GPU datasheet (nvidia-a100-datasheet-us-nvidia-1758950-r4):
# TF32 312, BF16/FP16 624 TFLOPS with sparsity, FP32 19.5 TFLOPS; memory bandwidth 40GB PCIe
# 1,555 GB/s, 80GB PCIe 1,935 GB/s, 40GB SXM 1,555 GB/s, 80GB SXM 2,039 GB/s; NVLink 600GB/s
# (SXM through HGX A100 boards; PCIe through an NVLink bridge for 2 GPUs), PCIe Gen4 64GB/s.
# 12 NVLink3 links per GPU (NVIDIA A100 Tensor Core GPU Architecture whitepaper: 12 third-generation
# links, 600 GB/s total).
_A100_TENSOR = {"bf16": 624, "fp16": 624, "tf32": 312}
A100_SXM_40 = _spec("A100 SXM4 40GB", tensor_sparse=_A100_TENSOR, fp32=19.5, memory_gbps=1555,
                    nvlink_total_gbps=600, nvlink_links=12, pcie_gen=4)
A100_SXM_80 = _spec("A100 SXM4 80GB", tensor_sparse=_A100_TENSOR, fp32=19.5, memory_gbps=2039,
                    nvlink_total_gbps=600, nvlink_links=12, pcie_gen=4)
A100_PCIE_40 = _spec("A100 PCIe 40GB", tensor_sparse=_A100_TENSOR, fp32=19.5, memory_gbps=1555,
                     nvlink_total_gbps=600, nvlink_links=12, pcie_gen=4)
A100_PCIE_80 = _spec("A100 PCIe 80GB", tensor_sparse=_A100_TENSOR, fp32=19.5, memory_gbps=1935,
                     nvlink_total_gbps=600, nvlink_links=12, pcie_gen=4)

# ---- Blackwell -------------------------------------------------------------------------------
# Source: NVIDIA HGX B200 datasheet / HGX platform specifications, "Individual Blackwell GPU
# Specifications", HGX B200 column (1,000 W): FP8 9 PFLOPS, FP16/BF16 4.5 PFLOPS, TF32
# 2.2 PFLOPS (all with sparsity), FP32 75 TFLOPS, 180GB HBM3e at 7.7TB/s, fifth-generation
# NVLink 1.8TB/s (18 links of 100 GB/s bidirectional), PCIe Gen5 128GB/s.
B200 = _spec("B200 180GB", tensor_sparse={"fp8": 9000, "bf16": 4500, "fp16": 4500, "tf32": 2200},
             fp32=75, memory_gbps=7700, nvlink_total_gbps=1800, nvlink_links=18, pcie_gen=5)

# ---- Ada Lovelace (PCIe only, no NVLink) ------------------------------------------------------
# Source: NVIDIA L40S GPU datasheet, which prints the dense figures beside the sparse ones:
# TF32 183 | 366*, BF16/FP16 362.05 | 733*, FP8 733 | 1,466* TFLOPS (* with sparsity; the dense
# column is used as printed), FP32 91.6 TFLOPS, 48GB GDDR6 at 864GB/s, "PCIe Gen4 x16: 64GB/s
# bidirectional", NVLink not supported.
L40S = _spec("L40S 48GB", tensor_dense={"fp8": 733, "bf16": 362.05, "fp16": 362.05, "tf32": 183},
             fp32=91.6, memory_gbps=864, nvlink_total_gbps=None, nvlink_links=None, pcie_gen=4)
# Source: NVIDIA L4 Tensor Core GPU datasheet: TF32 120, BF16/FP16 242, FP8 485 TFLOPS with
# sparsity, FP32 30.3 TFLOPS, 24GB GDDR6 at 300GB/s, PCIe Gen4 x16 64GB/s, no NVLink.
L4 = _spec("L4 24GB", tensor_sparse={"fp8": 485, "bf16": 242, "fp16": 242, "tf32": 120},
           fp32=30.3, memory_gbps=300, nvlink_total_gbps=None, nvlink_links=None, pcie_gen=4)


# NVML / nvidia-smi product names → spec. Patterns match the whole name, case-insensitively,
# after collapsing whitespace; older drivers print the names without the "NVIDIA " prefix.
# Order does not matter: the patterns are exclusive (e.g. "H200" never matches "H200 NVL").
_TABLE: tuple[tuple[str, GpuSpec], ...] = (
    (r"H100 80GB HBM3", H100_SXM),
    (r"H100 PCIe", H100_PCIE),
    (r"H100 NVL", H100_NVL),
    (r"H200", H200_SXM),
    (r"H200 NVL", H200_NVL),
    (r"A100-SXM4?-40GB", A100_SXM_40),
    (r"A100-SXM4?-80GB", A100_SXM_80),
    (r"A100-PCIE-40GB", A100_PCIE_40),
    (r"A100 80GB PCIe", A100_PCIE_80),
    (r"B200", B200),
    (r"L40S", L40S),
    (r"L4", L4),
)
_COMPILED = tuple((re.compile(rf"(?:NVIDIA )?{pattern}", re.IGNORECASE), spec) for pattern, spec in _TABLE)

SPECS: tuple[GpuSpec, ...] = tuple(spec for _, spec in _TABLE)


def lookup(gpu_name: str | None) -> GpuSpec | None:
    """The datasheet entry for an NVML / nvidia-smi product name, or None for an unknown model."""
    if not gpu_name:
        return None
    name = " ".join(str(gpu_name).split())
    for pattern, spec in _COMPILED:
        if pattern.fullmatch(name):
            return spec
    return None


def no_entry_note(gpu_name: str | None) -> str:
    """What the card says for a GPU the table does not know."""
    return f"no datasheet entry for {gpu_name or 'this GPU'}: judged on baselines only"


def gpu_of(snapshot: dict | None, index: int) -> tuple[str, GpuSpec | None]:
    """(product name, datasheet entry or None) of CUDA device `index`: the name from the stack
    snapshot (nvidia-smi / NVML), else from the CUDA runtime where the snapshot lacks that GPU."""
    gpus = (snapshot or {}).get("gpus") or []
    name = gpus[index].get("name") if index < len(gpus) else None
    if not name:
        import torch
        name = torch.cuda.get_device_name(index)
    return name, lookup(name)
