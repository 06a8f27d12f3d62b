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
FAKE_NVML_GAUGE_CPU_MS / FAKE_NVML_ENERGY_CPU_MS make a call burn that much CPU, as a slow driver's does."""

import os

import time
from types import SimpleNamespace

NOT_SUPPORTED = 3
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


def nvmlDeviceGetHandleByIndex(index):
    return index


def nvmlDeviceGetName(handle):
    return "NVIDIA H100 80GB HBM3"


def nvmlDeviceGetUtilizationRates(handle):
    _burn("FAKE_NVML_GAUGE_CPU_MS")
    return SimpleNamespace(gpu=90, memory=40)


def nvmlDeviceGetMemoryInfo(handle):
    return SimpleNamespace(used=MEMORY_MIB[handle] * 2**20, total=81559 * 2**20)


def nvmlDeviceGetPowerUsage(handle):
    return POWER_MW[handle]


def nvmlDeviceGetTotalEnergyConsumption(handle):
    _burn("FAKE_NVML_ENERGY_CPU_MS")  # H100, driver 580: ~3 ms
    return int(1_000_000 + POWER_MW[handle] * _elapsed())  # mJ


def nvmlDeviceGetClockInfo(handle, clock):
    return {1: 1980, 2: 2619}[clock]


def nvmlDeviceGetTemperature(handle, sensor):
    return 40 + handle


def nvmlDeviceGetCurrentClocksEventReasons(handle):
    return CLOCK_EVENTS[handle]


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
