"""What the monitor reads: NVML per GPU, the host, and a vLLM server's /metrics.

Each source has `columns` (names fixed once opened), `read(row)` — the gauges, every tick — and
`read_counters(row)` — cumulative counters and rates since the last such read (energy, PCIe/NVLink
bytes, ECC, host CPU), on the sampler's slower counter ticks; a column not read on a tick is NaN.
A source that cannot open says why once (`note`) and the monitor samples the rest. Column names:
`gpu<i>.<field>`, `host.<field>`, `vllm.<field>`.
"""

from __future__ import annotations

import importlib
import math
import os
import http.client
import threading
import time
import urllib.parse

from .events import EventListener, read_repairs

NAN = math.nan

# nvml.h values (stable C ABI; the same the snapshot reader uses)
_CLOCK_SM, _CLOCK_MEM = 1, 2
_TEMPERATURE_GPU = 0
_ECC_CORRECTED, _ECC_UNCORRECTED, _ECC_VOLATILE = 0, 1, 0
_FI_NVLINK_TX_KIB, _FI_NVLINK_RX_KIB = 138, 139  # cumulative: the older counters
_FI_NVLINK_TX_BYTES, _FI_NVLINK_RX_BYTES = 202, 204  # cumulative: the NVLink counters of newer drivers
_FI_PCIE_TX_BYTES, _FI_PCIE_RX_BYTES = 197, 198  # cumulative (drivers >= 535)
_NVLINK_LINKS = 18
_ALL_LINKS = 0xFFFFFFFF  # scopeId UINT_MAX: the driver's own sum over the links, in one value
# NVLink counter forms, cheapest first: (name, TX field, RX field, scopeIds, KiB per unit). Measured
# on H100 / driver 580 (session4/nvml_cost.txt in docs/evidence/issue-5-monitor/sessions.tar.xz): the
# KiB counters asked per link cost 21-30 ms of CPU per GPU, asked summed by the driver 0.8-1.3 ms
NVLINK_FORMS = (("bytes_total", _FI_NVLINK_TX_BYTES, _FI_NVLINK_RX_BYTES, (_ALL_LINKS,), 1 / 1024),
                ("kib_total", _FI_NVLINK_TX_KIB, _FI_NVLINK_RX_KIB, (_ALL_LINKS,), 1.0),
                ("bytes_links", _FI_NVLINK_TX_BYTES, _FI_NVLINK_RX_BYTES, tuple(range(_NVLINK_LINKS)), 1 / 1024),
                ("kib_links", _FI_NVLINK_TX_KIB, _FI_NVLINK_RX_KIB, tuple(range(_NVLINK_LINKS)), 1.0))

# read on counter ticks only (read_counters); NaN on the ticks between
COUNTER_FIELDS = ("energy_j", "pcie_tx_bytes", "pcie_rx_bytes", "nvlink_tx_kib", "nvlink_rx_kib",
                  "ecc_corrected", "ecc_uncorrected")
GPU_FIELDS = ("util_gpu_pct", "util_mem_pct", "mem_used_mib", "power_w", "energy_j", "sm_clock_mhz",
              "mem_clock_mhz", "temp_c", "clock_events", "pcie_tx_bytes", "pcie_rx_bytes",
              "nvlink_tx_kib", "nvlink_rx_kib", "ecc_corrected", "ecc_uncorrected")


class NvmlSource:
    """Per-GPU fields through NVML. `module` names the binding (`pynvml`); the self-tests name a
    fake one — the only seam, since NVML cannot exist without a GPU. Besides the columns: the fault
    events (XID, ECC) on a listener thread of their own (`events`: listen or not), taken at each
    flush, and the memory-repair counters (row remapping, retired pages) at open and on
    `read_repairs()` (events.py)."""

    name = "nvml"

    def __init__(self, module: str = "pynvml", events: bool = True):
        self.module_name = module
        self.columns: list[str] = []
        self.note: str | None = None
        self.gpus: list[dict] = []
        self.events = events
        self.listener: EventListener | None = None
        self.repairs_start: dict[str, dict] | None = None
        self._notes: list[str] = []  # what the source reads only in part (the fields: NaN, unnoted)
        self._nv = None
        self._handles: list = []
        self._unsupported: set[tuple[int, str]] = set()
        # per GPU, which NVLink counter form it answers (NVLINK_FORMS, or none), fixed at the first
        # answer so a counter's differences never mix two forms
        self._nvlink_form: dict[int, str] = {}

    def open(self) -> bool:
        try:
            nv = importlib.import_module(self.module_name)
            nv.nvmlInit()
        except Exception as exc:  # no library, no driver, no GPU: say so once, sample the rest
            self.note = f"no NVML ({type(exc).__name__}: {exc}); GPU fields not sampled"
            return False
        self._nv = nv
        count = nv.nvmlDeviceGetCount()
        self._handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        for i, handle in enumerate(self._handles):
            name = self._call(i, "name", "nvmlDeviceGetName", handle)
            self.gpus.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name})
        self.columns = [f"gpu{i}.{field}" for i in range(count) for field in GPU_FIELDS]
        self.repairs_start = self.read_repairs()
        if self.events:
            self.listener = EventListener(nv, self._handles)
            self.listener.start()
        return True

    @property
    def notes(self) -> list[str]:
        """What the events and the repair counters could not give (the listener's notes, live)."""
        return self._notes + (self.listener.notes if self.listener is not None else [])

    @property
    def listening(self) -> dict[str, list[str]]:
        """GPU index (as text, as in the file's JSON) → the event kinds registered there."""
        return {str(i): kinds for i, kinds in (self.listener.listening.items() if self.listener else ())}

    def read_repairs(self) -> dict[str, dict] | None:
        """The memory-repair counters now (events.read_repairs); None without NVML."""
        if self._nv is None:
            return None
        repairs, notes = read_repairs(self._nv, self._handles)
        self._notes += [note for note in notes if note not in self._notes]
        return repairs

    def take_events(self) -> list[dict]:
        return self.listener.take() if self.listener is not None else []

    def stop_events(self) -> None:
        if self.listener is not None:
            self.listener.stop()

    def close(self) -> None:
        self.stop_events()  # never nvmlShutdown under a thread waiting in NVML
        if self._nv is not None:
            try:
                self._nv.nvmlShutdown()
            except Exception:
                pass

    def _call(self, gpu: int, field: str, fn, *args):
        """One guarded NVML call: a field the GPU or driver lacks is asked once, then left NaN.
        `fn` is a name: an older binding without that function is "not supported" too."""
        if (gpu, field) in self._unsupported:
            return None
        try:
            return getattr(self._nv, fn)(*args)
        except (self._nv.NVMLError, AttributeError):
            self._unsupported.add((gpu, field))
            return None

    def read(self, row: dict) -> None:
        """The gauges (~0.005 ms a call on H100)."""
        for i, h in enumerate(self._handles):
            p = f"gpu{i}."
            util = self._call(i, "util", "nvmlDeviceGetUtilizationRates", h)
            row[p + "util_gpu_pct"] = util.gpu if util is not None else NAN
            row[p + "util_mem_pct"] = util.memory if util is not None else NAN
            mem = self._call(i, "mem", "nvmlDeviceGetMemoryInfo", h)
            row[p + "mem_used_mib"] = mem.used / 2**20 if mem is not None else NAN
            power = self._call(i, "power", "nvmlDeviceGetPowerUsage", h)  # mW
            row[p + "power_w"] = power / 1e3 if power is not None else NAN
            sm = self._call(i, "sm_clock", "nvmlDeviceGetClockInfo", h, _CLOCK_SM)
            row[p + "sm_clock_mhz"] = sm if sm is not None else NAN
            memclk = self._call(i, "mem_clock", "nvmlDeviceGetClockInfo", h, _CLOCK_MEM)
            row[p + "mem_clock_mhz"] = memclk if memclk is not None else NAN
            temp = self._call(i, "temp", "nvmlDeviceGetTemperature", h, _TEMPERATURE_GPU)
            row[p + "temp_c"] = temp if temp is not None else NAN
            events = self._call(i, "clock_events", "nvmlDeviceGetCurrentClocksEventReasons", h)
            if events is None:  # the name before nvidia-ml-py 12.535 (same bits)
                events = self._call(i, "throttle", "nvmlDeviceGetCurrentClocksThrottleReasons", h)
            row[p + "clock_events"] = events if events is not None else NAN

    def read_counters(self, row: dict) -> None:
        """The cumulative counters: most of NVML's cost on H100 (the energy read alone 2.5-3 ms of
        CPU a GPU, NVLink 1.3 ms), and a difference loses nothing by being taken less often."""
        for i, h in enumerate(self._handles):
            self._counters(i, h, row, f"gpu{i}.")

    def _counters(self, i: int, handle, row: dict, p: str) -> None:
        """The cumulative counters (rates and energies come from their differences). PCIe bytes and
        NVLink traffic in one field-values call (nvmlDeviceGetPcieThroughput blocks ~20 ms). NVLink:
        the first call asks every form in NVLINK_FORMS and keeps the cheapest one answered; stored
        in KiB."""
        energy = self._call(i, "energy", "nvmlDeviceGetTotalEnergyConsumption", handle)  # mJ since load
        row[p + "energy_j"] = energy / 1e3 if energy is not None else NAN
        for field, error_type in (("ecc_corrected", _ECC_CORRECTED), ("ecc_uncorrected", _ECC_UNCORRECTED)):
            count = self._call(i, field, "nvmlDeviceGetTotalEccErrors", handle, error_type, _ECC_VOLATILE)
            row[p + field] = count if count is not None else NAN
        locked = self._nvlink_form.get(i)
        forms = NVLINK_FORMS if locked is None else [f for f in NVLINK_FORMS if f[0] == locked]
        requests = [(_FI_PCIE_TX_BYTES, 0), (_FI_PCIE_RX_BYTES, 0)]
        requests += [(field, scope) for form in forms for field in form[1:3] for scope in form[3]]
        values = self._call(i, "fields", "nvmlDeviceGetFieldValues", handle, requests)
        answered: dict[tuple[int, int], float] = {}
        for request, value in zip(requests, values or ()):
            if getattr(value, "nvmlReturn", 1) == 0:
                answered[request] = _field_number(value)
        row[p + "pcie_tx_bytes"] = answered.get((_FI_PCIE_TX_BYTES, 0), NAN)
        row[p + "pcie_rx_bytes"] = answered.get((_FI_PCIE_RX_BYTES, 0), NAN)
        form = next((f for f in forms if any((field, scope) in answered for field in f[1:3] for scope in f[3])), None)
        if values is not None and locked is None:  # a GPU without NVLink is asked for PCIe alone after this
            self._nvlink_form[i] = form[0] if form else "none"
        for key, field in (("nvlink_tx_kib", 1), ("nvlink_rx_kib", 2)):
            if form is None:
                row[p + key] = NAN
                continue
            links = [answered[(form[field], scope)] for scope in form[3] if (form[field], scope) in answered]
            row[p + key] = sum(links) * form[4] if links else NAN


def _field_number(value) -> float:
    """nvmlFieldValue_t's union, by its valueType (0 double, 1 uint, 2 ulong, 3 ulonglong, 4 slonglong)."""
    kind = getattr(value, "valueType", 3)
    member = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal"}.get(kind, "ullVal")
    return float(getattr(value.value, member))


class HostSource:
    """Host CPU busy % (all cores, since the last read), RAM used, and the sampler's own CPU % of
    one core, on counter ticks. Linux /proc; elsewhere the load average and what `os` gives."""

    name = "host"
    columns = ["host.cpu_busy_pct", "host.mem_used_gib", "host.sampler_cpu_pct"]

    def __init__(self):
        self.note: str | None = None
        self._last_cpu: tuple[float, float] | None = None
        self._last_self: tuple[float, float] | None = None

    def open(self) -> bool:
        if not os.path.exists("/proc/stat"):
            self.note = "no /proc: host CPU busy and RAM not sampled"
        return True

    def close(self) -> None:
        pass

    def read(self, row: dict) -> None:
        pass  # all rates since the last read: read with the counters (reading /proc costs ~0.3 ms)

    def read_counters(self, row: dict) -> None:
        row["host.cpu_busy_pct"] = self._cpu_busy()
        row["host.mem_used_gib"] = _mem_used_gib()
        now, used = time.monotonic(), time.process_time()
        last, self._last_self = self._last_self, (now, used)
        row["host.sampler_cpu_pct"] = (100.0 * (used - last[1]) / (now - last[0])
                                       if last and now > last[0] else NAN)

    def _cpu_busy(self) -> float:
        try:
            with open("/proc/stat") as fh:
                fields = [float(v) for v in fh.readline().split()[1:]]
        except OSError:
            return NAN
        idle, total = fields[3] + (fields[4] if len(fields) > 4 else 0.0), sum(fields)
        last, self._last_cpu = self._last_cpu, (idle, total)
        if last is None or total <= last[1]:
            return NAN
        return 100.0 * (1.0 - (idle - last[0]) / (total - last[1]))


def _mem_used_gib() -> float:
    """MemTotal − MemAvailable (the first lines of /proc/meminfo: read those, not all 50)."""
    try:
        with open("/proc/meminfo", "rb") as fh:
            head = fh.read(256).split(b"\n")
        info = {line.split(b":")[0]: float(line.split()[1]) for line in head[:3] if b":" in line}
        return (info[b"MemTotal"] - info[b"MemAvailable"]) / 2**20  # kB → GiB
    except (OSError, KeyError, ValueError, IndexError):
        return NAN


# vLLM's Prometheus names (0.26; older releases called KV usage gpu_cache_usage_perc)
VLLM_GAUGES = {
    "running": ("vllm:num_requests_running",),
    "waiting": ("vllm:num_requests_waiting",),
    "kv_cache_usage_pct": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    "preemptions": ("vllm:num_preemptions",),  # a counter: samples end in _total
}
# histograms of which the sum and count are read (columns vllm.KEY_sum_s, vllm.KEY_count, both
# cumulative): vLLM's inter-token latency is stamped by the engine core as each step's outputs are
# made (its V1 engine's engine_core_timestamp, as in 0.26), so sum ÷ count over a stretch is the engine's mean
# step as a decoding request saw it, however late the API server delivered the tokens
# (gpucert.forensics.level.engine_itl); the older name is read only where the newer one is absent
VLLM_HISTOGRAMS = {
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
}


# line prefixes of the families above (samples, and their # TYPE / # HELP lines; a counter's
# samples end in _total, a histogram's read ones in _sum and _count): vLLM's exposition is ~1,000
# lines of histograms, and parsing all of it ten times a second cost ~15 ms a time (15 % of a
# core) — a C-speed prefix filter keeps ~15 lines
_NAMES = [n for names in VLLM_GAUGES.values() for name in names for n in (name, name + "_total")] + \
    [n for names in VLLM_HISTOGRAMS.values() for name in names for n in (name, name + "_sum", name + "_count")]

# a gauge's or counter's name → its key; a histogram's samples by their own names (a family parsed
# without its TYPE line is named after the sample): name_sum → (column KEY_sum_s, name), name_count
# → (KEY_count, name). Built once: the monitor parses ten times a second
_GAUGE_KEYS = {name: key for key, names in VLLM_GAUGES.items() for name in names}
_HISTOGRAM_PARTS = {name + suffix: (f"{key}{column}", name) for key, names in VLLM_HISTOGRAMS.items() for name in names
                    for suffix, column in (("_sum", "_sum_s"), ("_count", "_count"))}


def family_prefixes(names) -> tuple[str, ...]:
    """The line prefixes of the families `names`: their samples and their # TYPE / # HELP lines."""
    names = list(names)
    return tuple(p + " " for p in names) + tuple(p + "{" for p in names) + \
        tuple(f"# {kind} {n} " for kind in ("TYPE", "HELP") for n in names)


_PREFIXES = family_prefixes(_NAMES)


def metric_families(text: str, prefixes: tuple[str, ...]) -> list:
    """The families whose lines start with `prefixes` (family_prefixes), parsed by prometheus_client
    as Prometheus does (labels, escapes, counters' _total/_created samples); the rest of the
    exposition is skipped unparsed. A malformed line of those families raises ValueError."""
    from prometheus_client.parser import text_string_to_metric_families

    text = "\n".join(line for line in text.splitlines() if line.startswith(prefixes)) + "\n"
    return list(text_string_to_metric_families(text))


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """The gauges and the histograms' sums and counts above from a Prometheus exposition, summed
    over label sets (engines, models); KV usage as % (vLLM reports a fraction, 1 = full)."""
    out: dict[str, float] = {}
    histograms: dict[str, dict[str, float]] = {}  # column → {histogram name: total}
    for family in metric_families(text, _PREFIXES):
        # a counter's family is named without _total (a TYPE line that names it with one leaves it on)
        key = _GAUGE_KEYS.get(family.name) or _GAUGE_KEYS.get(family.name.removesuffix("_total"))
        if key is None:
            for sample in family.samples:
                if sample.name in _HISTOGRAM_PARTS:
                    column, name = _HISTOGRAM_PARTS[sample.name]
                    seen = histograms.setdefault(column, {})
                    seen[name] = seen.get(name, 0.0) + float(sample.value)
            continue
        total = sum(float(s.value) for s in family.samples if s.name in (family.name, family.name + "_total"))
        out.setdefault(key, total)  # one name per key: an old and a new name are never added up
    for key, names in VLLM_HISTOGRAMS.items():
        for column in (f"{key}_sum_s", f"{key}_count"):
            name = next((n for n in names if n in histograms.get(column, {})), None)  # the newest name present
            if name is not None:
                out[column] = histograms[column][name]
    if "kv_cache_usage_pct" in out:
        out["kv_cache_usage_pct"] *= 100.0
    return out


class VllmMetricsSource:
    """A vLLM server's /metrics, polled on a thread of its own: under load the API server answers
    late, and the NVML cadence must not wait for it. Each tick takes the latest answer and its
    age (`vllm.age_ms`); none yet, or the server gone → NaN."""

    name = "vllm"
    columns = [f"vllm.{key}" for key in VLLM_GAUGES] + \
        [f"vllm.{key}{part}" for key in VLLM_HISTOGRAMS for part in ("_sum_s", "_count")] + ["vllm.age_ms"]

    def __init__(self, url: str, interval_s: float, timeout_s: float = 2.0):
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.note: str | None = None
        self._latest: tuple[float, dict[str, float]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="vllm-metrics", daemon=True)
        self.errors = 0
        self.filtered: bool | None = None  # whether the server filtered to our families

    def open(self) -> bool:
        self._thread.start()
        return True

    def close(self) -> None:
        self._stop.set()

    def _poll(self) -> None:
        """One kept-alive HTTP connection (a new one per poll cost about as much CPU as the rest of
        the sampler), reopened after any error. The server is first asked for our few families only
        (`/metrics/?name[]=…`: vLLM mounts prometheus_client's app there, which filters; its plain
        /metrics route does not): ~1,000 lines of histograms fewer to build ten times a second on
        the API server under test, and to read here. A server that does not answer that with our
        names is asked plainly from then on."""
        parts = urllib.parse.urlsplit(self.url)
        plain = (parts.path or "/metrics") + (f"?{parts.query}" if parts.query else "")
        filtered = (parts.path or "/metrics").rstrip("/") + "/?" + urllib.parse.urlencode(
            [(k, v) for k, v in urllib.parse.parse_qsl(parts.query)] + [("name[]", name) for name in _NAMES])
        path = filtered
        conn = None
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout_s)
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                values = parse_vllm_metrics(body.decode("utf-8", "replace")) if response.status == 200 else {}
                if path == filtered and not values:  # no filtering here (404, a redirect, other text)
                    path = plain
                    continue
                if response.status == 404:  # a server without /metrics (not vLLM): stop asking it
                    self.note = f"{self.url}: no /metrics here (HTTP 404); engine queue not sampled"
                    conn.close()
                    return
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
                self.filtered = path == filtered
                self._latest = (time.monotonic(), values)
            except Exception as exc:  # refused while starting, gone when stopped, slow under load
                self.errors += 1
                self.note = self.note or f"{self.url}: {type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))
        if conn is not None:
            conn.close()

    def read(self, row: dict) -> None:
        latest = self._latest
        for column in self.columns:
            row[column] = NAN
        if latest is None:
            return
        at, values = latest
        for key, value in values.items():
            row[f"vllm.{key}"] = value
        row["vllm.age_ms"] = (time.monotonic() - at) * 1e3
