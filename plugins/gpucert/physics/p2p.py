"""GPU-to-GPU copies, as NVIDIA's cuda-samples p2pBandwidthLatencyTest measures them, through torch.

Three benchmarks on one ordered pair (src → dst), each timed by core.measure():
- OneWayCopy: `dst.copy_(src)` of one large buffer; bytes = size.
- BothWayCopy: src → dst and dst → src at once on two streams; bytes = 2 × size.
- SmallCopies: `copies` back-to-back copies of a few bytes behind a hold kernel; the latency is
  (time of hold + copies − time of the hold alone) / copies (see measure_latency).
With `p2p=True` the copy is torch's own cross-device copy (the copy engine of the source GPU
writes into the peer over NVLink or PCIe; torch enables peer access wherever
cudaDeviceCanAccessPeer allows). With `p2p=False` it is staged through pinned host memory in
chunks, D2H of one chunk overlapping H2D of the previous one, as the driver moves a peer copy
without peer access ("P2P=Disabled" in p2pBandwidthLatencyTest). Within one device (the
matrices' diagonal) bytes count read and write (× 2), as p2pBandwidthLatencyTest counts them.

Every stream the op uses forks from and joins back into the timing device's current stream, the
one core.time_op brackets with its events, so one event pair times all of it. Devices are
strings ("cuda:0", "cpu"): on "cpu" the same code runs without streams (the self-tests).

The expected one-way peak of a pair follows its topology link (expected_oneway_peak).
"""

from __future__ import annotations

import contextlib
import re
import statistics
import time
from dataclasses import dataclass
from typing import Any

from .. import gpus
from . import core, datasheet
from .core import Benchmark, BenchmarkSkipped, Result, is_cuda, measure

# Staged (P2P off) copies move this much per D2H/H2D step; 32 steps of a 1 GiB copy keep the
# pipeline's fill and drain under ~3 % of its time.
STAGE_CHUNK_BYTES = 32 << 20
# Host time to launch one small copy through torch, generously (a cross-device copy_ costs
# ~15-30 µs: two barrier events and the memcpy; staged, two copies and two stream joins).
LAUNCH_BUDGET_S = {"direct": 60e-6, "staged": 150e-6}
MAX_SM_CLOCK_HZ = core.MAX_SM_CLOCK_HZ
_CHECK_POINTS = 4096  # positions compared after the timed runs (the whole buffer would cost a copy)


# ---- devices and streams ----------------------------------------------------------------------

def _torch():
    import torch
    return torch


def available_gpus() -> tuple[int, str]:
    """(CUDA device count, why there are none) without creating a CUDA context."""
    return gpus.visible()


def too_few_gpus(count: int, reason: str = "") -> str:
    return gpus.too_few("P2P", 2, count, reason)


def peer_access(src: str, dst: str) -> bool:
    """cudaDeviceCanAccessPeer for two GPUs; a device always reaches itself; CPUs never peer."""
    if src == dst:
        return True
    if not (is_cuda(src) and is_cuda(dst)):
        return False
    torch = _torch()
    return bool(torch.cuda.can_device_access_peer(torch.device(src), torch.device(dst)))


def device_uuid(device: str) -> str | None:
    """The GPU's UUID as torch reports it (matched to the snapshot's nvidia-smi UUIDs)."""
    if not is_cuda(device):
        return None
    props = _torch().cuda.get_device_properties(device)
    uuid = getattr(props, "uuid", None)
    return str(uuid) if uuid is not None else None


def _main_stream(device: str):
    """The stream core.time_op records its events on: the device's current stream."""
    return _torch().cuda.current_stream(device) if is_cuda(device) else None


def _new_stream(device: str):
    return _torch().cuda.Stream(device=device) if is_cuda(device) else None


def _on(stream):
    return _torch().cuda.stream(stream) if stream is not None else contextlib.nullcontext()


def _fork(main, streams) -> None:
    for stream in streams:
        stream.wait_stream(main)


def _join(main, streams) -> None:
    for stream in streams:
        main.wait_stream(stream)


def _synchronize(*devices: str) -> None:
    for device in {d for d in devices if is_cuda(d)}:
        _torch().cuda.synchronize(device)


def copy_bytes(size: int, *, same_device: bool, both_ways: bool = False) -> int:
    """Bytes one iteration moves, p2pBandwidthLatencyTest's convention: each direction counts the
    buffer once; within one device the copy reads and writes it, so it counts twice."""
    return size * (2 if both_ways else 1) * (2 if same_device else 1)


# ---- one direction of a transfer --------------------------------------------------------------

@dataclass
class Lane:
    """One direction of a transfer: its buffers, the streams it runs on and, when P2P is off,
    the pinned host buffer it is staged through."""

    src: Any                 # uint8 tensor on the source device
    dst: Any                 # uint8 tensor on the destination device
    src_stream: Any = None   # the source device's stream (None on CPU)
    dst_stream: Any = None   # the destination device's stream for the H2D half (staged only)
    host: Any = None         # staging buffer: None means a direct (P2P) copy
    chunk: int = STAGE_CHUNK_BYTES

    @classmethod
    def allocate(cls, src: str, dst: str, size: int, *, staged: bool, src_stream,
                 chunk: int = STAGE_CHUNK_BYTES) -> Lane:
        """Random source bytes, a zeroed destination; staged: a pinned host buffer and a stream
        on the destination device for the H2D half."""
        torch = _torch()
        source = torch.randint(0, 256, (size,), dtype=torch.uint8, device=src)
        target = torch.zeros(size, dtype=torch.uint8, device=dst)
        if not staged:
            return cls(source, target, src_stream)
        host = torch.empty(size, dtype=torch.uint8, pin_memory=is_cuda(src) or is_cuda(dst))
        return cls(source, target, src_stream, _new_stream(dst), host, max(1, chunk))

    def streams(self) -> list:
        return [s for s in (self.src_stream, self.dst_stream) if s is not None]

    def enqueue(self) -> None:
        if self.host is None:
            # torch copies on the source device's current stream (a P2P write by its copy engine)
            with _on(self.src_stream):
                self.dst.copy_(self.src, non_blocking=True)
            return
        for start in range(0, self.src.numel(), self.chunk):
            piece = slice(start, start + self.chunk)
            with _on(self.src_stream):
                self.host[piece].copy_(self.src[piece], non_blocking=True)
            if self.dst_stream is not None:
                self.dst_stream.wait_stream(self.src_stream)
            with _on(self.dst_stream):
                self.dst[piece].copy_(self.host[piece], non_blocking=True)

    def mismatch(self) -> str | None:
        """None if the destination holds the source's bytes (sampled), else what differs."""
        torch = _torch()
        size = self.src.numel()
        points = min(size, _CHECK_POINTS)
        # integer arithmetic: a float32 linspace rounds the last index of 1 GiB past the end
        index = torch.arange(points, dtype=torch.int64) * (size - 1) // max(points - 1, 1)
        want = self.src[index.to(self.src.device)].cpu()
        got = self.dst[index.to(self.dst.device)].cpu()
        wrong = int((want != got).sum())
        if wrong:
            return (f"{wrong} of {len(index)} sampled bytes differ after the copy "
                    f"{self.src.device} → {self.dst.device}")
        return None


# ---- the benchmarks ---------------------------------------------------------------------------

class _PairBenchmark(Benchmark):
    """Shared lifecycle of the pair benchmarks: timed from the source device; op() forks every
    side stream from the main stream, enqueues every lane, then joins them all back."""

    def __init__(self, src: str, dst: str, **params: Any):
        super().__init__(src=str(src), dst=str(dst), **params)

    @property
    def staged(self) -> bool:
        return not self.params.get("p2p", True)

    def setup(self, device: str) -> None:
        for name in ("src", "dst"):
            dev = self.params[name]
            if is_cuda(dev) and not _torch().cuda.is_available():
                raise BenchmarkSkipped(f"{dev}: no CUDA device")
        self.main = _main_stream(device)
        self.lanes = self.make_lanes()
        self.side = [s for lane in self.lanes for s in lane.streams() if s != self.main]

    def make_lanes(self) -> list[Lane]:
        raise NotImplementedError

    def op(self) -> None:
        _fork(self.main, self.side)
        # enqueue every lane before any join: torch's cross-device barrier records on the
        # destination's current stream, which for the return lane is the main stream, so a join
        # in between would make the return lane wait for the first one
        for lane in self.lanes:
            lane.enqueue()
        _join(self.main, self.side)

    def check(self) -> str | None:
        for lane in self.lanes:
            wrong = lane.mismatch()
            if wrong:
                return wrong
        return None

    def teardown(self) -> None:
        # buffers were used on streams other than the ones they were allocated on: let every
        # device finish before the caching allocator may hand the memory out again
        _synchronize(self.params["src"], self.params["dst"])
        super().teardown()


class OneWayCopy(_PairBenchmark):
    """src → dst, one buffer of `size` bytes per iteration."""

    name = "p2p_oneway"

    def __init__(self, src: str, dst: str, size: int, *, p2p: bool = True, chunk: int = STAGE_CHUNK_BYTES):
        super().__init__(src, dst, size=int(size), p2p=bool(p2p))
        self.chunk = chunk

    def make_lanes(self) -> list[Lane]:
        src, dst, size = self.params["src"], self.params["dst"], self.params["size"]
        return [Lane.allocate(src, dst, size, staged=self.staged, src_stream=self.main, chunk=self.chunk)]

    def bytes_moved(self) -> float:
        return copy_bytes(self.params["size"], same_device=self.params["src"] == self.params["dst"])


class BothWayCopy(_PairBenchmark):
    """src → dst and dst → src at once, each on its own stream (within one device: two copies
    between two buffer pairs), timed from before both to after both."""

    name = "p2p_bothway"

    def __init__(self, src: str, dst: str, size: int, *, p2p: bool = True, chunk: int = STAGE_CHUNK_BYTES):
        super().__init__(src, dst, size=int(size), p2p=bool(p2p))
        self.chunk = chunk

    def make_lanes(self) -> list[Lane]:
        src, dst, size = self.params["src"], self.params["dst"], self.params["size"]
        # both lanes on side streams: the return lane's barrier records on the main stream
        return [Lane.allocate(a, b, size, staged=self.staged, src_stream=_new_stream(a), chunk=self.chunk)
                for a, b in ((src, dst), (dst, src))]

    def bytes_moved(self) -> float:
        return copy_bytes(self.params["size"], same_device=self.params["src"] == self.params["dst"],
                          both_ways=True)


class HoldKernel(Benchmark):
    """A GPU spin of `cycles` clock cycles on the timing stream (torch.cuda._sleep): what
    SmallCopies queues its copies behind, timed alone so it can be subtracted. No-op on CPU."""

    name = "p2p_hold"

    def __init__(self, cycles: int):
        super().__init__(cycles=int(cycles))

    def setup(self, device: str) -> None:
        self.cuda = is_cuda(device)

    def op(self) -> None:
        hold(self.params["cycles"] if self.cuda else 0)


hold = core.spin_gpu
hold_available = core.can_spin_gpu


class SmallCopies(_PairBenchmark):
    """`copies` copies of `nbytes` each, one after the other (each lands before the next
    starts), queued behind a hold of `hold_cycles` so the GPU runs them back to back however
    slowly the host launches them (p2pBandwidthLatencyTest's delay kernel). Records the host time
    each op() took to launch everything in `launch_s`."""

    name = "p2p_latency"

    def __init__(self, src: str, dst: str, *, nbytes: int = 4, copies: int = 100, p2p: bool = True,
                 hold_cycles: int = 0):
        super().__init__(src, dst, nbytes=int(nbytes), copies=int(copies), p2p=bool(p2p),
                         hold_cycles=int(hold_cycles))
        self.launch_s: list[float] = []

    def make_lanes(self) -> list[Lane]:
        src, dst, nbytes = self.params["src"], self.params["dst"], self.params["nbytes"]
        return [Lane.allocate(src, dst, nbytes, staged=self.staged, src_stream=self.main, chunk=nbytes)]

    def op(self) -> None:
        started = time.perf_counter()
        hold(self.params["hold_cycles"] if is_cuda(self.params["src"]) else 0)
        lane = self.lanes[0]
        for _ in range(self.params["copies"]):
            lane.enqueue()
            _join(self.main, self.side)  # the next copy starts after this one landed: latency, not throughput
        self.launch_s.append(time.perf_counter() - started)

    def bytes_moved(self) -> float:
        return self.params["nbytes"] * self.params["copies"]

    def teardown(self) -> None:
        launches = self.launch_s
        super().teardown()
        self.launch_s = launches


# ---- measuring a pair -------------------------------------------------------------------------

def measure_oneway(src: str, dst: str, size: int, *, p2p: bool = True, warmup: int = 3, reps: int = 20,
                   max_time_s: float = 30.0) -> Result:
    return measure(OneWayCopy(src, dst, size, p2p=p2p), src, warmup=warmup, reps=reps, max_time_s=max_time_s)


def measure_bothway(src: str, dst: str, size: int, *, p2p: bool = True, warmup: int = 3, reps: int = 20,
                    max_time_s: float = 30.0) -> Result:
    return measure(BothWayCopy(src, dst, size, p2p=p2p), src, warmup=warmup, reps=reps, max_time_s=max_time_s)


def hold_cycles_for(copies: int, staged: bool) -> int:
    """A hold long enough for the host to launch `copies` copies behind it."""
    return int(copies * LAUNCH_BUDGET_S["staged" if staged else "direct"] * MAX_SM_CLOCK_HZ)


def measure_latency(src: str, dst: str, *, nbytes: int = 4, copies: int = 100, p2p: bool = True,
                    warmup: int = 3, reps: int = 10, max_time_s: float = 30.0) -> Result:
    """Per-copy time of small copies: (hold + copies − hold alone) / copies, per iteration.

    On a GPU without torch.cuda._sleep, or on CPU, there is no hold and the figure includes
    the host's launch time (the note says so on a GPU)."""
    cuda = is_cuda(src)
    cycles = hold_cycles_for(copies, staged=not p2p) if cuda and hold_available() else 0
    result = None
    for _ in range(2):  # a hold the launches outran is lengthened once
        held = measure(HoldKernel(cycles), src, warmup=warmup, reps=reps, max_time_s=max_time_s) if cycles else None
        bench = SmallCopies(src, dst, nbytes=nbytes, copies=copies, p2p=p2p, hold_cycles=cycles)
        timed = measure(bench, src, warmup=warmup, reps=reps, max_time_s=max_time_s)
        launches = bench.launch_s[warmup:] or bench.launch_s
        result = per_copy_latency(timed, held, copies, launches if cycles else None)
        outran = host_outran_hold(launches, held) if cycles else None
        if not outran:
            break
        cycles = int(cycles * 2 * outran)
    if cuda and not cycles:
        result.note = _join_notes(result.note, "no hold kernel (torch.cuda._sleep): the latency "
                                               "includes the host's launch time")
    return result


def host_outran_hold(launch_s: list[float], held: Result | None) -> float | None:
    """launch time / hold time when the host's median launch of one iteration took longer than
    the hold (the GPU waited for the host), else None."""
    hold_s = held.median_s if held is not None else None
    if not launch_s or not hold_s:
        return None
    ratio = statistics.median(launch_s) / hold_s
    return ratio if ratio > 1 else None


def per_copy_latency(timed: Result, held: Result | None, copies: int,
                     launch_s: list[float] | None = None) -> Result:
    """The latency Result: per-iteration (timed − median hold) / copies, in seconds (no hold:
    `held` is None)."""
    result = Result("p2p_latency", dict(timed.params), timed.device, status=timed.status, error=timed.error,
                    warmup=timed.warmup, bytes=timed.bytes / copies if timed.bytes else None, note=timed.note)
    if timed.status != "ok":
        return result
    if held is not None and held.status != "ok":
        result.status, result.error = "error", f"hold kernel: {held.error}"
        return result
    hold_s = held.median_s if held is not None else 0.0
    result.samples_s = [(t - hold_s) / copies for t in timed.samples_s]
    if statistics.median(result.samples_s) <= 0:
        result.status = "error"
        result.error = (f"{copies} copies took no measurable time beyond the {hold_s * 1e6:.1f} µs hold "
                        "(the hold time is noisier than the copies)")
    if launch_s:
        ratio = host_outran_hold(launch_s, held)
        if ratio:
            result.note = _join_notes(result.note, (
                f"host-bound: launching took {statistics.median(launch_s) * 1e6:.0f} µs, longer "
                f"than the {hold_s * 1e6:.0f} µs hold; the latency includes host launch time"))
    return result


def _join_notes(*notes: str | None) -> str | None:
    return "; ".join(n for n in notes if n) or None


# ---- what a pair should reach -----------------------------------------------------------------

# PCIe per-lane data rate per direction, 1e9 B/s, after line encoding. Source: PCI-SIG, PCI Express
# Base Specification revisions 1.0-7.0: Gen1 2.5 GT/s and Gen2 5 GT/s with 8b/10b encoding;
# Gen3 8, Gen4 16, Gen5 32 GT/s with 128b/130b; Gen6 64 and Gen7 128 GT/s (PAM4) in FLIT mode,
# 242 bytes of data per 256-byte FLIT. An x16 Gen5 link: 16 × 3.938 = 63.0 GB/s per direction.
# TLP headers and flow control take a further ~10-15 %: no copy reaches these figures.
PCIE_LANE_GBPS: dict[int, float] = {
    1: 2.5 * 8 / 10 / 8,
    2: 5.0 * 8 / 10 / 8,
    3: 8.0 * 128 / 130 / 8,
    4: 16.0 * 128 / 130 / 8,
    5: 32.0 * 128 / 130 / 8,
    6: 64.0 * 242 / 256 / 8,
    7: 128.0 * 242 / 256 / 8,
}
PCIE_LINKS = ("PIX", "PXB", "PHB", "NODE", "SYS", "SOC")  # `nvidia-smi topo -m` kinds through PCIe
_NV_LINK = re.compile(r"^NV(\d+)$")


@dataclass(frozen=True)
class Expectation:
    """The one-way peak a pair is judged against, and how it was found (shown on the card)."""

    link: str | None
    peak_gbps: float | None
    basis: str


def _uuid_key(uuid: Any) -> str:
    return re.sub(r"^gpu-|-", "", str(uuid or "").strip().lower())


def snapshot_gpu(snapshot: dict | None, uuid: str | None, index: int) -> dict | None:
    """The snapshot's record of a torch device: by UUID (CUDA_VISIBLE_DEVICES and CUDA's device
    order may differ from nvidia-smi's), else the record with the same index."""
    gpus = (snapshot or {}).get("gpus") or []
    if uuid:
        for gpu in gpus:
            if gpu.get("uuid") and _uuid_key(gpu["uuid"]) == _uuid_key(uuid):
                return gpu
    return next((gpu for gpu in gpus if gpu.get("index") == index), None)


def topology_link(snapshot: dict | None, src_gpu: dict | None, dst_gpu: dict | None) -> str | None:
    """`nvidia-smi topo -m`'s link between two GPUs ("NV18", "PIX", "SYS", …), or None."""
    if not src_gpu or not dst_gpu:
        return None
    matrix = ((snapshot or {}).get("topology") or {}).get("matrix") or {}
    return (matrix.get(f"GPU{src_gpu.get('index')}") or {}).get(f"GPU{dst_gpu.get('index')}")


def _nvlink_speed(gpu: dict | None) -> float | None:
    """The median speed of a GPU's active NVLink links, GB/s per direction (nvidia-smi nvlink -s)."""
    speeds = [link["speed_gbps"] for link in (gpu or {}).get("nvlink") or []
              if link.get("active") and link.get("speed_gbps")]
    return statistics.median(speeds) if speeds else None


def _pcie_gbps(gpu: dict | None) -> tuple[float, str] | None:
    """A GPU's PCIe link per direction from the snapshot. Generation: the max the link trains to
    (an idle board reports a lower current generation to save power); width: the current one
    (a narrower link than its max is a real fault, and it is what the copy gets)."""
    pcie = (gpu or {}).get("pcie") or {}
    gen = pcie.get("gen_max") or pcie.get("gen_current")
    width = pcie.get("width_current") or pcie.get("width_max")
    if gen not in PCIE_LANE_GBPS or not width:
        return None
    return PCIE_LANE_GBPS[gen] * width, f"gen{gen} x{width}"


def pcie_peak(src_gpu: dict | None, dst_gpu: dict | None, spec=None) -> tuple[float | None, str]:
    """(one-way PCIe peak of a pair, basis): the slower end's link from the snapshot, else the
    datasheet's x16 figure."""
    links = [link for link in (_pcie_gbps(src_gpu), _pcie_gbps(dst_gpu)) if link]
    if links:
        gbps, text = min(links)
        return gbps, f"PCIe {text}: {gbps:.1f} GB/s per direction (snapshot link × PCIe spec lane rate)"
    if spec is not None and getattr(spec, "pcie_gbps", None):
        return spec.pcie_gbps, f"PCIe: datasheet {spec.pcie_gbps:g} GB/s per direction ({spec.model})"
    return None, "PCIe link unknown (no snapshot PCIe fields, no datasheet entry): judged on baselines only"


def nvlink_peak(links: int, src_gpu: dict | None, dst_gpu: dict | None, spec=None) -> tuple[float | None, str]:
    """(one-way NVLink peak over `links` bonded links, basis): the datasheet's per-direction NVLink
    bandwidth scaled by links / the GPU's link count — the figure operators compare with (H100:
    450 GB/s, 25 GB/s a link) and the one the NCCL check uses; else, for a model without an entry,
    links × the per-link rate the snapshot reports (nvidia-smi's 26.562 GB/s is the signalling
    rate, about 6 % above the usable figure)."""
    total, count = getattr(spec, "nvlink_gbps", None), getattr(spec, "nvlink_links", None)
    if total and count:
        return total * links / count, (f"NV{links}: {links}/{count} of the datasheet NVLink "
                                       f"{total:g} GB/s per direction ({spec.model})")
    speeds = [s for s in (_nvlink_speed(src_gpu), _nvlink_speed(dst_gpu)) if s]
    if speeds:
        per_link = min(speeds)
        return links * per_link, (f"NV{links}: {links} links × {per_link:g} GB/s per link per direction "
                                  "(snapshot nvidia-smi nvlink -s; no datasheet entry)")
    if total:
        return total, f"NV{links}: datasheet NVLink {total:g} GB/s per direction ({spec.model})"
    return None, f"NV{links}: no NVLink speed in the snapshot or the datasheet: judged on baselines only"


def expected_oneway_peak(link: str | None, src_gpu: dict | None, dst_gpu: dict | None, spec=None) -> Expectation:
    """What a one-way copy over this topology link can reach at most: the NVLink peak for NV#,
    the PCIe peak for PIX/PXB/PHB/NODE/SYS; None (baselines only) for an unknown link."""
    nv = _NV_LINK.match(link or "")
    if nv:
        return Expectation(link, *nvlink_peak(int(nv.group(1)), src_gpu, dst_gpu, spec))
    if link in PCIE_LINKS:
        return Expectation(link, *pcie_peak(src_gpu, dst_gpu, spec))
    return Expectation(link, None, f"topology link {link or 'unknown'}: no expected peak, judged on baselines only")


def snapshot_gpus(snapshot: dict | None, devices: list[str]) -> list[dict | None]:
    """The snapshot record of each torch device ("cuda:1" falls back to nvidia-smi's GPU1)."""
    return [snapshot_gpu(snapshot, device_uuid(d), _device_index(d)) for d in devices]


def _device_index(device: str) -> int | None:
    return _torch().device(device).index if is_cuda(device) else None


def pair_expectation(snapshot: dict | None, src_gpu: dict | None, dst_gpu: dict | None) -> Expectation:
    """The expected one-way P2P peak of a pair from the snapshot's topology and links, and the
    datasheet of the source GPU's model."""
    spec = datasheet.lookup((src_gpu or {}).get("name"))
    return expected_oneway_peak(topology_link(snapshot, src_gpu, dst_gpu), src_gpu, dst_gpu, spec)


def staged_expectation(src_gpu: dict | None, dst_gpu: dict | None) -> Expectation:
    """With P2P off the copy crosses both GPUs' PCIe links through host memory: the PCIe peak."""
    spec = datasheet.lookup((src_gpu or {}).get("name"))
    return Expectation("host", *pcie_peak(src_gpu, dst_gpu, spec))
