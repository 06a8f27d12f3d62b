"""A stand-in for the `pynvml` module (NVML cannot exist without a GPU), imported by name in the
monitor's own sampler process (GPUCERT_NVML_MODULE=fake_pynvml). The code under test imports it
as the top-level module `fake_pynvml`, so this folder must be on sys.path: `importable(monkeypatch)`
puts it there for one test (the spawned sampler inherits sys.path), a subprocess gets FOLDER on
PYTHONPATH. Nothing else may rely on pytest having put this folder on sys.path.

Two H100-like GPUs whose readings follow the clock, so a test can predict them: 300 W and 200 W
constant (the energy counter grows with it), utilization 90 %, memory 10 / 20 GiB, NVLink TX
counters growing at 10 GB/s on GPU 0 (the older KiB counters, per link and summed over the links
with scopeId UINT_MAX, as driver 580 on H100 answers them) and RX at 5 GB/s on GPU 1 (the newer
byte counters, per link only), a power-cap slowdown on GPU 1, PCIe counters absent
(NOT_SUPPORTED) as on drivers before 535.
FAKE_NVML_GAUGE_CPU_MS / FAKE_NVML_ENERGY_CPU_MS make a call burn that much CPU, as a slow driver's does.

Faults planted for real (FAKE_NVML_PLAN: a JSON file, re-read whenever it changes — a test writes
the timed part after the sampler started; `write_plan` writes it whole at once): every time is an
absolute time.monotonic() (one clock for every process of the host), a GPU index is a string key.
  "events": [{"at": s, "gpu": i, "type": "xid" | "ecc_single_bit" | "ecc_double_bit", "data": n}]
      delivered by nvmlEventSetWait_v2 from `at` on, once, to a set registered for that type;
  "register_not_supported": [i], "remapped_rows_not_supported": [i], "retired_pages_not_supported": [i]
      those calls raise NVMLError_NotSupported on those GPUs (as on GPUs without the feature);
  "supported_events": {i: mask}  what nvmlDeviceGetSupportedEventTypes answers (default: all);
  "remapped_rows": {i: [[at, corrected, uncorrected, pending, failure], ...]},
  "retired_pages": {i: [[at, single_bit, double_bit], ...]}   step functions: the last step with
      at <= now holds (before the first: zeros);
  "clock_events", "sm_clock_mhz", "util_gpu_pct": {i: [[from, to, value], ...]}
      the value within [from, to), else the constant below.
FAKE_NVML_POINTER_HANDLES=1: device handles are ctypes pointers, a new pointer object from every
call (an event's `device` too), as pynvml's are — two of them to one GPU compare unequal."""

import ctypes
import functools
import json
import os
import time
from types import SimpleNamespace

NOT_SUPPORTED = 3
TIMEOUT = 10
NO_INSTANCE = 0xFFFFFFFF
EVENT_BITS = {"ecc_single_bit": 0x1, "ecc_double_bit": 0x2, "xid": 0x8}
ALL_EVENTS = 0x1 | 0x2 | 0x4 | 0x8 | 0x10  # ECC, P-state, XID, clock: what an H100 answers
SM_CLOCK_MHZ, UTIL_GPU_PCT = 1980, 90
ALL_LINKS = 0xFFFFFFFF
_T0 = time.monotonic()
POWER_MW = (300_000, 200_000)
MEMORY_MIB = (10 * 1024, 20 * 1024)
NVLINK_TX_KIB_PER_S = (10e9 / 1024, 0.0)  # GPU 0 sends 10 GB/s over its links in total (KiB counters)
NVLINK_RX_BYTES_PER_S = (0.0, 5e9)  # GPU 1 receives 5 GB/s, on the newer byte counters only
CLOCK_EVENTS = (0x0, 0x4)  # GPU 1: sw_power_cap

NAME = "fake_pynvml"  # what GPUCERT_NVML_MODULE / nvml_module name: the top-level module, not tests.selftest's
FOLDER = os.path.dirname(os.path.abspath(__file__))


def importable(monkeypatch) -> str:
    """Put this folder on sys.path for the rest of the test (undone after it) and return the name
    to give the code under test."""
    monkeypatch.syspath_prepend(FOLDER)
    return NAME


class NVMLError(Exception):
    def __init__(self, value):
        super().__init__("Not Supported" if value == NOT_SUPPORTED else f"NVML error {value}")
        self.value = value


def _burn(variable):
    """The CPU a call costs on a slow driver: `variable` (ms) in the environment, busy-waited."""
    burn = float(os.environ.get(variable, "0")) / 1e3
    start = time.process_time()
    while time.process_time() - start < burn:
        pass


def _elapsed():
    return time.monotonic() - _T0


def write_plan(path, plan) -> None:
    """The plan as one file, replaced whole (a reader never sees half of it)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(plan, f)
    os.replace(tmp, path)


_plan_cache = {"key": None, "plan": {}}


def _plan():
    path = os.environ.get("FAKE_NVML_PLAN")
    if not path:
        return {}
    try:
        st = os.stat(path)
    except OSError:
        return {}
    key = (st.st_ino, st.st_mtime_ns, st.st_size)
    if key != _plan_cache["key"]:
        with open(path) as f:
            _plan_cache["plan"], _plan_cache["key"] = json.load(f), key
    return _plan_cache["plan"]


def _planned(name, handle, default):
    """A planned value within one of its [from, to) spans, else the default."""
    now = time.monotonic()
    for start, end, value in _plan().get(name, {}).get(str(handle), ()):
        if start <= now < end:
            return value
    return default


def _step(name, handle, zeros):
    now = time.monotonic()
    value = zeros
    for at, *values in _plan().get(name, {}).get(str(handle), ()):
        if at <= now:
            value = values
    return value


def _refuse(name, handle):
    if handle in _plan().get(name, ()):
        raise NVMLError(NOT_SUPPORTED)


def nvmlInit():
    # a driver whose init takes seconds (FAKE_NVML_INIT_S), announced by writing this process's pid
    # to FAKE_NVML_INIT_MARKER first: a test can then Ctrl-C while the sampler is still starting
    marker = os.environ.get("FAKE_NVML_INIT_MARKER")
    if marker:
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
    time.sleep(float(os.environ.get("FAKE_NVML_INIT_S", "0")))


def nvmlShutdown():
    pass


def nvmlDeviceGetCount():
    return 2


class _Device(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint)]


_DEVICES = [_Device(i) for i in range(2)]


def _handle(index):
    if os.environ.get("FAKE_NVML_POINTER_HANDLES"):
        return ctypes.pointer(_DEVICES[index])
    return index


def _index(handle):
    return handle.contents.index if isinstance(handle, ctypes._Pointer) else handle


def nvmlDeviceGetHandleByIndex(index):
    return _handle(index)


def nvmlDeviceGetIndex(handle):
    return handle


def nvmlDeviceGetName(handle):
    return "NVIDIA H100 80GB HBM3"


def nvmlDeviceGetUtilizationRates(handle):
    _burn("FAKE_NVML_GAUGE_CPU_MS")
    return SimpleNamespace(gpu=_planned("util_gpu_pct", handle, UTIL_GPU_PCT), memory=40)


def nvmlDeviceGetMemoryInfo(handle):
    return SimpleNamespace(used=MEMORY_MIB[handle] * 2**20, total=81559 * 2**20)


def nvmlDeviceGetPowerUsage(handle):
    return POWER_MW[handle]


def nvmlDeviceGetTotalEnergyConsumption(handle):
    _burn("FAKE_NVML_ENERGY_CPU_MS")  # H100, driver 580: ~3 ms
    return int(1_000_000 + POWER_MW[handle] * _elapsed())  # mJ


def nvmlDeviceGetClockInfo(handle, clock):
    return _planned("sm_clock_mhz", handle, SM_CLOCK_MHZ) if clock == 1 else {2: 2619}[clock]


def nvmlDeviceGetTemperature(handle, sensor):
    return 40 + handle


def nvmlDeviceGetCurrentClocksEventReasons(handle):
    return _planned("clock_events", handle, CLOCK_EVENTS[handle])


def nvmlDeviceGetTotalEccErrors(handle, error_type, counter_type):
    return 0


def nvmlDeviceGetFieldValues(handle, requests):
    """GPU 0 answers the older NVLink KiB counters (138/139), GPU 1 the byte counters (202/204)."""
    answers = []
    for field, link in requests:
        if handle == 0 and field == 138 and link in (0, ALL_LINKS):  # NVLink TX KiB, all of it on link 0
            value = SimpleNamespace(nvmlReturn=0, valueType=3,
                                    value=SimpleNamespace(ullVal=int(NVLINK_TX_KIB_PER_S[handle] * _elapsed())))
        elif handle == 1 and field == 204 and link == 3:  # NVLink RX bytes, all of it on link 3
            value = SimpleNamespace(nvmlReturn=0, valueType=3,
                                    value=SimpleNamespace(ullVal=int(NVLINK_RX_BYTES_PER_S[handle] * _elapsed())))
        elif (handle == 0 and field in (138, 139)) or (handle == 1 and field in (202, 204) and link != ALL_LINKS):
            value = SimpleNamespace(nvmlReturn=0, valueType=3, value=SimpleNamespace(ullVal=0))
        else:
            value = SimpleNamespace(nvmlReturn=NOT_SUPPORTED, valueType=3, value=SimpleNamespace(ullVal=0))
        answers.append(value)
    return answers


def nvmlDeviceGetRemappedRows(handle):
    _refuse("remapped_rows_not_supported", handle)
    corrected, uncorrected, pending, failure = _step("remapped_rows", handle, [0, 0, 0, 0])
    return corrected, uncorrected, pending, failure


def nvmlDeviceGetRetiredPages(handle, cause):
    _refuse("retired_pages_not_supported", handle)
    counts = _step("retired_pages", handle, [0, 0])
    return [0x1000 * (k + 1) for k in range(counts[cause])]  # page addresses: only their number matters


# ---- events: a set registered per device for a mask, waited on with a timeout ------------------

class _EventSet:
    def __init__(self):
        self.registered = {}  # handle -> event mask
        self.delivered = set()
        self.freed = False


def nvmlEventSetCreate():
    return _EventSet()


def nvmlDeviceGetSupportedEventTypes(handle):
    return int(_plan().get("supported_events", {}).get(str(handle), ALL_EVENTS))


def nvmlDeviceRegisterEvents(handle, event_types, event_set):
    _refuse("register_not_supported", handle)
    if event_types & ~nvmlDeviceGetSupportedEventTypes(handle):  # as NVML: one unsupported type refuses all
        raise NVMLError(NOT_SUPPORTED)
    event_set.registered[handle] = event_set.registered.get(handle, 0) | event_types


def _due(event_set, now):
    """The earliest planned event not yet delivered that the set listens for: (at, key, event)."""
    due = None
    for event in _plan().get("events", ()):
        key = json.dumps(event, sort_keys=True)
        bit = EVENT_BITS[event["type"]]
        if key in event_set.delivered or not event_set.registered.get(event["gpu"], 0) & bit:
            continue
        if due is None or event["at"] < due[0]:
            due = (event["at"], key, event)
    return due


def nvmlEventSetWait_v2(event_set, timeout_ms):
    """The next planned event once its time has come, else NVMLError(TIMEOUT) after timeout_ms.
    Sleeps in short steps: a plan written meanwhile is seen within one."""
    deadline = time.monotonic() + timeout_ms / 1e3
    while True:
        now = time.monotonic()
        due = _due(event_set, now)
        if due is not None and due[0] <= now:
            event_set.delivered.add(due[1])
            event = due[2]
            return SimpleNamespace(device=_handle(event["gpu"]), eventType=EVENT_BITS[event["type"]],
                                   eventData=event.get("data", 0), gpuInstanceId=NO_INSTANCE,
                                   computeInstanceId=NO_INSTANCE)
        if now >= deadline:
            raise NVMLError(TIMEOUT)
        until = min(deadline, due[0] if due is not None else deadline, now + 0.02)
        time.sleep(max(0.0, until - now))


def nvmlEventSetFree(event_set):
    event_set.freed = True


def _takes_index(fn):
    @functools.wraps(fn)
    def call(handle, *args):
        return fn(_index(handle), *args)
    return call


# every per-device call takes a handle: here, the GPU's index whatever form the handle has
for _name, _fn in list(globals().items()):
    if _name.startswith("nvmlDevice") and _name not in ("nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex"):
        globals()[_name] = _takes_index(_fn)
