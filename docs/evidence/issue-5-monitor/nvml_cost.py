"""What each NVML read the monitor makes costs on this node: wall and CPU ms per call, per GPU
(median of N calls). Run on the GPU node: python3 nvml_cost.py [N]. Finds the call that makes the
sampler expensive, so the monitor can read it less often or another way."""
import statistics
import sys
import time

import pynvml as nv

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20
nv.nvmlInit()
print("driver", nv.nvmlSystemGetDriverVersion(), "nvml", nv.nvmlSystemGetNVMLVersion())
h = nv.nvmlDeviceGetHandleByIndex(0)
links = range(18)


def fields(ids):
    return lambda: nv.nvmlDeviceGetFieldValues(h, ids)


calls = {
    "util": lambda: nv.nvmlDeviceGetUtilizationRates(h),
    "mem": lambda: nv.nvmlDeviceGetMemoryInfo(h),
    "power": lambda: nv.nvmlDeviceGetPowerUsage(h),
    "energy": lambda: nv.nvmlDeviceGetTotalEnergyConsumption(h),
    "sm_clock": lambda: nv.nvmlDeviceGetClockInfo(h, 1),
    "mem_clock": lambda: nv.nvmlDeviceGetClockInfo(h, 2),
    "temp": lambda: nv.nvmlDeviceGetTemperature(h, 0),
    "clock_events": lambda: nv.nvmlDeviceGetCurrentClocksEventReasons(h),
    "ecc_corr": lambda: nv.nvmlDeviceGetTotalEccErrors(h, 0, 0),
    "ecc_uncorr": lambda: nv.nvmlDeviceGetTotalEccErrors(h, 1, 0),
    "fv_pcie_bytes": fields([(197, 0), (198, 0)]),
    "fv_nvlink_bytes_18links": fields([(f, l) for f in (202, 204) for l in links]),
    "fv_nvlink_kib_18links": fields([(f, l) for f in (138, 139) for l in links]),
    "fv_nvlink_bytes_link0": fields([(202, 0), (204, 0)]),
    "fv_nvlink_kib_link0": fields([(138, 0), (139, 0)]),
    "fv_nvlink_kib_all(scope=UINT_MAX)": fields([(138, 0xFFFFFFFF), (139, 0xFFFFFFFF)]),
    "fv_nvlink_bytes_all(scope=UINT_MAX)": fields([(202, 0xFFFFFFFF), (204, 0xFFFFFFFF)]),
    "fv_power_instant(186)": fields([(186, 0)]),
    "fv_energy(83)": fields([(83, 0)]),
}
print(f"{'call':38s} {'wall ms':>9s} {'cpu ms':>9s}  answer")
for name, fn in calls.items():
    walls, cpus, answer = [], [], ""
    for _ in range(N):
        w, c = time.perf_counter(), time.process_time()
        try:
            out = fn()
        except nv.NVMLError as exc:
            answer = f"error {exc}"
            break
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        if not isinstance(out, (str, bytes)) and hasattr(out, "__len__") and len(out) and hasattr(out[0], "nvmlReturn"):
            rets = [v.nvmlReturn for v in out]
            answer = f"ok {rets.count(0)}/{len(rets)}"
        else:
            answer = "ok"
    if walls:
        print(f"{name:38s} {1e3*statistics.median(walls):9.3f} {1e3*statistics.median(cpus):9.3f}  {answer}")
    else:
        print(f"{name:38s} {'-':>9s} {'-':>9s}  {answer}")


def value(v):
    kind = v.valueType
    return getattr(v.value, {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal"}.get(kind, "ullVal"))


# the driver's own sum over the links (scopeId UINT_MAX) against the per-link sum, read together
for gpu in range(nv.nvmlDeviceGetCount()):
    h = nv.nvmlDeviceGetHandleByIndex(gpu)
    for tx, rx, unit in ((138, 139, "KiB"), (202, 204, "bytes")):
        ids = [(tx, 0xFFFFFFFF), (rx, 0xFFFFFFFF)] + [(f, link) for f in (tx, rx) for link in links]
        out = nv.nvmlDeviceGetFieldValues(h, ids)
        ok = [v.nvmlReturn == 0 for v in out]
        agg = [value(v) if v.nvmlReturn == 0 else None for v in out[:2]]
        per = [sum(value(v) for v in out[2 + 18 * k: 20 + 18 * k] if v.nvmlReturn == 0) for k in (0, 1)]
        print(f"gpu{gpu} fields {tx}/{rx} ({unit}): answered {sum(ok)}/{len(ok)}; summed by driver tx/rx {agg}; "
              f"summed here over links tx/rx {per}")
