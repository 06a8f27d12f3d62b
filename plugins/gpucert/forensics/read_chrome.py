"""Read a PyTorch profiler (Kineto) trace — Chrome trace JSON, gzipped or not — into a Timeline.

vLLM's `--profiler-config` writes one `*.pt.trace.json.gz` per rank; a few hundred decode steps
of a large model make a gigabyte of JSON once unzipped. So the file is parsed as a stream
(ijson on yajl's C parser) and each event goes into the builder's typed columns as it arrives:
memory stays at the columns' size, never at the size of the JSON's Python objects.

What is kept (Kineto's categories):
- `kernel`, `gpu_memcpy`, `gpu_memset` complete events: the device ops. Kineto puts the device in
  `pid` and the stream in `tid`, and repeats both (with the correlation id) in `args`; `args` wins.
- `cuda_runtime`, `cuda_driver`: the host API calls, with the correlation id that ties a launch to
  its device ops.
- `user_annotation`: `record_function` ranges (vLLM's `execute_context_…_generation_…` steps).
Everything else (cpu_op, python_function, gpu_user_annotation, ac2g flow arrows, metadata,
instant events) is counted in `skipped` by category and dropped.

Kineto states the Unix time of its time 0 in the top-level key `baseTimeNanoseconds`. Where that
key sits depends on the version (torch 2.13 writes it before `traceEvents`, older Kineto after,
at the very end of a gigabyte), and ijson's `items` looks at `traceEvents` only. So the file
object handed to ijson keeps the first and the last 64 KiB it returned, and the key is looked up
there once the document is parsed: one pass, one decompression.
"""

from __future__ import annotations

import gzip
import re
import zlib

import ijson

from .timeline import KERNEL, MEMCPY, MEMSET, NO_CORRELATION, Timeline, TimelineBuilder, TraceError

GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"
_JSON_WHITESPACE = b" \t\r\n"

# ijson asks for this much at a time; the head and tail kept for the top-level keys are as large
_CHUNK = 64 * 1024
# read from disk in bigger blocks than ijson asks for: fewer system calls on a gigabyte
_DISK_BUFFER = 1024 * 1024

_DEVICE_KINDS = {"kernel": KERNEL, "gpu_memcpy": MEMCPY, "gpu_memset": MEMSET}
_HOST_CALL_CATEGORIES = frozenset(("cuda_runtime", "cuda_driver"))
_RANGE_CATEGORY = "user_annotation"

_BASE_TIME = re.compile(rb'"baseTimeNanoseconds"\s*:\s*(\d+)')
_TRACE_EVENTS_KEY = b'"traceEvents"'
# "stream 7", "thread 12 (python)": old Kineto writes ids as labels; the number is the id
_TRAILING_NUMBER = re.compile(r"(-?\d+)\D*$")


class _RecordingReader:
    """The file object ijson reads: passes the bytes through and keeps the first and the last
    `_CHUNK` bytes (the top-level keys around `traceEvents`), how much was read, and whether a
    `"traceEvents"` key went by (a JSON object without one is not a Chrome trace)."""

    def __init__(self, stream, first: bytes):
        self._stream = stream
        self._pending = first  # what load peeked at: handed out first
        self.head = first[:_CHUNK]
        self._previous = b""
        self._last = first
        self.bytes_read = len(first)
        self.saw_trace_events = _TRACE_EVENTS_KEY in first
        self._seam = first[-len(_TRACE_EVENTS_KEY):]

    def read(self, size: int = -1) -> bytes:
        if size == 0:  # ijson asks once, to learn whether the file gives bytes or text
            return b""
        if self._pending:
            data, self._pending = self._pending, b""
            return data
        data = self._stream.read(size if size and size > 0 else _CHUNK)
        if data:
            self._previous, self._last = self._last, data
            self.bytes_read += len(data)
            if len(self.head) < _CHUNK:
                self.head += data[:_CHUNK - len(self.head)]
            if not self.saw_trace_events:
                # the key may straddle two reads
                self.saw_trace_events = _TRACE_EVENTS_KEY in self._seam + data
                self._seam = data[-len(_TRACE_EVENTS_KEY):]
        return data

    def tail(self) -> bytes:
        return (self._previous + self._last)[-_CHUNK:]


def read_chrome(path) -> Timeline:
    """The Timeline of a Kineto / Chrome trace JSON file (`.json`, `.json.gz`, or the plain
    Chrome array format). Raises TraceError (one line) on anything that is not one."""
    path = str(path)
    try:
        raw = open(path, "rb", buffering=_DISK_BUFFER)
    except OSError as error:
        raise TraceError(f"{path}: cannot read: {error.strerror or error}") from None
    with raw:
        try:
            stream = _decompressed(raw)
            first = stream.read(_CHUNK)
        except (OSError, EOFError, zlib.error) as error:
            raise TraceError(f"{path}: {_gzip_problem(error)}") from None
        prefix = _events_prefix(path, first, gzipped=stream is not raw)
        reader = _RecordingReader(stream, first)
        builder = TimelineBuilder("pytorch", path)
        _parse(builder, reader, prefix, path)
    if prefix != "item" and not reader.saw_trace_events:
        raise TraceError(f"{path}: a JSON object without \"traceEvents\": not a Chrome / PyTorch profiler trace")
    builder.wall_offset_us = _wall_offset_us(reader)
    return builder.build()


def _decompressed(raw):
    """The file's bytes, unzipped where they start with gzip's magic (the name says nothing:
    `tensorboard_trace_handler` writes `.pt.trace.json.gz`, and people rename files)."""
    if raw.peek(2)[:2] == GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def _gzip_problem(error: BaseException) -> str:
    if isinstance(error, EOFError):
        return "truncated gzip: the compressed stream ends before its end marker"
    if isinstance(error, (gzip.BadGzipFile, zlib.error)):
        return f"not a readable gzip file ({error})"
    return f"cannot read: {getattr(error, 'strerror', None) or error}"


def _events_prefix(path: str, first: bytes, gzipped: bool = False) -> str:
    """ijson's path to the events: `traceEvents.item` in Kineto's object, `item` in Chrome's
    array format; anything else is not JSON this reader knows."""
    start = first[len(_UTF8_BOM):] if first.startswith(_UTF8_BOM) else first
    start = start.lstrip(_JSON_WHITESPACE)
    if not start:
        raise TraceError(f"{path}: empty file" if not first else f"{path}: only whitespace, no JSON")
    if start[:1] == b"{":
        return "traceEvents.item"
    if start[:1] == b"[":
        return "item"
    content = "gzipped, but what it holds is not JSON" if gzipped else "not JSON"
    raise TraceError(f"{path}: {content} (starts with {start[:16]!r}): expected a PyTorch profiler / Chrome trace")


def _parse(builder: TimelineBuilder, reader: _RecordingReader, prefix: str, path: str) -> None:
    """Every event into the builder; ijson's, gzip's and a bad event's errors as one line."""
    try:
        builder.events_read = _fill(builder, ijson.items(reader, prefix, use_float=True))
    except _BadJSON as bad:
        raise TraceError(f"{path}: {_json_problem(bad.error, reader, bad.events)}") from None
    except _BadEvent as bad:
        raise TraceError(f"{path}: {bad}") from None
    except (OSError, EOFError, zlib.error) as error:
        raise TraceError(f"{path}: {_gzip_problem(error)}") from None


class _BadJSON(Exception):
    def __init__(self, error: Exception, events: int):
        super().__init__(str(error))
        self.error, self.events = error, events


class _BadEvent(Exception):
    """An event this reader must use but cannot (no ts, ts not a number, not an object)."""


def _json_problem(error: Exception, reader: _RecordingReader, events: int) -> str:
    # yajl's message is three lines (what, the text around, a caret): the first says it
    text = str(error).strip()
    if text.startswith(("b'", 'b"')):
        text = text[2:]
    what = text.replace("\\n", "\n").splitlines()[0].strip() if text else "invalid JSON"
    where = f"after {events:,} events, near byte {reader.bytes_read:,} of the JSON"
    if "premature EOF" in what:
        return f"truncated JSON: the file ends inside the document ({where})"
    return f"invalid JSON: {what} ({where})"


def _fill(builder: TimelineBuilder, events) -> int:
    """The hot loop: one pass over maybe ten million events, so the per-event work is a few dict
    gets and one append; anything unusual goes to a slow path. Returns how many events there were."""
    device_op, host_call, host_range, skip = builder.device_op, builder.host_call, builder.host_range, builder.skip
    device_kinds, host_categories = _DEVICE_KINDS, _HOST_CALL_CATEGORIES
    labels: dict[str, int] = {}  # thread / stream labels without a number -> made-up negative ids
    count = 0
    event = None
    try:
        for event in events:
            count += 1
            if event.get("ph") != "X":
                skip(event.get("cat") or f"ph={event.get('ph')}")
                continue
            category = event.get("cat")
            kind = device_kinds.get(category)
            if kind is not None:
                args = event.get("args") or {}
                device = args.get("device")
                if device is None:
                    device = event.get("pid")
                if type(device) is not int:
                    device = _number_in(device)
                    if device is None:
                        skip(f"{category}: device not a number")
                        continue
                stream = args.get("stream")
                if stream is None:
                    stream = event.get("tid")
                if type(stream) is not int:
                    stream = _thread_id(stream, labels)
                start = event["ts"]
                device_op(device, kind, event["name"], start, start + event["dur"], stream,
                          args.get("correlation", NO_CORRELATION))
            elif category in host_categories:
                thread = event.get("tid")
                if type(thread) is not int:
                    thread = _thread_id(thread, labels)
                start = event["ts"]
                host_call(event["name"], start, start + event["dur"],
                          (event.get("args") or {}).get("correlation", NO_CORRELATION), thread)
            elif category == _RANGE_CATEGORY:
                thread = event.get("tid")
                if type(thread) is not int:
                    thread = _thread_id(thread, labels)
                start = event["ts"]
                host_range(event["name"], start, start + event["dur"], thread)
            else:
                skip(category or "X without category")
    except ijson.JSONError as error:
        raise _BadJSON(error, count) from None
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as error:
        raise _BadEvent(_event_problem(count, event, error)) from None
    return count


def _event_problem(index: int, event, error: Exception) -> str:
    if not isinstance(event, dict):
        return f"event {index} is not an object but {type(event).__name__}"
    label = f"event {index} ({event.get('cat')} {str(event.get('name'))[:60]!r})"
    if isinstance(error, KeyError):
        return f"{label} has no {error.args[0]!r}"
    fields = {key: event.get(key) for key in ("ts", "dur", "name") if key in event}
    return f"{label}: a field that must be a number (ts, dur) or a string (name) is not: {fields}"


def _number_in(value) -> int | None:
    """An id from what the trace has: an int, an integral float, a label ending in a number
    ("stream 7"); None where there is no number to take."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        found = _TRAILING_NUMBER.search(value)
        return int(found.group(1)) if found else None
    return None


def _thread_id(value, labels: dict[str, int]) -> int:
    """A thread (or stream) id for any value: the number in a label like "stream 7"; for a label
    without one ("PyTorch Profiler", ""), a negative id of its own — the event stays in, on a
    thread that cannot be mistaken for an OS thread."""
    number = _number_in(value)
    if number is not None:
        return number
    label = str(value)
    found = labels.get(label)
    if found is None:
        found = labels[label] = -(len(labels) + 1)
    return found


def _wall_offset_us(reader: _RecordingReader) -> float | None:
    """Kineto's `baseTimeNanoseconds` (Unix ns of ts 0) in µs, from before or after the events."""
    for text in (reader.head, reader.tail()):
        found = _BASE_TIME.search(text)
        if found:
            return int(found.group(1)) / 1000.0
    return None

