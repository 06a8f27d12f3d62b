"""Memory copy bandwidth of one GPU: device copy, host→device and device→host (pinned, pageable).

Bytes per iteration, so figures compare with the datasheet the same way everywhere:
- device_copy: `dst.copy_(src)` on the GPU reads `size` and writes `size`: bytes = 2 × size,
  judged against the HBM/GDDR bandwidth (a datasheet figure that counts reads plus writes);
- h2d_* / d2h_*: one PCIe crossing: bytes = size, judged against PCIe per direction.
Pinned copies are asynchronous (non_blocking), so iterations queue back to back like
bandwidthTest's; pageable copies go through the driver's staging buffer, as an application's
unpinned tensors do. Buffers are far larger than L2, so no flush is needed.
On the CPU, device_copy is a host memcpy of tensors (the engine's self-test); H2D/D2H skip.
"""

from __future__ import annotations

from .core import Benchmark, BenchmarkSkipped, is_cuda

KINDS = ("device_copy", "h2d_pinned", "h2d_pageable", "d2h_pinned", "d2h_pageable")
PATTERN_BYTES = 4096  # the source repeats one random block of this size; sizes round down to it
CHECKED_BLOCKS = 64   # blocks of the destination compared after the timed copies
DEVICE_COPY_BYTES = 2 << 30  # shipped defaults: 2 GiB on the GPU (bandwidth plateau, 4 GiB moved)
HOST_COPY_BYTES = 1 << 30    # 1 GiB over PCIe: saturates the link, keeps a pageable copy ~0.1 s


def bytes_per_iteration(kind: str, size: int) -> int:
    return 2 * size if kind == "device_copy" else size


def datasheet_peak(kind: str, spec) -> float | None:
    """What a copy kind is judged against: memory bandwidth (device copy) or PCIe per direction."""
    if spec is None:
        return None
    return spec.memory_gbps if kind == "device_copy" else spec.pcie_gbps


class MemoryCopy(Benchmark):
    name = "memory"

    def __init__(self, kind: str, size_bytes: int, seed: int = 0):
        if kind not in KINDS:
            raise ValueError(f"unknown copy kind {kind!r} (valid: {', '.join(KINDS)})")
        size = size_bytes // PATTERN_BYTES * PATTERN_BYTES
        if size < PATTERN_BYTES:
            raise ValueError(f"copy size must be at least {PATTERN_BYTES} bytes, got {size_bytes}")
        super().__init__(kind=kind, size_bytes=size)
        self.kind, self.size, self.seed = kind, size, seed

    def setup(self, device: str) -> None:
        import torch
        kind = self.kind
        if kind != "device_copy" and not is_cuda(device):
            raise BenchmarkSkipped(f"{kind} copies between host and a CUDA GPU; {device} is not one")
        pinned = kind.endswith("_pinned")
        src_device = "cpu" if kind.startswith("h2d") else device
        dst_device = "cpu" if kind.startswith("d2h") else device
        self.non_blocking = pinned
        gen = torch.Generator().manual_seed(self.seed)
        # random bytes 1..255: a copy that did not happen (zeros) or landed shifted is visible
        self.block = torch.randint(1, 256, (PATTERN_BYTES,), generator=gen, dtype=torch.uint8)
        self.src = self._buffer(src_device, pinned)
        rows = self.size // PATTERN_BYTES
        self.src.view(rows, PATTERN_BYTES).copy_(self.block.to(src_device).expand(rows, PATTERN_BYTES))
        self.dst = self._buffer(dst_device, pinned)
        self.dst.zero_()  # also faults in pageable pages, so the first timed copy does not pay for it

    def _buffer(self, device: str, pinned: bool):
        import torch
        if device == "cpu":
            return torch.empty(self.size, dtype=torch.uint8, pin_memory=pinned)
        return torch.empty(self.size, dtype=torch.uint8, device=device)

    def op(self) -> None:
        self.dst.copy_(self.src, non_blocking=self.non_blocking)

    def bytes_moved(self) -> float:
        return float(bytes_per_iteration(self.kind, self.size))

    def check(self) -> str | None:
        import torch
        rows = self.size // PATTERN_BYTES
        picked = torch.linspace(0, rows - 1, steps=min(rows, CHECKED_BLOCKS)).long()
        if str(self.dst.device) != "cpu":
            picked = picked.to(self.dst.device)
        got = self.dst.view(rows, PATTERN_BYTES).index_select(0, picked).cpu()
        wrong = int((got != self.block).any(dim=1).sum())
        if wrong:
            return f"{wrong} of {len(picked)} sampled {PATTERN_BYTES}-byte blocks differ from the source"
        return None
