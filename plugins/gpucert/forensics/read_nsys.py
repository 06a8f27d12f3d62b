"""Read an Nsight Systems SQLite export (`nsys export --type sqlite`) into a Timeline.

The tables and columns are the documented ones (Nsight Systems User Guide, "SQLite Schema
reference"; tests/fixtures/nsys/schema.sql holds their DDL):
- CUPTI_ACTIVITY_KIND_KERNEL / _MEMCPY / _MEMSET: device ops (start, end in ns, deviceId,
  streamId, correlationId; kernel names are ids into StringIds);
- CUPTI_ACTIVITY_KIND_RUNTIME: CUDA runtime and driver API calls (nameId, correlationId, globalTid);
- NVTX_EVENTS: push/pop (eventType 59) and start/end (60) ranges, their text inline or via textId;
- TARGET_INFO_SESSION_START_TIME: the Unix time (ns) of the session's time 0.

nsys leaves out a table that would have no rows (no NVTX in the program, no memsets), and
columns come and go between releases, so every table is optional and columns are picked by name
from what the file has. Rows come through a cursor one at a time — an export of a long run holds
millions of kernels — and go straight into the builder's typed columns.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .timeline import KERNEL, MEMCPY, MEMSET, NO_CORRELATION, Timeline, TimelineBuilder, TraceError

SQLITE_MAGIC = b"SQLite format 3\x00"
# nsys's own report formats (current and before 2021.4): binary, only nsys reads them
NSYS_REPORT_SUFFIXES = (".nsys-rep", ".qdrep")

KERNELS = "CUPTI_ACTIVITY_KIND_KERNEL"
MEMCPYS = "CUPTI_ACTIVITY_KIND_MEMCPY"
MEMSETS = "CUPTI_ACTIVITY_KIND_MEMSET"
RUNTIME = "CUPTI_ACTIVITY_KIND_RUNTIME"
NVTX = "NVTX_EVENTS"
SESSION_START = "TARGET_INFO_SESSION_START_TIME"
TRACE_TABLES = (KERNELS, MEMCPYS, MEMSETS, RUNTIME, NVTX)

# ENUM_NSYS_EVENT_TYPE values of NVTX_EVENTS.eventType that are ranges (34 is a mark, 75 a domain…)
NVTX_PUSH_POP_RANGE = 59
NVTX_START_END_RANGE = 60
_NVTX_RANGES = (NVTX_PUSH_POP_RANGE, NVTX_START_END_RANGE)
_NVTX_MARK = 34

# ENUM_CUDA_MEMCPY_OPER (CUPTI's CUpti_ActivityMemcpyKind): how Kineto names copies too
MEMCPY_KINDS = {0: "Unknown", 1: "HtoD", 2: "DtoH", 3: "HtoA", 4: "AtoH", 5: "AtoA", 6: "AtoD", 7: "DtoA",
                8: "DtoD", 9: "HtoH", 10: "PtoP"}

# globalTid is a serialized GlobalId; the OS thread id is its low 24 bits (the documentation's
# own example queries: `globalTid % 0x1000000 AS TID`), comparable with a Kineto trace's tid
_TID_MASK = 0xFFFFFF
_NS_PER_US = 1000.0


def read_nsys(path) -> Timeline:
    """The Timeline of an nsys SQLite export. Raises TraceError (one line) on anything else."""
    path = str(path)
    _check_is_sqlite(path)
    try:
        connection = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as error:
        raise TraceError(f"{path}: cannot open the SQLite file: {error}") from None
    try:
        return _read(connection, path)
    except sqlite3.DatabaseError as error:
        raise TraceError(f"{path}: unreadable SQLite file: {error}") from None
    finally:
        connection.close()


def _check_is_sqlite(path: str) -> None:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(len(SQLITE_MAGIC))
    except OSError as error:
        raise TraceError(f"{path}: cannot read: {error.strerror or error}") from None
    if magic == SQLITE_MAGIC:
        return
    if path.lower().endswith(NSYS_REPORT_SUFFIXES):
        raise TraceError(nsys_report_problem(path))
    raise TraceError(f"{path}: not an SQLite file (an Nsight Systems trace is read from "
                     "`nsys export --type sqlite` output)")


def nsys_report_problem(path: str) -> str:
    """What to say about a `.nsys-rep`: nsys's own binary format, which only nsys reads."""
    export = str(Path(path).with_suffix(".sqlite"))
    return (f"{path}: an Nsight Systems report, not its SQLite export: run "
            f"`nsys export --type sqlite -o {export} {path}` first and read {export}")


def _read(connection: sqlite3.Connection, path: str) -> Timeline:
    tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables.intersection(TRACE_TABLES):
        raise TraceError(f"{path}: an SQLite file without any table of an nsys export ({', '.join(TRACE_TABLES)}): "
                         "not `nsys export --type sqlite` output, or a run that traced neither CUDA nor NVTX")
    export = _Export(connection, tables, TimelineBuilder("nsys", path), path)
    export.kernels()
    export.memcpys()
    export.memsets()
    export.runtime()
    export.nvtx()
    export.builder.wall_offset_us = export.session_start_us()
    return export.builder.build()


class _Export:
    """One open export: which tables and columns it has, and the builder its rows go into."""

    def __init__(self, connection: sqlite3.Connection, tables: set[str], builder: TimelineBuilder, path: str):
        self.connection, self.tables, self.builder, self.path = connection, tables, builder, path

    def columns(self, table: str) -> set[str]:
        return {row[1] for row in self.connection.execute(f"PRAGMA table_info({table})")}

    def rows(self, sql: str):
        """A cursor: rows one at a time, never the table in memory."""
        return self.connection.execute(sql)

    def string(self, columns: set[str], *candidates: str, fallback: str) -> tuple[str, str]:
        """A SELECT expression for the first of `candidates` (ids into StringIds) that the table
        has and that names a string, in order, else `fallback`; and the LEFT JOINs it needs."""
        present = [column for column in candidates if column in columns] if "StringIds" in self.tables else []
        joins = "".join(f" LEFT JOIN StringIds s_{column} ON s_{column}.id = t.{column}" for column in present)
        values = [f"s_{column}.value" for column in present] + [_sql_text(fallback)]
        # SQLite's COALESCE wants two arguments at least
        return (f"COALESCE({', '.join(values)})" if present else values[0]), joins

    def kernels(self) -> None:
        if KERNELS not in self.tables:
            return
        columns = self.columns(KERNELS)
        # the short name ("flash_fwd_splitkv_kernel") reads better in a gap report than the template
        name, joins = self.string(columns, "shortName", "demangledName", "mangledName", fallback="unknown kernel")
        self.device_ops(KERNELS, KERNEL, name, joins, columns)

    def memcpys(self) -> None:
        if MEMCPYS not in self.tables:
            return
        columns = self.columns(MEMCPYS)
        cases = " ".join(f"WHEN {kind} THEN 'Memcpy {label}'" for kind, label in MEMCPY_KINDS.items())
        name = f"CASE t.copyKind {cases} ELSE 'Memcpy' END" if "copyKind" in columns else "'Memcpy'"
        self.device_ops(MEMCPYS, MEMCPY, name, "", columns)

    def memsets(self) -> None:
        if MEMSETS in self.tables:
            self.device_ops(MEMSETS, MEMSET, "'Memset'", "", self.columns(MEMSETS))

    def device_ops(self, table: str, kind: int, name: str, joins: str, columns: set[str]) -> None:
        sql = (f"SELECT t.start, t.end, t.deviceId, t.streamId, {_optional(columns, 'correlationId')}, {name} "
               f"FROM {table} t{joins}")
        device_op = self.builder.device_op
        count = 0
        try:
            for start, end, device, stream, correlation, op_name in self.rows(sql):
                count += 1
                device_op(device, kind, op_name, start / _NS_PER_US, end / _NS_PER_US, stream,
                          NO_CORRELATION if correlation is None else correlation)
        except TypeError:
            raise self.bad_row(table, count, "start, end, deviceId or streamId") from None
        self.builder.events_read += count

    def runtime(self) -> None:
        if RUNTIME not in self.tables:
            return
        columns = self.columns(RUNTIME)
        name, joins = self.string(columns, "nameId", fallback="unknown API call")
        sql = (f"SELECT t.start, t.end, {_optional(columns, 'correlationId')}, "
               f"{_optional(columns, 'globalTid', '0')}, {name} FROM {RUNTIME} t{joins}")
        host_call = self.builder.host_call
        count = 0
        try:
            for start, end, correlation, global_tid, call in self.rows(sql):
                count += 1
                host_call(call, start / _NS_PER_US, end / _NS_PER_US,
                          NO_CORRELATION if correlation is None else correlation, (global_tid or 0) & _TID_MASK)
        except TypeError:
            raise self.bad_row(RUNTIME, count, "start or end") from None
        self.builder.events_read += count

    def nvtx(self) -> None:
        """Ranges only (push/pop and start/end); marks and domain or category declarations are
        counted as skipped. A range's text is inline (`text`) or registered (`textId`)."""
        if NVTX not in self.tables:
            return
        columns = self.columns(NVTX)
        registered, joins = self.string(columns, "textId", fallback="")
        sql = (f"SELECT t.start, t.end, t.eventType, {_optional(columns, 'globalTid', '0')}, "
               f"COALESCE({_optional(columns, 'text')}, {registered}) FROM {NVTX} t{joins}")
        host_range, skip = self.builder.host_range, self.builder.skip
        count = 0
        try:
            for start, end, event_type, global_tid, text in self.rows(sql):
                count += 1
                if event_type not in _NVTX_RANGES:
                    skip("nvtx mark" if event_type == _NVTX_MARK else f"nvtx eventType {event_type}")
                elif end is None:
                    skip("nvtx range without end")  # the capture stopped inside it
                else:
                    host_range(text, start / _NS_PER_US, end / _NS_PER_US, (global_tid or 0) & _TID_MASK)
        except TypeError:
            raise self.bad_row(NVTX, count, "start or end") from None
        self.builder.events_read += count

    def session_start_us(self) -> float | None:
        if SESSION_START not in self.tables:
            return None
        row = self.connection.execute(f"SELECT utcEpochNs FROM {SESSION_START} LIMIT 1").fetchone()
        if row is None or row[0] is None:
            return None
        return row[0] / _NS_PER_US

    def bad_row(self, table: str, row: int, fields: str) -> TraceError:
        return TraceError(f"{self.path}: {table} row {row} has a NULL or non-number {fields}")


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _optional(columns: set[str], column: str, default: str = "NULL") -> str:
    return f"t.{column}" if column in columns else default
