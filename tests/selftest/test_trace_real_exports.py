"""The nsys reader against a real Nsight Systems export (tests/fixtures/nsys/README.md): the
documented schema the other self-tests build from matches what nsys wrote, and the real export
reads and analyses to its own row counts."""

import gzip
import shutil
import sqlite3
from pathlib import Path

import numpy as np

from gpucert.forensics.analyze import analyze
from gpucert.forensics.read import load_trace
from gpucert.forensics.timeline import KERNEL, MEMCPY

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nsys"


def real_export(tmp_path) -> Path:
    path = tmp_path / "cloverleaf.sqlite"
    with gzip.open(FIXTURES / "perlmutter-cloverleaf-cuda.sqlite.gz") as src, open(path, "wb") as out:
        shutil.copyfileobj(src, out)
    return path


def columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


def test_the_documented_schema_matches_a_real_export(tmp_path):
    real = sqlite3.connect(real_export(tmp_path))
    documented = sqlite3.connect(":memory:")
    documented.executescript((FIXTURES / "schema.sql").read_text())
    for table in ("StringIds", "TARGET_INFO_SESSION_START_TIME", "CUPTI_ACTIVITY_KIND_KERNEL",
                  "CUPTI_ACTIVITY_KIND_MEMCPY", "CUPTI_ACTIVITY_KIND_RUNTIME"):
        missing = set(columns(documented, table)) - set(columns(real, table))
        assert not missing, (table, missing)  # every column the fixtures use, nsys writes


def test_a_real_export_reads_to_its_own_counts(tmp_path):
    path = real_export(tmp_path)
    db = sqlite3.connect(path)
    kernels = db.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
    copies = db.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_MEMCPY").fetchone()[0]
    calls = db.execute("SELECT count(*) FROM CUPTI_ACTIVITY_KIND_RUNTIME").fetchone()[0]
    first = db.execute("SELECT min(start) FROM CUPTI_ACTIVITY_KIND_KERNEL").fetchone()[0]
    epoch = db.execute("SELECT utcEpochNs FROM TARGET_INFO_SESSION_START_TIME").fetchone()[0]
    timeline = load_trace(path)
    (ops,) = timeline.devices.values()
    assert (kernels, copies, calls) == (1312, 279, 3048)
    assert int(np.sum(ops.kind == KERNEL)) == kernels and int(np.sum(ops.kind == MEMCPY)) == copies
    assert len(timeline.host_calls) == calls
    assert ops.start_us[0] == first / 1000 and timeline.wall_offset_us == epoch / 1000
    # every kernel was launched by a runtime call of the same correlation id
    launched = set(timeline.host_calls.correlation.tolist())
    assert all(c in launched for c in ops.correlation[ops.kind == KERNEL].tolist())
    result = analyze(timeline, gap_us=20)
    device = result["devices"][str(next(iter(timeline.devices)))]
    assert device["ops"] == {"kernel": 1312, "memcpy": 279, "memset": 0, "total": 1591}
    gaps = device["idle_gaps"]
    assert gaps["count"] == sum(c["count"] for c in device["by_cause"].values()) > 0
    assert 0 < device["busy_pct"] < 100
