"""The monitor's samples on disk: a columnar, chunked, compressed file (a zip).

`meta.json` plus one member per chunk (`c00012.npz`, deflated): that chunk's columns as two
matrices, `values32` (gauges) and `values64` (timestamps, counters), one column each per name in
`names32` / `names64` — four arrays a chunk, so an hour reads back in a fraction of a second. Each flush appends a chunk and closes the file, so the file is whole after every
flush: a monitor killed mid-run keeps every chunk flushed before. One member per chunk, not per
column: appending to a zip reads its whole directory, and 130 columns × 720 chunks an hour made
that quadratic (220 ms per 5 s chunk by the end of the hour; now ~1-2 ms). Gauges are float32, timestamps and cumulative counters float64: one
hour of 100 ms samples of 8 GPUs is ~36,000 rows × ~125 columns. `numpy.load` reads a member; `load` joins the chunks.

NVML's fault events (XID, ECC: rare, irregular, not one a tick) are no columns: each flush that
has any adds them as `events-00003.json`, a JSON list of {t, wall, gpu, kind, data, gpu_instance,
compute_instance} (events.py); the memory-repair counters read when the monitor stops are
`repairs_end.json` (those at its start are in meta.json, `repairs_start`). A file without these
members (written before they existed, or by a monitor without NVML) reads as before, with no
events and no end reading — `Reader.events` [] and `Reader.repairs_end` None; the summary tells
"none" from "not listened" by meta.json's `nvml_events`.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .sources import COUNTER_FIELDS

# columns that keep float64: monotonic timestamps need µs resolution over days of uptime, and
# cumulative counters are large (energy since driver load, PCIe bytes): float32's 24-bit mantissa
# would lose a 10 s window's difference in them
TIME_COLUMNS = ("t", "scheduled")
WIDE_FIELDS = COUNTER_FIELDS + ("preemptions",)


EVENTS_PREFIX = "events-"
REPAIRS_END = "repairs_end.json"


def is_wide(name: str) -> bool:
    return name in TIME_COLUMNS or name.rsplit(".", 1)[-1] in WIDE_FIELDS


class ColumnStore:
    def __init__(self, path: str | Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.chunks = self.event_chunks = 0
        with zipfile.ZipFile(self.path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("meta.json", json.dumps(meta, indent=1))

    def append(self, columns: dict[str, Any]) -> None:
        """Columns of equal length (lists or arrays) as the next chunk."""
        first = next(iter(columns.values()), None)
        if first is None or len(first) == 0:
            return
        wide = [name for name in columns if is_wide(name)]
        narrow = [name for name in columns if not is_wide(name)]
        buffer = io.BytesIO()
        np.savez(buffer, names64=np.array(wide, dtype=str), names32=np.array(narrow, dtype=str),
                 values64=np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in wide]) if wide
                 else np.empty((0, 0)),
                 values32=np.column_stack([np.asarray(columns[n], dtype=np.float32) for n in narrow]) if narrow
                 else np.empty((0, 0), dtype=np.float32))
        with zipfile.ZipFile(self.path, "a", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"c{self.chunks:05d}.npz", buffer.getvalue())
        self.chunks += 1

    def append_events(self, events: list[dict]) -> None:
        """Events as the next events member (none: nothing written — most flushes have none)."""
        if not events:
            return
        self.put_json(f"{EVENTS_PREFIX}{self.event_chunks:05d}.json", events)
        self.event_chunks += 1

    def put_json(self, member: str, value: Any) -> None:
        with zipfile.ZipFile(self.path, "a", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(member, json.dumps(value))


class Reader:
    """Reads a growing file: each `read()` decodes only the chunks added since the last one (the
    plugin reads the session file at the end of every check)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta: dict[str, Any] | None = None
        self._chunks: dict[str, dict[str, np.ndarray]] = {}
        self._events: dict[str, list[dict]] = {}
        self.repairs_end: dict[str, dict] | None = None  # read by `read()`; None until the monitor stopped

    def read(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(meta, columns); the events and the end's repair counters found on the way are kept in
        `events` and `repairs_end`."""
        with zipfile.ZipFile(self.path) as zf:
            if self.meta is None:
                self.meta = json.loads(zf.read("meta.json"))
            for name in zf.namelist():
                if name.endswith(".npz") and name not in self._chunks:
                    self._chunks[name] = _read_chunk(zf.read(name))
                elif name.startswith(EVENTS_PREFIX) and name.endswith(".json") and name not in self._events:
                    self._events[name] = json.loads(zf.read(name))
                elif name == REPAIRS_END and self.repairs_end is None:
                    self.repairs_end = json.loads(zf.read(name))
        return self.meta, _join(self._chunks)

    @property
    def events(self) -> list[dict]:
        """Every event read so far, in time order."""
        return sorted((e for key in sorted(self._events) for e in self._events[key]), key=lambda e: e["t"])


def load(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, columns): every chunk joined; a column missing from a chunk (a source that came or
    went) is NaN there."""
    return Reader(path).read()


def _join(chunks: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    names = sorted({c for chunk in chunks.values() for c in chunk})
    columns: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for key in sorted(chunks):
        chunk = chunks[key]
        rows = len(chunk.get("t", next(iter(chunk.values()))))
        for name in names:
            columns[name].append(chunk.get(name, np.full(rows, np.nan, dtype=np.float32)))
    return {name: np.concatenate(parts) if parts else np.array([]) for name, parts in columns.items()}


def _read_chunk(data: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(data), allow_pickle=False) as chunk:
        out = {}
        for names, values in (("names64", "values64"), ("names32", "values32")):
            matrix = chunk[values]
            out.update({str(name): matrix[:, i] for i, name in enumerate(chunk[names])})
        return out


def load_events(path: str | Path) -> list[dict]:
    """The file's events in time order ([] in a file without any)."""
    reader = Reader(path)
    reader.read()
    return reader.events


def save_slice(path: str | Path, meta: dict[str, Any], columns: dict[str, np.ndarray],
               events: list[dict] | None = None) -> Path:
    """One check's slice as its own file (the same format, one chunk, and its events)."""
    store = ColumnStore(path, meta)
    store.append(columns)
    store.append_events(events or [])
    return store.path
