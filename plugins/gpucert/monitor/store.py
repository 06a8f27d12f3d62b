"""The monitor's samples on disk: a columnar, chunked, compressed file (a zip).

`meta.json` plus one member per chunk (`c00012.npz`, deflated): that chunk's columns as two
matrices, `values32` (gauges) and `values64` (timestamps, counters), one column each per name in
`names32` / `names64` — four arrays a chunk, so an hour reads back in a fraction of a second. Each flush appends a chunk and closes the file, so the file is whole after every
flush: a monitor killed mid-run keeps every chunk flushed before. One member per chunk, not per
column: appending to a zip reads its whole directory, and 130 columns × 720 chunks an hour made
that quadratic (220 ms per 5 s chunk by the end of the hour; now ~1-2 ms). Gauges are float32, timestamps and cumulative counters float64: one
hour of 100 ms samples of 8 GPUs is ~36,000 rows × ~125 columns. `numpy.load` reads a member; `load` joins the chunks.
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


def is_wide(name: str) -> bool:
    return name in TIME_COLUMNS or name.rsplit(".", 1)[-1] in WIDE_FIELDS


class ColumnStore:
    def __init__(self, path: str | Path, meta: dict[str, Any]):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.chunks = 0
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


class Reader:
    """Reads a growing file: each `read()` decodes only the chunks added since the last one (the
    plugin reads the session file at the end of every check)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.meta: dict[str, Any] | None = None
        self._chunks: dict[str, dict[str, np.ndarray]] = {}

    def read(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        with zipfile.ZipFile(self.path) as zf:
            if self.meta is None:
                self.meta = json.loads(zf.read("meta.json"))
            for name in zf.namelist():
                if name.endswith(".npz") and name not in self._chunks:
                    self._chunks[name] = _read_chunk(zf.read(name))
        return self.meta, _join(self._chunks)


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


def save_slice(path: str | Path, meta: dict[str, Any], columns: dict[str, np.ndarray]) -> Path:
    """One check's slice as its own file (the same format, one chunk)."""
    store = ColumnStore(path, meta)
    store.append(columns)
    return store.path
