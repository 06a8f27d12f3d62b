"""NVML's fault events (XID critical errors, ECC errors) and the memory-repair counters (row
remapping, retired pages), for the monitor's whole run.

Events: one NVML event set for every GPU, registered for the fault types each GPU supports
(`nvmlDeviceGetSupportedEventTypes` ∩ {XID critical error, single-bit ECC, double-bit ECC}: NVML
refuses a registration that names a single type the GPU lacks — an ECC-off GPU would lose its XIDs
too), and a thread of the sampler process blocked in `nvmlEventSetWait_v2` with a short timeout,
so it ends within `wait_ms` of being told to and costs next to nothing between events (ctypes
releases the GIL for the wait; whether a driver holds other NVML calls behind a waiting one is for
a GPU run to show: the ticks' lateness with and without `--no-nvml-events`). Each event is stamped on receipt with time.monotonic()
— the samples' clock — and time.time(); the driver posts an XID as it handles the fault, so the
stamp is the fault's time to within the driver's delivery (not measured here).

Memory repair: `nvmlDeviceGetRemappedRows` (row remapping: Ampere and later) and
`nvmlDeviceGetRetiredPages` (page retirement: the mechanism before Ampere) read at the monitor's
start and at its end; what a GPU does not support is None, with a note.
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any

# nvml.h nvmlEventType* (stable C ABI)
EVENT_SINGLE_BIT_ECC, EVENT_DOUBLE_BIT_ECC, EVENT_XID = 0x001, 0x002, 0x008
# the event kinds recorded: faults only (no P-state or clock-change events: those are the samples')
EVENT_KINDS = {EVENT_XID: "xid", EVENT_SINGLE_BIT_ECC: "ecc_single_bit", EVENT_DOUBLE_BIT_ECC: "ecc_double_bit"}
FAULT_EVENTS = EVENT_XID | EVENT_SINGLE_BIT_ECC | EVENT_DOUBLE_BIT_ECC
_ERROR_TIMEOUT = 10  # NVML_ERROR_TIMEOUT: the wait's normal "nothing happened"
_NO_INSTANCE = 0xFFFFFFFF  # gpuInstanceId / computeInstanceId of an event outside MIG
_RETIRED_SINGLE_BIT, _RETIRED_DOUBLE_BIT = 0, 1  # nvmlPageRetirementCause_t
WAIT_MS = 200


def _key(handle) -> Any:
    """A device handle as a dict key: pynvml's handles are ctypes pointers, and two pointer objects
    to one device compare unequal — the event's `device` is a new object — so by address."""
    if isinstance(handle, ctypes._Pointer):
        return ctypes.cast(handle, ctypes.c_void_p).value
    return handle


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


class EventListener:
    """XID and ECC events of every GPU that delivers them, from `start()` to `stop()`.

    `listening`: GPU index → the kinds registered (a GPU absent: none, and its event figures are
    None, not 0); `take()` hands over the events received since the last take, each
    {t, wall, gpu, kind, data, gpu_instance, compute_instance} — `data` the XID number for an XID
    (NVML's eventData; 0 for ECC events), the instance ids None outside MIG."""

    def __init__(self, nv, handles: list, wait_ms: int = WAIT_MS):
        self._nv, self._handles, self.wait_ms = nv, handles, wait_ms
        self.listening: dict[int, list[str]] = {}
        self.notes: list[str] = []
        self.errors = 0
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._set = None
        self._index: dict[Any, int] = {}
        self._stopped = False

    def start(self) -> None:
        nv = self._nv
        try:
            self._set = nv.nvmlEventSetCreate()
        except (nv.NVMLError, AttributeError) as exc:  # an old binding, or a platform without events
            self.notes.append(f"no NVML events (nvmlEventSetCreate: {_reason(exc)}): XID and ECC events not recorded")
            return
        refused, partial = [], []
        for i, handle in enumerate(self._handles):
            try:
                supported = nv.nvmlDeviceGetSupportedEventTypes(handle)
            except (nv.NVMLError, AttributeError):
                supported = FAULT_EVENTS  # unknown: ask for all of them, the registration says
            mask = FAULT_EVENTS & supported
            if not mask:
                refused.append(f"GPU {i} (it supports none of them)")
                continue
            try:
                nv.nvmlDeviceRegisterEvents(handle, mask, self._set)
            except nv.NVMLError as exc:
                refused.append(f"GPU {i} ({_reason(exc)})")
                continue
            self.listening[i] = [kind for bit, kind in EVENT_KINDS.items() if mask & bit]
            self._index[_key(handle)] = i
            if mask != FAULT_EVENTS:
                partial.append(f"GPU {i} not {', '.join(k for b, k in EVENT_KINDS.items() if not mask & b)}")
        if refused:
            self.notes.append("NVML events not registered on " + ", ".join(refused)
                              + ": XID and ECC events there not recorded (their figures are None)")
        if partial:  # ECC off, or a GPU that no longer reports single-bit errors as events
            self.notes.append("NVML events not delivered: " + "; ".join(partial) + " (those counts are None)")
        if not self.listening:
            self._free()
            return
        self._thread = threading.Thread(target=self._wait, name="nvml-events", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        nv = self._nv
        wait = getattr(nv, "nvmlEventSetWait_v2", None) or nv.nvmlEventSetWait
        while not self._stop.is_set():
            try:
                data = wait(self._set, self.wait_ms)
            except nv.NVMLError as exc:
                if getattr(exc, "value", None) == _ERROR_TIMEOUT:
                    continue
                # e.g. GPU is lost: said once; waited out, not spun on (NVML may answer at once)
                self.errors += 1
                if self.errors == 1:
                    self.notes.append(f"NVML event wait failed: {_reason(exc)} (events after it may be missing)")
                self._stop.wait(self.wait_ms / 1e3)
                continue
            t, wall = time.monotonic(), time.time()
            self._record(data, t, wall)

    def _record(self, data, t: float, wall: float) -> None:
        kind_bits = int(getattr(data, "eventType", 0))
        gpu = self._index.get(_key(getattr(data, "device", None)))
        if gpu is None:  # not one of our handles' addresses (should not happen): ask NVML
            try:
                gpu = int(self._nv.nvmlDeviceGetIndex(data.device))
            except Exception:
                gpu = None
        instance = getattr(data, "gpuInstanceId", _NO_INSTANCE)
        compute = getattr(data, "computeInstanceId", _NO_INSTANCE)
        event = {"t": t, "wall": wall, "gpu": gpu, "kind": EVENT_KINDS.get(kind_bits, f"0x{kind_bits:x}"),
                 "data": int(getattr(data, "eventData", 0)),
                 "gpu_instance": None if instance == _NO_INSTANCE else int(instance),
                 "compute_instance": None if compute == _NO_INSTANCE else int(compute)}
        if gpu is None:
            self.notes.append(f"an NVML {event['kind']} event (data {event['data']}) from a device not listed")
        with self._lock:
            self._events.append(event)

    def take(self) -> list[dict]:
        with self._lock:
            events, self._events = self._events, []
        return events

    def stop(self) -> None:
        """Ends the thread (within one wait) and frees the set. A thread still inside NVML after
        that (a hung driver) keeps its set: freeing it under a waiter is undefined."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5 * self.wait_ms / 1e3 + 1.0)
            if self._thread.is_alive():
                self.notes.append("the NVML event thread did not end within its wait: event set left allocated")
                return
        self._free()

    def _free(self) -> None:
        if self._set is not None:
            try:
                self._nv.nvmlEventSetFree(self._set)
            except Exception:
                pass
            self._set = None


def read_repairs(nv, handles: list) -> tuple[dict[str, dict], list[str]]:
    """Each GPU's memory-repair counters now: ({"<index>": {"remapped_rows": {corrected,
    uncorrected, pending, failure} | None, "retired_pages": {single_bit, double_bit} | None}},
    notes). `corrected` / `uncorrected`: rows remapped for correctable / uncorrectable errors since
    manufacture; `pending`: a remap waits for a GPU reset; `failure`: a remap failed (no spare
    row); `single_bit` / `double_bit`: pages retired for those causes. A count NVML does not give
    (NotSupported on a GPU without that mechanism, an old binding) is None, and named in a note."""
    out: dict[str, dict] = {}
    missing: dict[str, list[str]] = {}
    for i, handle in enumerate(handles):
        remapped = retired = None
        try:
            corr, unc, pending, failure = nv.nvmlDeviceGetRemappedRows(handle)
            remapped = {"corrected": int(corr), "uncorrected": int(unc), "pending": bool(pending),
                        "failure": bool(failure)}
        except (nv.NVMLError, AttributeError) as exc:
            missing.setdefault("row remapping", []).append(f"GPU {i} ({_reason(exc)})")
        pages: dict[str, int | None] = {}
        failed: Exception | None = None
        for name, cause in (("single_bit", _RETIRED_SINGLE_BIT), ("double_bit", _RETIRED_DOUBLE_BIT)):
            try:
                pages[name] = len(nv.nvmlDeviceGetRetiredPages(handle, cause))
            except (nv.NVMLError, AttributeError) as exc:
                pages[name], failed = None, exc
        if failed is not None:  # one note a GPU, whichever cause failed
            missing.setdefault("retired pages", []).append(f"GPU {i} ({_reason(failed)})")
        if any(v is not None for v in pages.values()):
            retired = pages
        out[str(i)] = {"remapped_rows": remapped, "retired_pages": retired}
    keys = {"row remapping": "row_remap_new", "retired pages": "retired_pages_new"}
    notes = [f"{what} not readable on {', '.join(where)}: {keys[what]} unknown there" for what, where in missing.items()]
    return out, notes
