"""Datasheet peaks per GPU model (TO BE FILLED: see the interface below).

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
"""
