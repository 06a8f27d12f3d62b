"""How fast, and in how much memory, gpucert reads a gigabyte of PyTorch profiler trace.

    python tools/bench_trace_read.py /tmp/trace-bench [--size-mb 1024] [--keep]

Writes a synthetic trace shaped like what vLLM's profiler writes on one GPU during decode
(Kineto's JSON layout and indentation, Kineto's kernel args) to DIR/bench.pt.trace.json and,
in the same pass, gzipped (level 9, as torch's `tensorboard_trace_handler` does) to
DIR/bench.pt.trace.json.gz; then runs `load_trace` on each in a fresh Python process and prints
wall seconds, events, MB/s (uncompressed JSON bytes per second) and the child's peak RSS
(ru_maxrss). The traces are deleted afterwards unless --keep. Not a test: a figure to report
(docs/evidence/issue-16-forensics/bench-read.md). The target is 1 GB in at most 60 s and 4 GB.

The event mix per engine step (one CUDA-graph decode step of a 32-layer model, batch 32):
one `user_annotation` step range and its `gpu_user_annotation`, 60 `cpu_op`s, 13 `cuda_runtime`
calls (a cudaGraphLaunch, cudaLaunchKernel for sampling, copies, a synchronize) each starting an
`ac2g` flow, 352 graph kernels and 8 sampling kernels, 3 copies and a set, each ending a flow.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random

import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# what a decode step's kernels are called in a real trace (bf16 Llama-style model, FlashAttention)
GRAPH_KERNELS = [
    "void vllm::rms_norm_kernel<c10::BFloat16, 8, 3>(c10::BFloat16*, c10::BFloat16 const*, c10::BFloat16 const*, float, int, int)",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x64x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
    "void vllm::rotary_embedding_kernel<c10::BFloat16, true>(long const*, c10::BFloat16*, c10::BFloat16*, c10::BFloat16 const*, int, long, long, int, int, int)",
    "void vllm::reshape_and_cache_flash_kernel<__nv_bfloat16, __nv_bfloat16, (vllm::Fp8KVCacheDataType)0>(__nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16*, __nv_bfloat16*, long const*, int, int, int, int, int, int, float const*, float const*)",
    "void flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, cutlass::bfloat16_t, Flash_kernel_traits<128, 64, 128, 4, cutlass::bfloat16_t> >, false, false, false, false, true, true, false, false>(Flash_fwd_params)",
    "void flash_fwd_splitkv_combine_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, cutlass::bfloat16_t, Flash_kernel_traits<128, 64, 128, 4, cutlass::bfloat16_t> >, 4, 1, true>(Flash_fwd_params)",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x64x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
    "void vllm::fused_add_rms_norm_kernel<c10::BFloat16, 8>(c10::BFloat16*, c10::BFloat16*, c10::BFloat16 const*, float, int, int)",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
    "void vllm::act_and_mul_kernel<c10::BFloat16, &(c10::BFloat16 vllm::silu_kernel<c10::BFloat16>(c10::BFloat16 const&)), true>(c10::BFloat16*, c10::BFloat16 const*, int)",
    "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
]
LAYERS = 32
SAMPLING_KERNELS = [
    "void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, std::array<char*, 3ul> >(int, at::native::CUDAFunctor_add<float>, std::array<char*, 3ul>)",
    "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, at::native::(anonymous namespace)::SoftMaxForwardEpilogue>(float*, float const*, int)",
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::ArgMaxOps<float>, unsigned int, long, 4> >(at::native::ReduceOp<float, at::native::ArgMaxOps<float>, unsigned int, long, 4>)",
    "void at::native::index_elementwise_kernel<128, 4, at::native::gpu_index_kernel<at::native::index_kernel_impl<at::native::OpaqueType<4> >(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1}>(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>, at::native::index_kernel_impl<at::native::OpaqueType<4> >(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1} const&)::{lambda(int)#1}>(long, at::native::gpu_index_kernel<at::native::index_kernel_impl<at::native::OpaqueType<4> >(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1}>(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>, at::native::index_kernel_impl<at::native::OpaqueType<4> >(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1} const&)::{lambda(int)#1})",
    "void at::native::unrolled_elementwise_kernel<at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1}, std::array<char*, 2ul>, 4, TrivialOffsetCalculator<1, unsigned int>, TrivialOffsetCalculator<1, unsigned int>, at::native::memory::LoadWithCast<1>, at::native::memory::StoreWithCast<1> >(int, at::native::direct_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda()#3}::operator()() const::{lambda()#7}::operator()() const::{lambda(float)#1}, std::array<char*, 2ul>, TrivialOffsetCalculator<1, unsigned int>, TrivialOffsetCalculator<1, unsigned int>, at::native::memory::LoadWithCast<1>, at::native::memory::StoreWithCast<1>)",
    "void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<long>, std::array<char*, 1ul> >(int, at::native::FillFunctor<long>, std::array<char*, 1ul>)",
    "void at::native::(anonymous namespace)::distribution_elementwise_grid_stride_kernel<float, 4, at::native::templates::cuda::uniform_and_transform<float, float, at::CUDAGeneratorImpl*, at::native::templates::cuda::exponential_kernel<at::CUDAGeneratorImpl*>(at::TensorIteratorBase&, double, at::CUDAGeneratorImpl*)::{lambda()#1}::operator()() const::{lambda()#2}::operator()() const::{lambda(float)#1}>(at::TensorIteratorBase&, at::CUDAGeneratorImpl*, at::native::templates::cuda::exponential_kernel<at::CUDAGeneratorImpl*>(at::TensorIteratorBase&, double, at::CUDAGeneratorImpl*)::{lambda()#1}::operator()() const::{lambda()#2}::operator()() const::{lambda(float)#1})::{lambda(int, float)#1}>(long, at::native::PhiloxCudaState, at::native::templates::cuda::uniform_and_transform<float, float, at::CUDAGeneratorImpl*, at::native::templates::cuda::exponential_kernel<at::CUDAGeneratorImpl*>(at::TensorIteratorBase&, double, at::CUDAGeneratorImpl*)::{lambda()#1}::operator()() const::{lambda()#2}::operator()() const::{lambda(float)#1}>(at::TensorIteratorBase&, at::CUDAGeneratorImpl*, at::native::templates::cuda::exponential_kernel<at::CUDAGeneratorImpl*>(at::TensorIteratorBase&, double, at::CUDAGeneratorImpl*)::{lambda()#1}::operator()() const::{lambda()#2}::operator()() const::{lambda(float)#1})::{lambda(int, float)#1})",
    "void at::native::vectorized_elementwise_kernel<4, at::native::BinaryFunctor<float, float, float, at::native::binary_internal::DivFunctor<float> >, std::array<char*, 3ul> >(int, at::native::BinaryFunctor<float, float, float, at::native::binary_internal::DivFunctor<float> >, std::array<char*, 3ul>)",
]
CPU_OPS = ["aten::empty", "aten::to", "aten::_to_copy", "aten::copy_", "aten::index_select", "aten::slice",
           "aten::view", "aten::add", "aten::div_", "aten::softmax", "aten::_softmax", "aten::argmax",
           "aten::exponential_", "aten::fill_", "aten::zeros", "aten::cat", "aten::item",
           "aten::_local_scalar_dense", "aten::select", "aten::as_strided"]
PID, TID, DEVICE, STREAM = 2841, 2841, 0, 7
BASE_TIME_NS = 1790857026000000000
# real durations and gaps jitter; without it the trace gzips 40x instead of a real one's ~10x,
# and the gzipped figure would flatter the reader
_jitter = random.Random(16).random


def _metadata() -> str:
    return ('{\n  "schemaVersion": 1,\n  "deviceProperties": [\n    {\n      "id": 0, "name": "NVIDIA H200", '
            '"totalGlobalMem": 150110011392,\n      "computeMajor": 9, "computeMinor": 0,\n      '
            '"maxThreadsPerBlock": 1024, "maxThreadsPerMultiprocessor": 2048,\n      "regsPerBlock": 65536, '
            '"warpSize": 32,\n      "sharedMemPerBlock": 49152, "numSms": 132\n    }\n  ],\n'
            f'  "displayTimeUnit": "ms",\n  "baseTimeNanoseconds": {BASE_TIME_NS},\n  "traceEvents": [\n'
            f'  {{\n    "ph": "M",\n    "name": "process_name",\n    "ts": 5564300000000.000,\n    "pid": {PID},\n'
            f'    "tid": 0,\n    "args": {{\n      "name": "VllmWorker rank=0"\n    }}\n  }}')


def _kernel(name: str, ts: float, dur: float, external: int, correlation: int, grid: int) -> str:
    return (f',\n  {{\n    "ph": "X",\n    "cat": "kernel",\n    "name": "{name}",\n    "pid": {DEVICE},\n'
            f'    "tid": {STREAM},\n    "ts": {ts:.3f},\n    "dur": {dur:.3f},\n    "args": {{\n'
            f'      "External id": {external},\n      "queued": 0,\n      "device": {DEVICE},\n      "context": 1,\n'
            f'      "stream": {STREAM},\n      "correlation": {correlation},\n      "registers per thread": 128,\n'
            f'      "shared memory": 49152,\n      "blocks per SM": {grid / 132:.6f},\n      "warps per SM": '
            f'{grid * 4 / 132:.6f},\n      "grid": [{grid}, 1, 1],\n      "block": [128, 1, 1],\n'
            f'      "est. achieved occupancy %": 6\n    }}\n  }}')


def _device_copy(category: str, name: str, ts: float, dur: float, external: int, correlation: int) -> str:
    return (f',\n  {{\n    "ph": "X",\n    "cat": "{category}",\n    "name": "{name}",\n    "pid": {DEVICE},\n'
            f'    "tid": {STREAM},\n    "ts": {ts:.3f},\n    "dur": {dur:.3f},\n    "args": {{\n'
            f'      "External id": {external},\n      "device": {DEVICE},\n      "context": 1,\n'
            f'      "stream": {STREAM},\n      "correlation": {correlation},\n      "bytes": 4096,\n'
            f'      "memory bandwidth (GB/s)": 1.524\n    }}\n  }}')


def _host(category: str, name: str, ts: float, dur: float, external: int, args: str = "") -> str:
    return (f',\n  {{\n    "ph": "X",\n    "cat": "{category}",\n    "name": "{name}",\n    "pid": {PID},\n'
            f'    "tid": {TID},\n    "ts": {ts:.3f},\n    "dur": {dur:.3f},\n    "args": {{\n'
            f'      "External id": {external}{args}\n    }}\n  }}')


def _flow(phase: str, ts: float, correlation: int, pid: int, tid: int) -> str:
    end = ',\n    "bp": "e"' if phase == "f" else ""
    return (f',\n  {{\n    "ph": "{phase}",\n    "id": {correlation},\n    "pid": {pid},\n    "tid": {tid},\n'
            f'    "ts": {ts:.3f},\n    "cat": "ac2g",\n    "name": "ac2g"{end}\n  }}')


def _step(ts: float, ids: list[int]) -> tuple[list[str], float, int]:
    """One decode step's events from time `ts`; ids = [next external id, next correlation id].
    Returns the events, the step's end and how many events there were."""
    parts: list[str] = []
    step_start = ts
    parts.append("")  # the step range goes here once its end is known
    cpu = ts + 5.0
    for index in range(60):
        ids[0] += 1
        dur = 3.2 * (0.5 + _jitter())
        parts.append(_host("cpu_op", CPU_OPS[index % len(CPU_OPS)], cpu, dur, ids[0],
                           ',\n      "Record function id": 0,\n      "Ev Idx": ' + str(ids[0])))
        cpu += dur + 0.9 * _jitter()
    gpu = cpu + 20.0

    def launch(name: str, device_ops: list[tuple[str, str, float]]) -> None:
        nonlocal cpu, gpu
        ids[0] += 1
        ids[1] += 1
        correlation = ids[1]
        parts.append(_host("cuda_runtime", name, cpu, 6.5 * (0.7 + 0.6 * _jitter()), ids[0],
                           f',\n      "cbid": 211,\n      "correlation": {correlation}'))
        parts.append(_flow("s", cpu, correlation, PID, TID))
        for category, op_name, nominal in device_ops:
            dur = nominal * (0.8 + 0.4 * _jitter())
            if category == "kernel":
                parts.append(_kernel(op_name, gpu, dur, ids[0], correlation, 132))
            else:
                parts.append(_device_copy(category, op_name, gpu, dur, ids[0], correlation))
            parts.append(_flow("f", gpu, correlation, DEVICE, STREAM))
            gpu += dur + 0.9
        cpu += 8.0

    launch("cudaMemcpyAsync", [("gpu_memcpy", "Memcpy HtoD (Pinned -> Device)", 1.9)])
    launch("cudaMemcpyAsync", [("gpu_memcpy", "Memcpy HtoD (Pinned -> Device)", 1.7)])
    launch("cudaMemsetAsync", [("gpu_memset", "Memset (Device)", 1.1)])
    launch("cudaGraphLaunch", [("kernel", GRAPH_KERNELS[k % len(GRAPH_KERNELS)], 4.0 + (k % 7))
                               for k in range(LAYERS * len(GRAPH_KERNELS))])
    for name in SAMPLING_KERNELS:
        launch("cudaLaunchKernel", [("kernel", name, 2.5)])
    launch("cudaMemcpyAsync", [("gpu_memcpy", "Memcpy DtoH (Device -> Pinned)", 2.2)])
    launch("cudaStreamSynchronize", [])
    step_end = max(cpu, gpu) + 10.0
    ids[0] += 1
    name = "execute_context_0(0)_generation_32(32)"
    parts[0] = _host("user_annotation", name, step_start, step_end - step_start, ids[0],
                     ',\n      "Record function id": 0')
    parts.append(_host("gpu_user_annotation", name, step_start + 30.0, step_end - step_start - 40.0, ids[0])
                 .replace(f'"pid": {PID},\n    "tid": {TID}', f'"pid": {DEVICE},\n    "tid": {STREAM}'))
    return parts, step_end + 50.0, len(parts)


def write_traces(directory: Path, size_bytes: int) -> tuple[Path, Path, int]:
    """The plain and the gzipped trace, written together; returns their paths and the events."""
    directory.mkdir(parents=True, exist_ok=True)
    plain_path, gz_path = directory / "bench.pt.trace.json", directory / "bench.pt.trace.json.gz"
    written, events, ts, ids = 0, 1, 5564300263381.930, [0, 100000]
    with open(plain_path, "wb") as plain, gzip.open(gz_path, "wb", compresslevel=9) as zipped:
        def out(text: str) -> None:
            nonlocal written
            data = text.encode()
            plain.write(data)
            zipped.write(data)
            written += len(data)

        out(_metadata())
        while written < size_bytes:
            parts, ts, count = _step(ts, ids)
            out("".join(parts))
            events += count
        out(f'\n  ],\n  "traceName": "{plain_path}"\n}}\n')
    return plain_path, gz_path, events


def child(path: str) -> None:
    """Runs in the fresh process: load the trace, print what it took as one JSON line."""
    sys.path.insert(0, str(REPO / "plugins"))
    from gpucert.forensics.analyze import analyze
    from gpucert.forensics.read import load_trace

    started = time.perf_counter()
    timeline = load_trace(path)
    seconds = time.perf_counter() - started
    started = time.perf_counter()
    result = analyze(timeline)  # what `gpucert analyze` does after reading: the whole command's work
    analyze_s = time.perf_counter() - started
    ops = sum(len(ops) for ops in timeline.devices.values())
    print(json.dumps({"seconds": seconds, "analyze_s": analyze_s, "steps": result["steps"].get("count"),
                      "idle_gaps": sum(d["idle_gaps"]["count"] for d in result["devices"].values()),
                      "events": timeline.events_read, "device_ops": ops,
                      "host_calls": len(timeline.host_calls), "ranges": len(timeline.ranges),
                      "wall_offset_us": timeline.wall_offset_us, "skipped": timeline.skipped,
                      "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def measure(path: Path, json_bytes: int) -> dict:
    started = time.perf_counter()
    run = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True,
                         check=False)
    wall = time.perf_counter() - started
    if run.returncode != 0:
        raise SystemExit(f"load_trace failed on {path}: {run.stderr.strip()[-2000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    result.update(file=path.name, file_bytes=path.stat().st_size, process_wall_s=wall,
                  mb_per_s=json_bytes / 1e6 / result["seconds"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", help="where to write the traces (needs about 1.1x the size free)")
    parser.add_argument("--size-mb", type=float, default=1024.0, help="uncompressed trace size, MiB (default 1024)")
    parser.add_argument("--keep", action="store_true", help="keep the trace files")
    parser.add_argument("--child", metavar="TRACE", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    if not args.directory:
        parser.error("name a directory to write the traces in (e.g. /tmp/trace-bench)")
    directory = Path(args.directory)
    started = time.perf_counter()
    plain, zipped, events = write_traces(directory, int(args.size_mb * 1024 * 1024))
    json_bytes = plain.stat().st_size
    print(f"wrote {json_bytes / 1e6:,.0f} MB JSON ({events:,} events), gzipped {zipped.stat().st_size / 1e6:,.0f} MB, "
          f"in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        for path in (plain, zipped):
            result = measure(path, json_bytes)
            print(f"{result['file']}: {result['seconds']:.1f} s in load_trace, {result['analyze_s']:.1f} s in analyze "
                  f"({result['steps']:,} steps, {result['idle_gaps']:,} idle gaps) ({result['process_wall_s']:.1f} s "
                  f"with interpreter start), {result['events']:,} events, {result['mb_per_s']:.0f} MB/s of JSON, "
                  f"peak RSS {result['max_rss_kib'] / 1024:,.0f} MiB; device ops {result['device_ops']:,}, "
                  f"host calls {result['host_calls']:,}, ranges {result['ranges']:,}", flush=True)
            print("  " + json.dumps(result), flush=True)
    finally:
        if not args.keep:
            for path in (plain, zipped):
                path.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
