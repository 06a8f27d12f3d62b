"""One trace, whatever wrote it: the columns the gap analysis needs, in numpy arrays.

A PyTorch profiler (Kineto) trace and an Nsight Systems SQLite export say the same things in
different shapes: what each GPU ran and when (kernels, copies, sets, per stream), which host API
call launched it (the correlation id), what the host was inside (annotations: vLLM's
`execute_context_…_generation_…` per engine step, NVTX ranges). The readers
(`read_chrome`, `read_nsys`) fill a `TimelineBuilder` event by event — a trace of a gigabyte is
never held as Python objects — and `build()` returns the sorted columns.

Times are microseconds (float64) on the trace's own clock; `wall_offset_us` turns them into Unix
time (µs) where the trace says how (Kineto's `baseTimeNanoseconds`, nsys's session start), so the
load generator's requests and the monitor's samples can be laid over them.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field

import numpy as np

# what a device op is (DeviceOps.kind holds the index)
OP_KINDS = ("kernel", "memcpy", "memset")
KERNEL, MEMCPY, MEMSET = range(3)
NO_CORRELATION = -1


@dataclass
class DeviceOps:
    """One GPU's work, sorted by start: every kernel, copy and set on any of its streams."""

    start_us: np.ndarray  # float64
    end_us: np.ndarray  # float64
    kind: np.ndarray  # int8, index into OP_KINDS
    name: np.ndarray  # int32, index into Timeline.names
    stream: np.ndarray  # int64
    correlation: np.ndarray  # int64, NO_CORRELATION where the trace gave none

    def __len__(self) -> int:
        return len(self.start_us)


@dataclass
class HostCalls:
    """CUDA runtime / driver API calls on the host (cudaLaunchKernel, cudaGraphLaunch,
    cudaMemcpyAsync, cudaStreamSynchronize, …), sorted by start. The correlation id ties a launch
    to the device ops it queued (one cudaGraphLaunch: every kernel of the graph)."""

    start_us: np.ndarray
    end_us: np.ndarray
    name: np.ndarray  # int32
    correlation: np.ndarray  # int64
    thread: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.start_us)


@dataclass
class Ranges:
    """Host ranges with a name: PyTorch `record_function` annotations (category user_annotation)
    and NVTX push/pop or start/end ranges, sorted by start. Engine steps are found among them."""

    start_us: np.ndarray
    end_us: np.ndarray
    name: np.ndarray  # int32
    thread: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.start_us)


@dataclass
class Timeline:
    source: str  # "pytorch" (Kineto / Chrome trace JSON) or "nsys" (SQLite export)
    path: str
    names: list[str]
    devices: dict[int, DeviceOps]
    host_calls: HostCalls
    ranges: Ranges
    wall_offset_us: float | None  # Unix time (µs) of the trace's time 0; None: not known
    events_read: int  # every event the reader looked at
    skipped: dict[str, int] = field(default_factory=dict)  # events left out, by why (counts)

    def name_of(self, index: int) -> str:
        return self.names[int(index)]

    def span_us(self) -> tuple[float, float] | None:
        """First start and last end over every device op; None without any."""
        starts = [ops.start_us[0] for ops in self.devices.values() if len(ops)]
        if not starts:
            return None
        return float(min(starts)), float(max(ops.end_us.max() for ops in self.devices.values() if len(ops)))


class _Columns:
    """Growing typed columns (array module: 8 bytes a value, not a Python object each)."""

    def __init__(self, spec: dict[str, str]):
        self.spec = spec
        self.data = {name: array(code) for name, code in spec.items()}

    def append(self, *values) -> None:
        for column, value in zip(self.data.values(), values):
            column.append(value)

    def sorted_by(self, key: str, dtypes: dict[str, type]) -> dict[str, np.ndarray]:
        cols = {name: np.frombuffer(col, dtype=dtypes[name]).copy() if len(col) else np.empty(0, dtypes[name])
                for name, col in self.data.items()}
        order = np.argsort(cols[key], kind="stable")
        return {name: col[order] for name, col in cols.items()}


_OPS = {"start_us": "d", "end_us": "d", "kind": "b", "name": "i", "stream": "q", "correlation": "q"}
_OPS_DT = {"start_us": np.float64, "end_us": np.float64, "kind": np.int8, "name": np.int32,
           "stream": np.int64, "correlation": np.int64}
_CALLS = {"start_us": "d", "end_us": "d", "name": "i", "correlation": "q", "thread": "q"}
_CALLS_DT = {"start_us": np.float64, "end_us": np.float64, "name": np.int32, "correlation": np.int64,
             "thread": np.int64}
_RANGES = {"start_us": "d", "end_us": "d", "name": "i", "thread": "q"}
_RANGES_DT = {"start_us": np.float64, "end_us": np.float64, "name": np.int32, "thread": np.int64}


class TimelineBuilder:
    """What a reader fills, one event at a time. Names are interned (one string per distinct
    kernel or call name, however many times it ran)."""

    def __init__(self, source: str, path: str):
        self.source, self.path = source, path
        self.names: list[str] = []
        self._name_ids: dict[str, int] = {}
        self._devices: dict[int, _Columns] = {}
        self._calls = _Columns(_CALLS)
        self._ranges = _Columns(_RANGES)
        self.wall_offset_us: float | None = None
        self.events_read = 0
        self.skipped: dict[str, int] = {}

    def name_id(self, name: str) -> int:
        found = self._name_ids.get(name)
        if found is None:
            found = self._name_ids[name] = len(self.names)
            self.names.append(name)
        return found

    def device_op(self, device: int, kind: int, name: str, start_us: float, end_us: float,
                  stream: int = 0, correlation: int = NO_CORRELATION) -> None:
        columns = self._devices.get(device)
        if columns is None:
            columns = self._devices[device] = _Columns(_OPS)
        columns.append(start_us, end_us, kind, self.name_id(name), stream, correlation)

    def host_call(self, name: str, start_us: float, end_us: float, correlation: int = NO_CORRELATION,
                  thread: int = 0) -> None:
        self._calls.append(start_us, end_us, self.name_id(name), correlation, thread)

    def host_range(self, name: str, start_us: float, end_us: float, thread: int = 0) -> None:
        self._ranges.append(start_us, end_us, self.name_id(name), thread)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def build(self) -> Timeline:
        devices = {device: DeviceOps(**columns.sorted_by("start_us", _OPS_DT))
                   for device, columns in sorted(self._devices.items())}
        return Timeline(source=self.source, path=self.path, names=self.names, devices=devices,
                        host_calls=HostCalls(**self._calls.sorted_by("start_us", _CALLS_DT)),
                        ranges=Ranges(**self._ranges.sorted_by("start_us", _RANGES_DT)),
                        wall_offset_us=self.wall_offset_us, events_read=self.events_read, skipped=dict(self.skipped))


class TraceError(ValueError):
    """A trace that cannot be read: the one line the command prints (exit 4 / usage error)."""
