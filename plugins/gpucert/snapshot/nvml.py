"""Live GPU fields through NVML (the `pynvml` module of nvidia-ml-py).

Every NVML call is guarded on its own: a field this GPU or driver does not support becomes None
and the rest still arrive. The module object is a parameter (`read(pynvml_module)`), which is
the one seam tests use to inject a fake; nothing else here touches the real library.
Constants are NVML's C ABI values (nvml.h), stable across releases, so a fake needs only the
functions and `NVMLError`.
"""

from __future__ import annotations

from .schema import ecc_counts, empty_gpu, nvlink_entry

# nvml.h return codes and enums used below.
ERROR_INVALID_ARGUMENT = 2
ERROR_NOT_SUPPORTED = 3
ERROR_FUNCTION_NOT_FOUND = 13   # driver older than the binding
ERROR_GPU_IS_LOST = 15          # the GPU fell off the bus (or was reset) while it was read
CLOCK_GRAPHICS, CLOCK_SM, CLOCK_MEM = 0, 1, 2
TEMPERATURE_GPU = 0
MEMORY_ERROR_CORRECTED, MEMORY_ERROR_UNCORRECTED = 0, 1
VOLATILE_ECC, AGGREGATE_ECC = 0, 1
MEMORY_LOCATION_DRAM, MEMORY_LOCATION_SRAM = 2, 7
RETIRED_SINGLE_BIT, RETIRED_DOUBLE_BIT = 0, 1
FI_DEV_MEMORY_TEMP = 82
FI_DEV_NVLINK_GET_SPEED = 164   # per link (scopeId), MB/s per direction
NVLINK_MAX_LINKS = 18           # per GPU through Blackwell; the binding's own value wins if larger

# Clock-event reason bits (nvmlClocksEventReason*), named as nvidia-smi -q prints them.
CLOCK_EVENT_REASONS = {
    0x001: "idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}
COMPUTE_MODES = {0: "Default", 1: "Exclusive_Thread", 2: "Prohibited", 3: "Exclusive_Process"}
ARCHITECTURES = {2: "Kepler", 3: "Maxwell", 4: "Pascal", 5: "Volta", 6: "Turing", 7: "Ampere",
                 8: "Ada Lovelace", 9: "Hopper", 10: "Blackwell"}
# Errors that only mean "this field does not exist here": no note for them.
_QUIET = {ERROR_NOT_SUPPORTED, ERROR_FUNCTION_NOT_FOUND}


class NvmlUnavailable(RuntimeError):
    """NVML could not be loaded or initialised (no driver, no library, binding missing)."""


class NvmlBroken(NvmlUnavailable):
    """NVML initialised, then could not say how many GPUs there are: a driver in trouble, not a
    machine without GPUs."""


def read(pynvml_module) -> dict:
    """{"driver": {...}, "gpus": [...], "problems": [...], "incomplete": [...]} — init, read
    every GPU, shut down. `problems` lists calls that failed for a reason other than "not
    supported"; `incomplete` what makes the reading partial: a GPU whose handle or identity
    could not be read, a GPU lost mid-read. A failing GPU count raises NvmlBroken."""
    nv = pynvml_module
    try:
        nv.nvmlInit()
    except nv.NVMLError as err:
        raise NvmlUnavailable(str(err)) from err
    try:
        reader = _Reader(nv)
        driver = read_driver(reader)
        gpus = read_gpus(reader)
        return {"driver": driver, "gpus": gpus, "problems": reader.problems,
                "incomplete": reader.incomplete}
    finally:
        try:
            nv.nvmlShutdown()
        except nv.NVMLError:
            pass  # shutting down is best effort; the values are already read


def import_pynvml():
    """The real binding, imported only when a live snapshot is taken."""
    try:
        import pynvml
    except ImportError as err:
        raise NvmlUnavailable("nvidia-ml-py (pynvml) is not installed") from err
    return pynvml


class _Reader:
    """Calls NVML functions by name; a failing call yields None instead of an exception."""

    def __init__(self, nv):
        self.nv = nv
        self.problems: list[str] = []
        self.incomplete: list[str] = []
        self._partial: set[str] = set()  # the GPUs ("GPU1 ") already listed in `incomplete`

    def call(self, function: str, *args, where: str = ""):
        value, _ = self.attempt(function, *args, where=where)
        return value

    def attempt(self, function: str, *args, where: str = ""):
        """(result, None) or (None, the NVMLError); a failure is noted as in call()."""
        fn = getattr(self.nv, function, None)
        if fn is None:  # an older binding without this function
            return None, None
        try:
            return fn(*args), None
        except self.nv.NVMLError as err:
            code = getattr(err, "value", None)
            if code not in _QUIET:
                problem = f"{where}{function}: {err}"
                if problem not in self.problems:
                    self.problems.append(problem)
            if code == ERROR_GPU_IS_LOST:
                # every later field of this GPU is unknown: the reading is partial, not the node's
                self.partial(where, f"{where}{function}: {err}: the GPU was lost while it was read")
            return None, err

    def partial(self, where: str, text: str) -> None:
        """List a GPU whose reading is partial, once (its first cause)."""
        if where not in self._partial:
            self._partial.add(where)
            self.incomplete.append(text)

    def error_of(self, function: str, *args):
        """(result, NVML error code or None) for calls whose error is information."""
        fn = getattr(self.nv, function, None)
        if fn is None:
            return None, ERROR_FUNCTION_NOT_FOUND
        try:
            return fn(*args), None
        except self.nv.NVMLError as err:
            return None, getattr(err, "value", None)


def read_driver(reader: _Reader) -> dict:
    cuda = reader.call("nvmlSystemGetCudaDriverVersion")
    return {
        "version": _text(reader.call("nvmlSystemGetDriverVersion")),
        # 13000 → "13.0", as nvidia-smi prints it
        "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None,
    }


def read_gpus(reader: _Reader) -> list[dict]:
    count, err = reader.attempt("nvmlDeviceGetCount")
    if err is not None:
        # 0 GPUs here would make a node whose driver is in trouble look like a GPU-less one
        raise NvmlBroken(f"NVML initialised, then nvmlDeviceGetCount failed: {err}")
    gpus = [_gpu(reader, index) for index in range(count or 0)]
    for gpu in gpus:
        unread = [field for field in ("name", "uuid") if gpu[field] is None]
        if unread:  # every GPU has both: without them the profile and the drift are guesses
            where = f"GPU{gpu['index']} "
            reader.partial(where, f"{where}{' and '.join(unread)} unreadable: which GPU this is, is unknown")
    return gpus


def _gpu(reader: _Reader, index: int) -> dict:
    gpu = empty_gpu(index)
    where = f"GPU{index} "
    handle, err = reader.attempt("nvmlDeviceGetHandleByIndex", index, where=where)
    if handle is None:
        reader.partial(where, f"{where}nvmlDeviceGetHandleByIndex: {err or 'no handle'}: "
                              "every field of this GPU is unknown")
        return gpu

    def call(function, *args):
        return reader.call(function, handle, *args, where=where)

    pci = call("nvmlDeviceGetPciInfo")
    memory = call("nvmlDeviceGetMemoryInfo")
    mig = call("nvmlDeviceGetMigMode") or (None, None)
    ecc_mode = call("nvmlDeviceGetEccMode") or (None, None)
    remapped = call("nvmlDeviceGetRemappedRows") or (None, None, None, None)
    constraints = call("nvmlDeviceGetPowerManagementLimitConstraints") or (None, None)
    reasons = call("nvmlDeviceGetCurrentClocksEventReasons")
    if reasons is None:  # bindings before 12.535 only have the older name
        reasons = call("nvmlDeviceGetCurrentClocksThrottleReasons")
    utilization = call("nvmlDeviceGetUtilizationRates")
    pstate = call("nvmlDeviceGetPerformanceState")
    fields = _field_values(reader, handle, [(FI_DEV_MEMORY_TEMP, 0)])
    gpu.update({
        "name": _text(call("nvmlDeviceGetName")),
        "uuid": _text(call("nvmlDeviceGetUUID")),
        "serial": _text(call("nvmlDeviceGetSerial")),
        "pci_bus_id": _text(getattr(pci, "busId", None)),
        "memory_total_mib": memory.total // (1024 * 1024) if memory is not None else None,
        "vbios": _text(call("nvmlDeviceGetVbiosVersion")),
        "architecture": ARCHITECTURES.get(call("nvmlDeviceGetArchitecture")),
        "persistence_mode": _flag(call("nvmlDeviceGetPersistenceMode")),
        "compute_mode": COMPUTE_MODES.get(call("nvmlDeviceGetComputeMode")),
        "mig_mode": {"current": _flag(mig[0]), "pending": _flag(mig[1])},
        "ecc": {
            "mode_current": _flag(ecc_mode[0]),
            "mode_pending": _flag(ecc_mode[1]),
            "volatile": _ecc_counts(call, VOLATILE_ECC),
            "aggregate": _ecc_counts(call, AGGREGATE_ECC),
        },
        "retired_pages": {
            "single_bit": _count(call("nvmlDeviceGetRetiredPages", RETIRED_SINGLE_BIT)),
            "double_bit": _count(call("nvmlDeviceGetRetiredPages", RETIRED_DOUBLE_BIT)),
            "pending": _flag(call("nvmlDeviceGetRetiredPagesPendingStatus")),
        },
        "remapped_rows": {
            "correctable": remapped[0],
            "uncorrectable": remapped[1],
            "pending": _flag(remapped[2]),
            "failure": _flag(remapped[3]),
        },
        "power_limit_w": {
            "current": _watts(call("nvmlDeviceGetPowerManagementLimit")),
            "default": _watts(call("nvmlDeviceGetPowerManagementDefaultLimit")),
            "max": _watts(constraints[1]),
        },
        "clocks_max_mhz": {
            "graphics": call("nvmlDeviceGetMaxClockInfo", CLOCK_GRAPHICS),
            "sm": call("nvmlDeviceGetMaxClockInfo", CLOCK_SM),
            "memory": call("nvmlDeviceGetMaxClockInfo", CLOCK_MEM),
        },
        "clocks_applications_mhz": {
            "graphics": call("nvmlDeviceGetApplicationsClock", CLOCK_GRAPHICS),
            "memory": call("nvmlDeviceGetApplicationsClock", CLOCK_MEM),
        },
        "pcie": {
            "gen_current": call("nvmlDeviceGetCurrPcieLinkGeneration"),
            "gen_max": call("nvmlDeviceGetMaxPcieLinkGeneration"),
            "width_current": call("nvmlDeviceGetCurrPcieLinkWidth"),
            "width_max": call("nvmlDeviceGetMaxPcieLinkWidth"),
        },
        "nvlink": _nvlinks(reader, handle),
        "throttle_reasons": (sorted(name for bit, name in CLOCK_EVENT_REASONS.items()
                                    if reasons & bit) if reasons is not None else None),
        "volatile": {
            "performance_state": f"P{pstate}" if pstate is not None else None,
            "temperature_c": call("nvmlDeviceGetTemperature", TEMPERATURE_GPU),
            "memory_temperature_c": fields.get((FI_DEV_MEMORY_TEMP, 0)),
            "power_draw_w": _watts(call("nvmlDeviceGetPowerUsage")),
            "clocks_mhz": {
                "graphics": call("nvmlDeviceGetClockInfo", CLOCK_GRAPHICS),
                "sm": call("nvmlDeviceGetClockInfo", CLOCK_SM),
                "memory": call("nvmlDeviceGetClockInfo", CLOCK_MEM),
            },
            "utilization_pct": {
                "gpu": getattr(utilization, "gpu", None),
                "memory": getattr(utilization, "memory", None),
            },
        },
    })
    return gpu


def _ecc_counts(call, counter: int) -> dict:
    def count(error_type, location):
        return call("nvmlDeviceGetMemoryErrorCounter", error_type, counter, location)
    return ecc_counts(
        sram_correctable=count(MEMORY_ERROR_CORRECTED, MEMORY_LOCATION_SRAM),
        sram_uncorrectable=count(MEMORY_ERROR_UNCORRECTED, MEMORY_LOCATION_SRAM),
        dram_correctable=count(MEMORY_ERROR_CORRECTED, MEMORY_LOCATION_DRAM),
        dram_uncorrectable=count(MEMORY_ERROR_UNCORRECTED, MEMORY_LOCATION_DRAM),
    )


def _nvlinks(reader: _Reader, handle) -> list[dict] | None:
    """Links until NVML says there are no more. A GPU with no active link gets [] — as
    `nvidia-smi nvlink -s`, which prints no links then — so both sources agree."""
    max_links = max(NVLINK_MAX_LINKS, getattr(reader.nv, "NVML_NVLINK_MAX_LINKS", 0))
    states = []
    for link in range(max_links):
        state, error = reader.error_of("nvmlDeviceGetNvLinkState", handle, link)
        if error is not None:
            if link == 0 and error not in (ERROR_NOT_SUPPORTED, ERROR_INVALID_ARGUMENT):
                return None  # unknown, not "no NVLink"
            break
        states.append(bool(state))
    if not any(states):
        return []
    speeds = _field_values(reader, handle,
                           [(FI_DEV_NVLINK_GET_SPEED, link) for link in range(len(states))])
    links = []
    for link, active in enumerate(states):
        mbps = speeds.get((FI_DEV_NVLINK_GET_SPEED, link))
        links.append(nvlink_entry(link, active, round(mbps / 1000, 3) if mbps else None))
    return links


# c_nvmlFieldValue_t.valueType → the union member holding the value
_VALUE_MEMBERS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal",
                  6: "usVal"}


def _field_values(reader: _Reader, handle, requests: list[tuple[int, int]]) -> dict:
    """{(field id, scope): number} for the fields NVML answered; missing ones are absent."""
    values = reader.call("nvmlDeviceGetFieldValues", handle, requests)
    found = {}
    for request, value in zip(requests, values or ()):
        if getattr(value, "nvmlReturn", 1) != 0:
            continue
        member = _VALUE_MEMBERS.get(getattr(value, "valueType", None))
        number = getattr(value.value, member, None) if member else None
        if number is not None:
            found[request] = number
    return found


def _text(value) -> str | None:
    if isinstance(value, bytes):  # bindings before 11.5 return bytes
        value = value.decode(errors="replace")
    return value.strip() or None if isinstance(value, str) else None


def _flag(value) -> bool | None:
    return None if value is None else bool(value)


def _watts(milliwatts) -> float | None:
    return None if milliwatts is None else milliwatts / 1000


def _count(pages) -> int | None:
    return None if pages is None else len(pages)
