"""The forensics trace readers: real PyTorch profiler traces captured here on CPU (the plain export
and the gzipped `tensorboard_trace_handler` file vLLM writes), Kineto-shaped JSON and Nsight
Systems SQLite exports with known contents read back column by column, and every kind of bad input
ending as one TraceError line."""

from __future__ import annotations

import gzip
import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from gpucert.forensics import read_chrome as read_chrome_module
from gpucert.forensics.read import load_trace
from gpucert.forensics.read_chrome import read_chrome
from gpucert.forensics.read_nsys import read_nsys
from gpucert.forensics.timeline import KERNEL, MEMCPY, MEMSET, NO_CORRELATION, Timeline, TraceError

SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "nsys" / "schema.sql"
STEP = "execute_context_0(0)_generation_4(4)"
PREFILL_STEP = "execute_context_1(17)_generation_3(3)"


def assert_same_timeline(one: Timeline, other: Timeline) -> None:
    """Every column equal (the path aside): numpy arrays are compared value by value."""
    assert one.source == other.source and one.names == other.names
    assert one.wall_offset_us == other.wall_offset_us and one.events_read == other.events_read
    assert one.skipped == other.skipped
    assert sorted(one.devices) == sorted(other.devices)
    pairs = [(one.host_calls, other.host_calls), (one.ranges, other.ranges)]
    pairs += [(one.devices[device], other.devices[device]) for device in one.devices]
    for mine, theirs in pairs:
        for column, values in vars(mine).items():
            assert values.dtype == getattr(theirs, column).dtype, column
            np.testing.assert_array_equal(values, getattr(theirs, column), err_msg=column)


def names(timeline: Timeline, indices) -> list[str]:
    return [timeline.name_of(index) for index in indices]


# --- (a) real PyTorch profiler traces, captured on this CPU ---------------------------------------


def _profiled_steps(torch) -> None:
    """What an engine's steps look like to the profiler: a record_function range around torch ops."""
    weights = torch.randn(96, 96)
    for step in (STEP, STEP, PREFILL_STEP):
        with torch.profiler.record_function(step):
            activations = torch.randn(32, 96)
            for _ in range(3):
                activations = torch.relu(activations @ weights)
            time.sleep(0.003)  # every step at least 3 ms: a floor the durations must clear


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """Two real captures: `export_chrome_trace` (plain JSON) and `tensorboard_trace_handler`
    with use_gzip (vLLM's `*.pt.trace.json.gz`); with the Unix time around each."""
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile, tensorboard_trace_handler

    directory = tmp_path_factory.mktemp("torch-traces")
    plain = directory / "export.json"
    before_plain = time.time()
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        _profiled_steps(torch)
    after_plain = time.time()
    profiler.export_chrome_trace(str(plain))

    handler_dir = directory / "tensorboard"
    before_gz = time.time()
    with profile(activities=[ProfilerActivity.CPU],
                 on_trace_ready=tensorboard_trace_handler(str(handler_dir), use_gzip=True)):
        _profiled_steps(torch)
    after_gz = time.time()
    (gzipped,) = handler_dir.glob("*.pt.trace.json.gz")
    return {"plain": (plain, before_plain, after_plain), "gzipped": (gzipped, before_gz, after_gz)}


def _annotations(document: dict) -> list[tuple[str, float, float, int]]:
    rows = [(event["name"], event["ts"], event["ts"] + event["dur"], event["tid"])
            for event in document["traceEvents"] if event.get("cat") == "user_annotation" and event.get("ph") == "X"]
    return sorted(rows, key=lambda row: row[1])


@pytest.mark.parametrize("which", ["plain", "gzipped"])
def test_a_real_cpu_profiler_trace_gives_its_annotations_as_ranges(captured, which):
    path, before, after = captured[which]
    opener = gzip.open if which == "gzipped" else open
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (which == "gzipped")
    with opener(path, "rt") as handle:
        document = json.load(handle)  # the test may load it whole; the reader never does
    expected = _annotations(document)
    assert [row[0] for row in expected] == [STEP, STEP, PREFILL_STEP]

    timeline = load_trace(path)

    assert timeline.source == "pytorch"
    assert names(timeline, timeline.ranges.name) == [STEP, STEP, PREFILL_STEP]
    assert timeline.ranges.start_us.tolist() == [row[1] for row in expected]
    assert timeline.ranges.end_us.tolist() == [row[2] for row in expected]
    assert timeline.ranges.thread.tolist() == [row[3] for row in expected]
    durations = timeline.ranges.end_us - timeline.ranges.start_us
    assert (durations >= 3000).all() and (durations < 10e6).all(), durations
    # a CPU-only capture has no device ops and no CUDA calls; what it has is counted, not lost
    assert timeline.devices == {} and len(timeline.host_calls) == 0
    assert timeline.events_read == len(document["traceEvents"])
    assert sum(timeline.skipped.values()) + len(timeline.ranges) == timeline.events_read
    assert timeline.skipped["cpu_op"] == sum(event.get("cat") == "cpu_op" for event in document["traceEvents"])
    # baseTimeNanoseconds makes the trace's µs Unix time: the first step began during the capture
    assert timeline.wall_offset_us == document["baseTimeNanoseconds"] / 1000
    first_step_unix_s = (timeline.wall_offset_us + timeline.ranges.start_us[0]) / 1e6
    assert before - 3 <= first_step_unix_s <= after + 3, (before, first_step_unix_s, after)


def test_the_reader_never_loads_the_json_whole(captured, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the reader must stream the trace, not json.load it")

    monkeypatch.setattr(json, "load", refuse)
    monkeypatch.setattr(json, "loads", refuse)
    assert len(read_chrome(captured["gzipped"][0]).ranges) == 3


# --- (b) Kineto-shaped JSON with known contents ----------------------------------------------------

BASE_NS = 1790857026000000000


def _kineto_events() -> list[dict]:
    """Kernels, copies and a set on two GPUs and three streams, written out of order; the CUDA
    calls that launched them; a step range; and what the reader must skip."""
    def kernel(name, ts, dur, device, stream, correlation, pid=None, tid=None):
        return {"ph": "X", "cat": "kernel", "name": name, "pid": device if pid is None else pid,
                "tid": stream if tid is None else tid, "ts": ts, "dur": dur,
                "args": {"External id": correlation, "queued": 0, "device": device, "context": 1, "stream": stream,
                         "correlation": correlation, "registers per thread": 128, "shared memory": 0,
                         "blocks per SM": 1.0, "warps per SM": 4.0, "grid": [132, 1, 1], "block": [128, 1, 1],
                         "est. achieved occupancy %": 6}}

    def host(category, name, ts, dur, tid=100, **args):
        return {"ph": "X", "cat": category, "name": name, "pid": 100, "tid": tid, "ts": ts, "dur": dur, "args": args}

    return [
        {"ph": "M", "name": "process_name", "pid": 100, "tid": 0, "ts": 0, "args": {"name": "python"}},
        host("user_annotation", STEP, 1000.0, 400.0, **{"External id": 1}),
        host("cpu_op", "aten::mm", 1001.0, 20.0),
        host("python_function", "forward", 1000.5, 30.0),
        host("cuda_runtime", "cudaGraphLaunch", 1010.0, 6.5, correlation=7, cbid=311),
        {"ph": "s", "id": 7, "pid": 100, "tid": 100, "ts": 1010.0, "cat": "ac2g", "name": "ac2g"},
        kernel("gemm_b", 1030.0, 8.0, 0, 7, 7),
        kernel("gemm_a", 1020.0, 5.0, 0, 7, 7),  # earlier, written later: build() sorts
        {"ph": "f", "id": 7, "pid": 0, "tid": 7, "ts": 1020.0, "cat": "ac2g", "name": "ac2g", "bp": "e"},
        kernel("allreduce", 1025.0, 30.0, 1, 13, 9),
        # args.device wins over pid (Kineto repeats the device in args); pid is what is left without
        kernel("norm", 1045.0, 2.0, 1, 13, 10, pid=5),
        {"ph": "X", "cat": "kernel", "name": "no_args_kernel", "pid": 1, "tid": 21, "ts": 1050.0, "dur": 1.0},
        # older Kineto labels streams: "stream 7"
        {"ph": "X", "cat": "kernel", "name": "labelled", "pid": 0, "tid": "stream 9", "ts": 1060.0, "dur": 1.5},
        {"ph": "X", "cat": "kernel", "name": "nowhere", "pid": "Spans", "tid": "x", "ts": 1061.0, "dur": 1.0},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD (Pinned -> Device)", "pid": 0, "tid": 7,
         "ts": 1005.0, "dur": 3.0, "args": {"device": 0, "stream": 7, "correlation": 6, "bytes": 4096}},
        {"ph": "X", "cat": "gpu_memset", "name": "Memset (Device)", "pid": 1, "tid": 14, "ts": 1003.0,
         "dur": 0.5, "args": {"device": 1, "stream": 14, "correlation": 5}},
        host("cuda_runtime", "cudaMemcpyAsync", 1002.0, 4.0, correlation=6),
        host("cuda_driver", "cuLaunchKernel", 1015.0, 3.0, tid=101, correlation=9),
        host("cuda_runtime", "cudaStreamSynchronize", 1100.0, 50.0),  # no correlation in args
        {"ph": "X", "cat": "user_annotation", "name": "labelled thread", "pid": 100, "tid": "PyTorch Profiler",
         "ts": 1200.0, "dur": 10.0},
        {"ph": "X", "cat": "gpu_user_annotation", "name": STEP, "pid": 0, "tid": 7, "ts": 1020.0, "dur": 20.0},
        {"ph": "i", "s": "g", "name": "Record Window End", "pid": "", "tid": "", "ts": 1300.0},
    ]


def _kineto_document(events: list[dict], base_time_after: bool = True) -> str:
    """Kineto's layout: metadata, then traceEvents; old Kineto writes baseTimeNanoseconds after
    the events, at the end of the file, torch 2.13 before them."""
    head = {"schemaVersion": 1, "deviceProperties": [], "displayTimeUnit": "ms"}
    if not base_time_after:
        head["baseTimeNanoseconds"] = BASE_NS
    text = json.dumps(head, indent=2)[:-2] + ',\n  "traceEvents": [\n'
    text += ",\n".join(json.dumps(event, indent=4) for event in events)
    tail = {"traceName": "x.json"} | ({"baseTimeNanoseconds": BASE_NS} if base_time_after else {})
    return text + "\n  ],\n" + json.dumps(tail, indent=2)[2:]


def test_kineto_json_gives_exact_columns(tmp_path):
    path = tmp_path / "kineto.json"
    path.write_text(_kineto_document(_kineto_events()))

    timeline = load_trace(path)

    assert sorted(timeline.devices) == [0, 1]
    gpu0, gpu1 = timeline.devices[0], timeline.devices[1]
    assert names(timeline, gpu0.name) == ["Memcpy HtoD (Pinned -> Device)", "gemm_a", "gemm_b", "labelled"]
    assert gpu0.start_us.tolist() == [1005.0, 1020.0, 1030.0, 1060.0]
    assert gpu0.end_us.tolist() == [1008.0, 1025.0, 1038.0, 1061.5]
    assert gpu0.kind.tolist() == [MEMCPY, KERNEL, KERNEL, KERNEL]
    assert gpu0.stream.tolist() == [7, 7, 7, 9]
    assert gpu0.correlation.tolist() == [6, 7, 7, NO_CORRELATION]
    assert names(timeline, gpu1.name) == ["Memset (Device)", "allreduce", "norm", "no_args_kernel"]
    assert gpu1.start_us.tolist() == [1003.0, 1025.0, 1045.0, 1050.0]
    assert gpu1.end_us.tolist() == [1003.5, 1055.0, 1047.0, 1051.0]
    assert gpu1.kind.tolist() == [MEMSET, KERNEL, KERNEL, KERNEL]
    assert gpu1.stream.tolist() == [14, 13, 13, 21]
    assert gpu1.correlation.tolist() == [5, 9, 10, NO_CORRELATION]
    assert gpu0.kind.dtype == np.int8 and gpu0.name.dtype == np.int32 and gpu0.stream.dtype == np.int64

    calls = timeline.host_calls
    assert names(timeline, calls.name) == ["cudaMemcpyAsync", "cudaGraphLaunch", "cuLaunchKernel",
                                           "cudaStreamSynchronize"]
    assert calls.start_us.tolist() == [1002.0, 1010.0, 1015.0, 1100.0]
    assert calls.end_us.tolist() == [1006.0, 1016.5, 1018.0, 1150.0]
    assert calls.correlation.tolist() == [6, 7, 9, NO_CORRELATION]
    assert calls.thread.tolist() == [100, 100, 101, 100]

    ranges = timeline.ranges
    assert names(timeline, ranges.name) == [STEP, "labelled thread"]
    assert ranges.start_us.tolist() == [1000.0, 1200.0] and ranges.end_us.tolist() == [1400.0, 1210.0]
    # a thread label without a number gets an id of its own that no OS thread has
    assert ranges.thread[0] == 100 and ranges.thread[1] < 0

    assert timeline.events_read == len(_kineto_events()) == 22
    assert timeline.skipped == {"ph=M": 1, "cpu_op": 1, "python_function": 1, "ac2g": 2,
                                "kernel: device not a number": 1, "gpu_user_annotation": 1, "ph=i": 1}
    assert timeline.wall_offset_us == BASE_NS / 1000
    assert timeline.span_us() == (1003.0, 1061.5)


def test_gzip_is_told_by_its_magic_and_reads_identically(tmp_path):
    text = _kineto_document(_kineto_events()).encode()
    plain, zipped, misnamed = tmp_path / "t.json", tmp_path / "t.pt.trace.json.gz", tmp_path / "really-gzip.json"
    plain.write_bytes(text)
    zipped.write_bytes(gzip.compress(text))
    misnamed.write_bytes(gzip.compress(text))
    reference = load_trace(plain)
    assert_same_timeline(reference, load_trace(zipped))
    assert_same_timeline(reference, read_chrome(misnamed))
    named_gz_but_plain = tmp_path / "plain.json.gz"
    named_gz_but_plain.write_bytes(text)
    assert_same_timeline(reference, load_trace(named_gz_but_plain))


def test_the_chrome_array_format_reads_the_same_events(tmp_path):
    path = tmp_path / "array.json"
    path.write_text(json.dumps(_kineto_events(), indent=1))
    timeline = load_trace(path)
    reference = load_trace(_write(tmp_path / "object.json", _kineto_document(_kineto_events())))
    assert timeline.wall_offset_us is None  # the array format has nowhere to say it
    reference.wall_offset_us = None
    assert_same_timeline(reference, timeline)


def _write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _big_events(count: int) -> list[dict]:
    return [{"ph": "X", "cat": "kernel", "name": f"k{index % 17}", "pid": 0, "tid": 7, "ts": 10.0 * index,
             "dur": 4.0, "args": {"device": 0, "stream": 7, "correlation": index, "grid": [1, 1, 1]}}
            for index in range(count)]


@pytest.mark.parametrize("base_time_after", [True, False], ids=["base-time-in-the-trailer", "base-time-before"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_base_time_is_found_before_or_after_a_large_event_list(tmp_path, base_time_after, compress):
    """Several hundred KiB of events: the key is only in the first or only in the last 64 KiB."""
    events = _big_events(3000)
    text = _kineto_document(events, base_time_after=base_time_after).encode()
    assert len(text) > 8 * read_chrome_module._CHUNK
    path = _write(tmp_path / "big.json", gzip.compress(text) if compress else text)
    timeline = load_trace(path)
    assert timeline.wall_offset_us == BASE_NS / 1000
    assert len(timeline.devices[0]) == 3000 == timeline.events_read
    assert timeline.devices[0].correlation.tolist() == list(range(3000))


def test_the_trace_events_key_across_two_reads_is_still_seen(tmp_path):
    """`"traceEvents"` straddling the first 64 KiB read: the key check must look across reads."""
    chunk = read_chrome_module._CHUNK
    opening = '{"pad": "'
    padding = chunk - len(opening) - len('", ') - 5  # the key starts 5 bytes before the seam
    text = opening + "x" * padding + '", "traceEvents": ' + json.dumps(_big_events(10)) + "}"
    assert text.index('"traceEvents"') == chunk - 5
    timeline = read_chrome(_write(tmp_path / "seam.json", text))
    assert len(timeline.devices[0]) == 10


def test_an_empty_event_list_is_an_empty_timeline(tmp_path):
    timeline = load_trace(_write(tmp_path / "empty-events.json", '{"traceEvents": [], "baseTimeNanoseconds": 5000}'))
    assert timeline.devices == {} and len(timeline.ranges) == 0 and timeline.events_read == 0
    assert timeline.wall_offset_us == 5.0 and timeline.span_us() is None


# --- (c) Nsight Systems SQLite exports ------------------------------------------------------------

SESSION_START_NS = 1790857026123456789
# globalTid: a serialized GlobalId, the OS thread id in the low 24 bits (pid above it)
MAIN_THREAD = (1 << 56) | (4242 << 24) | 4242
WORKER_THREAD = (1 << 56) | (4242 << 24) | 4250
STRINGS = {1: "flash_fwd_splitkv_kernel",
           2: "void flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4> >(Flash_fwd_params)",
           3: "_Z24flash_fwd_splitkv_kernelI", 4: "void at::native::vectorized_elementwise_kernel<4>(int)",
           5: "cudaLaunchKernel", 6: "cudaGraphLaunch", 7: "cuLaunchKernel", 8: STEP, 9: "nccl"}


def _kernel_row(start, end, device, stream, correlation, short, demangled):
    return dict(start=start, end=end, deviceId=device, contextId=1, streamId=stream, correlationId=correlation,
                globalPid=(1 << 56) | (4242 << 24), demangledName=demangled, shortName=short, mangledName=3,
                launchType=0, cacheConfig=0, registersPerThread=128, gridX=132, gridY=1, gridZ=1, blockX=128,
                blockY=1, blockZ=1, staticSharedMemory=0, dynamicSharedMemory=49152, localMemoryPerThread=0,
                localMemoryTotal=0, gridId=start // 1000, sharedMemoryExecuted=0, graphNodeId=None,
                sharedMemoryLimitConfig=0)


def _insert(connection, table: str, rows: list[dict]) -> None:
    for row in rows:
        connection.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                           list(row.values()))


def _nsys_export(path: Path, tables: set[str] | None = None) -> Path:
    """An export with known rows (times in ns); `tables` keeps only those (nsys leaves out what is empty)."""
    connection = sqlite3.connect(path)
    connection.executescript(SCHEMA.read_text())
    _insert(connection, "StringIds", [{"id": key, "value": value} for key, value in STRINGS.items()])
    _insert(connection, "TARGET_INFO_SESSION_START_TIME",
            [{"utcEpochNs": SESSION_START_NS, "utcTime": "2026-10-01T08:17:06.123Z", "localTime": "x"}])
    _insert(connection, "CUPTI_ACTIVITY_KIND_KERNEL", [
        _kernel_row(3_000_000, 3_004_250, 0, 7, 102, 1, 2),
        _kernel_row(2_000_000, 2_001_500, 0, 7, 101, 99, 4),  # no string 99: the demangled name stands in
        _kernel_row(2_500_000, 2_530_000, 1, 13, None, 1, 2),
    ])
    _insert(connection, "CUPTI_ACTIVITY_KIND_MEMCPY", [
        dict(start=1_000_000, end=1_002_000, deviceId=1, contextId=1, streamId=14, correlationId=100,
             globalPid=0, bytes=4096, copyKind=1, srcKind=1, dstKind=2, srcDeviceId=None, dstDeviceId=1),
        dict(start=4_000_000, end=4_000_500, deviceId=1, contextId=1, streamId=14, correlationId=103,
             globalPid=0, bytes=1 << 20, copyKind=10, srcDeviceId=0, dstDeviceId=1),
    ])
    _insert(connection, "CUPTI_ACTIVITY_KIND_MEMSET", [
        dict(start=1_500_000, end=1_500_250, deviceId=0, contextId=1, streamId=7, correlationId=None,
             globalPid=0, value=0, bytes=64, memKind=2)])
    _insert(connection, "CUPTI_ACTIVITY_KIND_RUNTIME", [
        dict(start=1_990_000, end=1_996_500, eventClass=0, globalTid=MAIN_THREAD, correlationId=101, nameId=5,
             returnValue=0),
        dict(start=2_900_000, end=2_910_000, eventClass=0, globalTid=MAIN_THREAD, correlationId=102, nameId=6,
             returnValue=0),
        dict(start=2_400_000, end=2_403_000, eventClass=1, globalTid=WORKER_THREAD, correlationId=None, nameId=7,
             returnValue=0),
    ])
    _insert(connection, "NVTX_EVENTS", [
        dict(start=1_900_000, end=3_100_000, eventType=59, text="step with inline text", globalTid=MAIN_THREAD,
             domainId=0),
        dict(start=3_200_000, end=4_100_000, eventType=60, textId=8, rangeId=1, globalTid=MAIN_THREAD,
             endGlobalTid=WORKER_THREAD, domainId=0),
        dict(start=2_000_000, end=None, eventType=34, text="a mark", globalTid=MAIN_THREAD),
        dict(start=4_500_000, end=None, eventType=59, text="never popped", globalTid=WORKER_THREAD),
        dict(start=0, end=None, eventType=75, text="vllm", domainId=1),
    ])
    for table in (set(_table_names(connection)) - tables) if tables is not None else ():
        connection.execute(f"DROP TABLE {table}")
    connection.commit()
    connection.close()
    return path


def _table_names(connection) -> list[str]:
    return [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]


def test_the_nsys_fixture_schema_is_the_documented_one():
    """The DDL names its source and holds every column the reader uses (and the documented rest)."""
    text = SCHEMA.read_text()
    assert "SQLite Schema reference" in text and "Nsight Systems 2023.4" in text
    connection = sqlite3.connect(":memory:")
    connection.executescript(text)
    columns = {table: [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
               for table in _table_names(connection)}
    assert columns["CUPTI_ACTIVITY_KIND_KERNEL"][:10] == [
        "start", "end", "deviceId", "contextId", "streamId", "correlationId", "globalPid", "demangledName",
        "shortName", "mangledName"]
    assert len(columns["CUPTI_ACTIVITY_KIND_KERNEL"]) == 27
    assert columns["CUPTI_ACTIVITY_KIND_RUNTIME"] == [
        "start", "end", "eventClass", "globalTid", "correlationId", "nameId", "returnValue", "callchainId"]
    assert columns["NVTX_EVENTS"][:11] == ["start", "end", "eventType", "rangeId", "category", "color", "text",
                                           "globalTid", "endGlobalTid", "textId", "domainId"]
    assert columns["TARGET_INFO_SESSION_START_TIME"] == ["utcEpochNs", "utcTime", "localTime"]


def test_an_nsys_export_gives_exact_columns(tmp_path):
    timeline = load_trace(_nsys_export(tmp_path / "run.sqlite"))

    assert timeline.source == "nsys" and sorted(timeline.devices) == [0, 1]
    gpu0, gpu1 = timeline.devices[0], timeline.devices[1]
    assert names(timeline, gpu0.name) == ["Memset", STRINGS[4], STRINGS[1]]
    assert gpu0.start_us.tolist() == [1500.0, 2000.0, 3000.0]
    assert gpu0.end_us.tolist() == [1500.25, 2001.5, 3004.25]
    assert gpu0.kind.tolist() == [MEMSET, KERNEL, KERNEL]
    assert gpu0.stream.tolist() == [7, 7, 7]
    assert gpu0.correlation.tolist() == [NO_CORRELATION, 101, 102]
    assert names(timeline, gpu1.name) == ["Memcpy HtoD", STRINGS[1], "Memcpy PtoP"]
    assert gpu1.start_us.tolist() == [1000.0, 2500.0, 4000.0]
    assert gpu1.end_us.tolist() == [1002.0, 2530.0, 4000.5]
    assert gpu1.kind.tolist() == [MEMCPY, KERNEL, MEMCPY]
    assert gpu1.stream.tolist() == [14, 13, 14]
    assert gpu1.correlation.tolist() == [100, NO_CORRELATION, 103]

    calls = timeline.host_calls
    assert names(timeline, calls.name) == ["cudaLaunchKernel", "cuLaunchKernel", "cudaGraphLaunch"]
    assert calls.start_us.tolist() == [1990.0, 2400.0, 2900.0]
    assert calls.end_us.tolist() == [1996.5, 2403.0, 2910.0]
    assert calls.correlation.tolist() == [101, NO_CORRELATION, 102]
    assert calls.thread.tolist() == [4242, 4250, 4242]

    ranges = timeline.ranges
    assert names(timeline, ranges.name) == ["step with inline text", STEP]
    assert ranges.start_us.tolist() == [1900.0, 3200.0] and ranges.end_us.tolist() == [3100.0, 4100.0]
    assert ranges.thread.tolist() == [4242, 4242]

    assert timeline.events_read == 3 + 2 + 1 + 3 + 5
    assert timeline.skipped == {"nvtx mark": 1, "nvtx range without end": 1, "nvtx eventType 75": 1}
    assert timeline.wall_offset_us == SESSION_START_NS / 1000.0


@pytest.mark.parametrize("kept", [
    pytest.param({"CUPTI_ACTIVITY_KIND_KERNEL", "StringIds"}, id="kernels-only"),
    pytest.param({"NVTX_EVENTS"}, id="nvtx-without-string-table"),
    pytest.param({"CUPTI_ACTIVITY_KIND_RUNTIME", "CUPTI_ACTIVITY_KIND_MEMCPY"}, id="no-strings-no-kernels"),
])
def test_an_nsys_export_without_some_tables_still_reads(tmp_path, kept):
    timeline = read_nsys(_nsys_export(tmp_path / "partial.sqlite", tables=kept))
    assert timeline.wall_offset_us is None  # no session-start table kept
    if "CUPTI_ACTIVITY_KIND_KERNEL" in kept:
        assert [len(ops) for ops in timeline.devices.values()] == [2, 1] and len(timeline.host_calls) == 0
        assert names(timeline, timeline.devices[0].name) == [STRINGS[4], STRINGS[1]]
    if kept == {"NVTX_EVENTS"}:
        assert timeline.devices == {}
        # the inline text is there; the registered one has no string table to come from
        assert names(timeline, timeline.ranges.name) == ["step with inline text", ""]
    if "CUPTI_ACTIVITY_KIND_RUNTIME" in kept:
        assert names(timeline, timeline.host_calls.name) == ["unknown API call"] * 3
        assert names(timeline, timeline.devices[1].name) == ["Memcpy HtoD", "Memcpy PtoP"]


def test_an_older_kernel_table_without_short_names_uses_the_demangled_one(tmp_path):
    path = tmp_path / "old.sqlite"
    connection = sqlite3.connect(path)
    connection.executescript("CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);"
                             "CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INTEGER NOT NULL, end INTEGER NOT NULL, "
                             "deviceId INTEGER NOT NULL, streamId INTEGER NOT NULL, demangledName INTEGER NOT NULL);"
                             "INSERT INTO StringIds VALUES (1, 'old_kernel');"
                             "INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (1000, 3000, 2, 7, 1);")
    connection.commit()
    connection.close()
    timeline = read_nsys(path)
    assert names(timeline, timeline.devices[2].name) == ["old_kernel"]
    assert timeline.devices[2].correlation.tolist() == [NO_CORRELATION]
    assert timeline.devices[2].end_us.tolist() == [3.0]


# --- (d) bad input: one TraceError line, never a traceback ----------------------------------------


def _truncated_json(tmp_path):
    text = _kineto_document(_kineto_events())
    cut = text.index('"allreduce"') + 5  # inside an event
    return _write(tmp_path / "cut.json", text[:cut])


def _truncated_gzip(tmp_path):
    data = gzip.compress(_kineto_document(_big_events(2000)).encode())
    return _write(tmp_path / "cut.json.gz", data[: len(data) // 2])


def _sqlite_without_tables(tmp_path):
    path = tmp_path / "other.sqlite"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE notes (id INTEGER, text TEXT)")
    connection.commit()
    connection.close()
    return path


def _directory(tmp_path):
    path = tmp_path / "traces"
    path.mkdir()
    return path


BAD_INPUTS = [
    ("empty", "an empty file", lambda tmp: _write(tmp / "empty.json", b""), "empty file"),
    ("text", "a text file", lambda tmp: _write(tmp / "notes.txt", "hello, this is not a trace\n"),
     "not a trace gpucert reads"),
    ("truncated-json", "JSON cut off in the middle of an event", _truncated_json, "truncated JSON"),
    ("truncated-gzip", "a gzip file cut in half", _truncated_gzip, "truncated gzip"),
    ("no-trace-events", "a JSON object without traceEvents",
     lambda tmp: _write(tmp / "other.json", '{"schemaVersion": 1, "events": [{"ts": 1}]}'), 'without "traceEvents"'),
    ("gzip-of-garbage", "gzip of bytes that are not JSON",
     lambda tmp: _write(tmp / "garbage.json.gz", gzip.compress(b"\x07" + bytes(range(256)) * 12)), "gzipped, but what it holds is not JSON"),
    ("gzip-magic-then-garbage", "gzip's magic bytes followed by garbage",
     lambda tmp: _write(tmp / "broken.json.gz", b"\x1f\x8b" + bytes(range(256)) * 8), "not a readable gzip file"),
    ("invalid-json", "a syntax error inside the events",
     lambda tmp: _write(tmp / "bad.json", '{"traceEvents": [{"ph": "X",, "ts": 1}]}'), "invalid JSON"),
    ("non-numeric-ts", "a kernel event whose ts is a string",
     lambda tmp: _write(tmp / "ts.json", json.dumps({"traceEvents": [
         {"ph": "X", "cat": "kernel", "name": "k", "pid": 0, "tid": 7, "ts": "soon", "dur": 1.0}]})),
     "event 1 (kernel 'k'): a field that must be a number"),
    ("missing-dur", "a cuda_runtime event without dur",
     lambda tmp: _write(tmp / "dur.json", json.dumps({"traceEvents": [
         {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 5.0}]})),
     "event 1 (cuda_runtime 'cudaLaunchKernel') has no 'dur'"),
    ("events-not-objects", "traceEvents holding numbers",
     lambda tmp: _write(tmp / "numbers.json", '{"traceEvents": [1, 2]}'), "event 1 is not an object"),
    ("nsys-rep", "an Nsight Systems .nsys-rep (nsys's binary format)",
     lambda tmp: _write(tmp / "profile.nsys-rep", b"\x00\x01QDSTRM" + os.urandom(4000)),
     "nsys export --type sqlite -o"),
    ("sqlite-without-tables", "an SQLite file without any nsys table", _sqlite_without_tables,
     "without any table of an nsys export"),
    ("corrupt-sqlite", "SQLite's magic followed by garbage",
     lambda tmp: _write(tmp / "corrupt.sqlite", b"SQLite format 3\x00" + b"\xff" * 4000), "SQLite file"),
    ("directory", "a directory", _directory, "a directory"),
    ("missing", "a path that does not exist", lambda tmp: tmp / "nowhere.json.gz", "no such file"),
]


@pytest.mark.parametrize("make, message", [
    pytest.param(make, message, id=case, marks=pytest.mark.fault(
        "forensics", f"trace file: {planted}", "one TraceError line naming the file and the problem"))
    for case, planted, make, message in BAD_INPUTS])
def test_a_bad_trace_is_one_trace_error_line(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(TraceError) as raised:
        load_trace(path)
    text = str(raised.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    assert message in text, text
    error = raised.value
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__), "a chained traceback"


@pytest.mark.parametrize("reader, make, message", [
    pytest.param(read_chrome, _directory, "cannot read", id="chrome-directory"),
    pytest.param(read_chrome, lambda tmp: tmp / "nowhere.json", "cannot read", id="chrome-missing"),
    pytest.param(read_chrome, lambda tmp: _write(tmp / "n.sqlite", b"SQLite format 3\x00"), "not JSON",
                 id="chrome-given-sqlite"),
    pytest.param(read_nsys, lambda tmp: _write(tmp / "t.json", '{"traceEvents": []}'), "not an SQLite file",
                 id="nsys-given-json"),
    pytest.param(read_nsys, _directory, "cannot read", id="nsys-directory"),
])
def test_each_reader_alone_refuses_what_is_not_its_format_in_one_line(tmp_path, reader, make, message):
    path = make(tmp_path)
    with pytest.raises(TraceError) as raised:
        reader(path)
    assert "\n" not in str(raised.value) and message in str(raised.value), str(raised.value)
