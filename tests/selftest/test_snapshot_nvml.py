"""The live NVML reader against a fake `pynvml` whose values mirror the captured H100 node.

The fake answers by function name from a per-GPU table; a function missing from the table
raises NVMLError(NOT_SUPPORTED), as the real library does for fields a GPU lacks.
"""

import copy
from types import SimpleNamespace

import pytest

from gpucert import snapshot
from gpucert.snapshot import nvml, smi_nvlink, smi_query
from gpucert.snapshot.collect import collect_live
from gpucert.snapshot.smi import SmiUnavailable

from .captures import FIXTURE

NOT_SUPPORTED, INVALID_ARGUMENT, GPU_IS_LOST = 3, 2, 15
MIB = 1024 * 1024


class NVMLError(Exception):
    def __init__(self, value):
        super().__init__({3: "Not Supported", 2: "Invalid Argument", 15: "GPU is lost"}
                         .get(value, f"NVML error {value}"))
        self.value = value


class Raise:
    """A table entry that makes the call fail with this NVML error code."""

    def __init__(self, code):
        self.code = code


def h100(index, uuid, serial, bus_id, temperature):
    return {
        "nvmlDeviceGetName": "NVIDIA H100 80GB HBM3",
        "nvmlDeviceGetUUID": uuid,
        "nvmlDeviceGetSerial": serial,
        "nvmlDeviceGetPciInfo": SimpleNamespace(busId=bus_id),
        "nvmlDeviceGetMemoryInfo": SimpleNamespace(total=81559 * MIB),
        "nvmlDeviceGetVbiosVersion": "96.00.DA.00.0C",
        "nvmlDeviceGetArchitecture": 9,
        "nvmlDeviceGetPersistenceMode": 1,
        "nvmlDeviceGetComputeMode": 0,
        "nvmlDeviceGetMigMode": [0, 0],
        "nvmlDeviceGetEccMode": [1, 1],
        # error type → counter type → location (2 DRAM, 7 SRAM) → count
        "nvmlDeviceGetMemoryErrorCounter": {e: {c: {2: 0, 7: 0} for c in (0, 1)} for e in (0, 1)},
        # retired pages: N/A on Hopper (row remapping replaced them) → not in the table
        "nvmlDeviceGetRemappedRows": (0, 0, 0, 0),
        "nvmlDeviceGetPowerManagementLimit": 700000,
        "nvmlDeviceGetPowerManagementDefaultLimit": 700000,
        "nvmlDeviceGetPowerManagementLimitConstraints": (200000, 700000),
        "nvmlDeviceGetMaxClockInfo": {0: 1980, 1: 1980, 2: 2619},
        "nvmlDeviceGetApplicationsClock": {0: 1980, 2: 2619},
        "nvmlDeviceGetCurrPcieLinkGeneration": 5,
        "nvmlDeviceGetMaxPcieLinkGeneration": 5,
        "nvmlDeviceGetCurrPcieLinkWidth": 16,
        "nvmlDeviceGetMaxPcieLinkWidth": 16,
        "nvmlDeviceGetNvLinkState": {link: 1 for link in range(18)},
        "nvmlDeviceGetCurrentClocksEventReasons": 0x1,  # GPU idle
        "nvmlDeviceGetTemperature": {0: temperature},
        "nvmlDeviceGetPowerUsage": 69040,
        "nvmlDeviceGetClockInfo": {0: 345, 1: 345, 2: 2619},
        "nvmlDeviceGetUtilizationRates": SimpleNamespace(gpu=0, memory=0),
        "nvmlDeviceGetPerformanceState": 0,
        "fields": {**{(164, link): 26562 for link in range(18)}, (82, 0): 35},
    }


class FakePynvml:
    NVMLError = NVMLError

    def __init__(self, gpus, driver="580.159.04", cuda=13000):
        self.gpus = gpus
        self.driver = driver
        self.cuda = cuda
        self.initialized = False

    def nvmlInit(self):
        self.initialized = True

    def nvmlShutdown(self):
        self.initialized = False

    def nvmlSystemGetDriverVersion(self):
        return self.driver

    def nvmlSystemGetCudaDriverVersion(self):
        return self.cuda

    def nvmlDeviceGetCount(self):
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index):
        return self.gpus[index]

    def nvmlDeviceGetFieldValues(self, handle, requests):
        answers = []
        for request in requests:
            value = handle["fields"].get(tuple(request))
            answers.append(SimpleNamespace(nvmlReturn=0 if value is not None else NOT_SUPPORTED,
                                           valueType=1, value=SimpleNamespace(uiVal=value)))
        return answers

    def __getattr__(self, name):
        if not name.startswith("nvmlDevice"):
            raise AttributeError(name)

        def call(handle, *args):
            assert self.initialized, f"{name} called outside nvmlInit/nvmlShutdown"
            value = handle.get(name, Raise(NOT_SUPPORTED))
            for arg in args:
                if isinstance(value, dict):
                    # past the last NVLink NVML answers "invalid argument"
                    missing = INVALID_ARGUMENT if name == "nvmlDeviceGetNvLinkState" else NOT_SUPPORTED
                    value = value.get(arg, Raise(missing))
            if isinstance(value, Raise):
                raise NVMLError(value.code)
            return value

        return call


def fixture_node():
    return FakePynvml([
        h100(0, "GPU-e6e6948f-a562-7039-2777-28ff85a40348", "1752524018867", "00000000:00:06.0", 29),
        h100(1, "GPU-0595606e-cf87-68bc-dcd1-a66677557151", "1752524022503", "00000000:00:07.0", 32),
    ])


def without_volatile(gpus):
    return [{key: value for key, value in gpu.items() if key != "volatile"} for gpu in gpus]


@pytest.fixture(scope="module")
def from_text():
    parsed = smi_query.parse((FIXTURE / "nvidia-smi-q.txt").read_text())
    links = smi_nvlink.parse((FIXTURE / "nvidia-smi-nvlink-s.txt").read_text())
    for gpu in parsed["gpus"]:
        gpu["nvlink"] = links[gpu["index"]]
    return parsed


def test_nvml_reads_what_nvidia_smi_prints(from_text):
    fake = fixture_node()
    reading = nvml.read(fake)
    assert not fake.initialized  # shut down again
    assert reading["problems"] == []
    assert reading["driver"] == from_text["driver"]
    assert without_volatile(reading["gpus"]) == without_volatile(from_text["gpus"])


def test_nvml_volatile_fields(from_text):
    gpu = nvml.read(fixture_node())["gpus"][0]
    assert gpu["volatile"] == {
        "performance_state": "P0", "temperature_c": 29, "memory_temperature_c": 35,
        "power_draw_w": 69.04, "clocks_mhz": {"graphics": 345, "sm": 345, "memory": 2619},
        "utilization_pct": {"gpu": 0, "memory": 0}}
    assert set(gpu["volatile"]) == set(from_text["gpus"][0]["volatile"])


def test_one_unsupported_field_loses_nothing_else():
    fake = fixture_node()
    del fake.gpus[1]["nvmlDeviceGetVbiosVersion"]
    fake.gpus[1]["nvmlDeviceGetPowerManagementLimit"] = Raise(GPU_IS_LOST)
    reading = nvml.read(fake)
    gpu = reading["gpus"][1]
    assert gpu["vbios"] is None
    assert gpu["power_limit_w"] == {"current": None, "default": 700.0, "max": 700.0}
    assert gpu["uuid"] == "GPU-0595606e-cf87-68bc-dcd1-a66677557151"
    # "not supported" is silent; any other failure is worth a note
    assert reading["problems"] == ["GPU1 nvmlDeviceGetPowerManagementLimit: GPU is lost"]


def test_inactive_link_and_gpu_without_nvlink():
    fake = fixture_node()
    fake.gpus[0]["nvmlDeviceGetNvLinkState"][3] = 0
    fake.gpus[1]["nvmlDeviceGetNvLinkState"] = {}  # a PCIe card: link 0 is not supported
    gpus = nvml.read(fake)["gpus"]
    assert gpus[0]["nvlink"][3] == {"link": 3, "active": False, "speed_gbps": None}
    assert sum(link["active"] for link in gpus[0]["nvlink"]) == 17
    assert gpus[1]["nvlink"] == []


def test_older_binding_throttle_reasons_name():
    fake = fixture_node()
    for gpu in fake.gpus:
        gpu["nvmlDeviceGetCurrentClocksThrottleReasons"] = gpu.pop("nvmlDeviceGetCurrentClocksEventReasons") | 0x4
    assert nvml.read(fake)["gpus"][0]["throttle_reasons"] == ["idle", "sw_power_cap"]


def smi_from_fixture(args):
    files = {("topo", "-m"): "nvidia-smi-topo-m.txt", ("nvlink", "-s"): "nvidia-smi-nvlink-s.txt"}
    return (FIXTURE / files[tuple(args)]).read_text()


def test_live_collect_with_fake_nvml_matches_the_capture():
    live = collect_live(pynvml_module=fixture_node(), smi_runner=smi_from_fixture)
    captured = snapshot.collect(from_dir=FIXTURE)
    assert live["notes"] == []
    assert snapshot.profile_name(live) == "2xH100-80GB-HBM3-NV18"
    # same node, two sources: only host and software (absent from a capture) differ
    assert {change["path"] for change in snapshot.diff(captured, live)} == {"host", "software"}


def test_link_speeds_from_nvidia_smi_when_nvml_lacks_them():
    fake = fixture_node()
    for gpu in fake.gpus:
        gpu["fields"] = {}
    live = collect_live(pynvml_module=fake, smi_runner=smi_from_fixture)
    assert {link["speed_gbps"] for gpu in live["gpus"] for link in gpu["nvlink"]} == {26.562}


def test_missing_nvidia_smi_is_one_note():
    def missing(args):
        raise SmiUnavailable("nvidia-smi not on PATH")

    fake = fixture_node()
    for gpu in fake.gpus:
        gpu["fields"] = {}  # would also want nvlink -s
    live = collect_live(pynvml_module=fake, smi_runner=missing)
    assert live["notes"] == ["nvidia-smi not on PATH: topology skipped"]
    assert live["topology"] is None
    assert live["gpu_found"] is True


def test_init_failure_is_nvml_unavailable():
    class Broken(FakePynvml):
        def nvmlInit(self):
            raise NVMLError(9)  # driver not loaded

    with pytest.raises(nvml.NvmlUnavailable):
        nvml.read(Broken([]))


def test_gpu_record_shape_matches_the_schema(from_text):
    from gpucert.snapshot.schema import empty_gpu

    def shape(value):
        return {k: shape(v) for k, v in value.items()} if isinstance(value, dict) else None

    expected = shape(empty_gpu(0))
    for gpu in nvml.read(fixture_node())["gpus"] + copy.deepcopy(from_text["gpus"]):
        assert shape(gpu) == expected
