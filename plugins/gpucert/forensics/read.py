"""Open any trace gpucert reads: the format is told by the file's first bytes, not its name.

A PyTorch profiler trace is JSON (`{` or `[`), usually gzipped (vLLM writes
`*.pt.trace.json.gz`); an Nsight Systems trace is read from its SQLite export. Names lie
(a `.json` that is gzipped, an export saved as `.nsys`), magic bytes do not.
"""

from __future__ import annotations

from .read_chrome import GZIP_MAGIC, read_chrome
from .read_nsys import NSYS_REPORT_SUFFIXES, SQLITE_MAGIC, nsys_report_problem, read_nsys
from .timeline import Timeline, TraceError

_UTF8_BOM = b"\xef\xbb\xbf"
_SNIFF = 4096  # enough to get past the whitespace a JSON document may start with


def load_trace(path) -> Timeline:
    """The Timeline of a trace file; TraceError (one line) for a missing, unreadable or unknown file."""
    path = str(path)
    start = _first_bytes(path)
    if start.startswith(SQLITE_MAGIC):
        return read_nsys(path)
    if start.startswith(GZIP_MAGIC):
        return read_chrome(path)
    text = start.removeprefix(_UTF8_BOM).lstrip(b" \t\r\n")
    if text[:1] in (b"{", b"["):
        return read_chrome(path)
    raise TraceError(_unknown(path, start))


def _first_bytes(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(_SNIFF)
    except FileNotFoundError:
        raise TraceError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TraceError(f"{path}: a directory, not a trace file (name the trace file in it)") from None
    except OSError as error:
        raise TraceError(f"{path}: cannot read: {error.strerror or error}") from None


def _unknown(path: str, start: bytes) -> str:
    if not start:
        return f"{path}: empty file, not a trace"
    if path.lower().endswith(NSYS_REPORT_SUFFIXES):
        return nsys_report_problem(path)
    return (f"{path}: not a trace gpucert reads (PyTorch profiler JSON, gzipped or not, or an "
            "Nsight Systems SQLite export from `nsys export --type sqlite`)")
