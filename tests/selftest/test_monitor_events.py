"""The monitor's fault figures: NVML's XID and ECC events, the memory-repair counters (row
remapping, retired pages) from the start of a run to its end, and the time the GPUs spent slowed
down. The real sampler process and `gpucert monitor`, with faults planted in the fake NVML (the
only fake, at the NVML boundary: FAKE_NVML_PLAN, see fake_pynvml)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest

from gpucert.monitor import store, summary
from gpucert.monitor.attach import NVML_MODULE_HOOK, SessionMonitor
from gpucert.monitor.sampler import Monitor, MonitorConfig
from gpucert.monitor.sources import NvmlSource

from . import fake_pynvml

INTERVAL_S = 0.05
NEW_GPU_KEYS = {"xid_events", "xid_count", "ecc_events", "row_remap_new", "retired_pages_new", "slowdown_s",
                "thermal_slowdown_s", "power_slowdown_s", "sm_clock_peak_mhz", "sm_clock_busy_median_mhz",
                "sm_clock_drop_pct", "temp_peak_c", "slowdown_reasons", "hard_slowdown_samples"}


@pytest.fixture(autouse=True)
def _fake_nvml_importable(monkeypatch):
    fake_pynvml.importable(monkeypatch)


@pytest.fixture
def plan(tmp_path, monkeypatch):
    """The fake NVML's plan file, named to this process and the sampler it spawns; empty at first."""
    path = tmp_path / "plan.json"
    fake_pynvml.write_plan(path, {})
    monkeypatch.setenv("FAKE_NVML_PLAN", str(path))
    return path


def monitor(tmp_path, **config):
    return Monitor(MonitorConfig(str(tmp_path / "m.npz"), **({"nvml_module": "fake_pynvml",
                                                               "interval_s": INTERVAL_S} | config)))


def test_events_repairs_and_slowdown_through_a_real_sampler(tmp_path, plan):
    """One run of the sampler with every fault planted after it started: XID 79 on GPU 1 at +0.3 s,
    ECC events, rows remapped and pages retired on GPU 0 (GPU 1 has no row remapping), thermal
    slowdowns for known spans, and an SM clock series whose busy median is 1755 of a 1980 MHz peak."""
    # what the GPUs had before: 5 rows remapped, 1 page retired (the figures are the growth)
    before = {"remapped_rows_not_supported": [1], "remapped_rows": {"0": [[0, 5, 0, 0, 0]]},
              "retired_pages": {"0": [[0, 1, 0]]}}
    fake_pynvml.write_plan(plan, before)
    with monitor(tmp_path) as mon:
        t0 = time.monotonic()
        timed = {
            "remapped_rows_not_supported": [1],
            "events": [{"at": t0 + 0.3, "gpu": 1, "type": "xid", "data": 79},
                       {"at": t0 + 0.4, "gpu": 0, "type": "ecc_double_bit"},
                       {"at": t0 + 0.5, "gpu": 1, "type": "ecc_single_bit"},
                       {"at": t0 + 0.55, "gpu": 1, "type": "ecc_single_bit"}],
            # 2 more corrected, 1 uncorrected, one pending; 3 more pages
            "remapped_rows": {"0": [[0, 5, 0, 0, 0], [t0 + 0.2, 7, 1, 1, 0]]},
            "retired_pages": {"0": [[0, 1, 0], [t0 + 0.2, 4, 0]]},
            # GPU 1: sw_thermal_slowdown 0.7 s on top of its constant sw_power_cap; GPU 0: hw_thermal 0.2 s
            "clock_events": {"1": [[t0 + 0.2, t0 + 0.9, 0x24]], "0": [[t0 + 1.0, t0 + 1.2, 0x40]]},
            # GPU 0 busy at 1980 MHz 0.25 s, busy at 1755 MHz 0.6 s, then idle (utilization 50 %:
            # not busy) at 345 MHz for longer than it was busy — over all samples the median is 345
            "sm_clock_mhz": {"0": [[t0, t0 + 0.25, 1980], [t0 + 0.25, t0 + 0.85, 1755], [t0 + 0.85, t0 + 99, 345]]},
            "util_gpu_pct": {"0": [[t0 + 0.85, t0 + 99, 50]]},
        }
        fake_pynvml.write_plan(plan, timed)
        time.sleep(2.0)
        meta, columns = mon.window(t0)
        events = mon.events(t0, flush=False)
        # one more just before the stop, after the last flush: the stop writes it too
        timed["events"].append({"at": 0, "gpu": 0, "type": "xid", "data": 94})
        fake_pynvml.write_plan(plan, timed)
        time.sleep(0.2)
    final = mon.final
    assert any("row remapping not readable on GPU 1 (Not Supported)" in note for note in meta["notes"])
    assert meta["nvml_events"]["listening"] == {str(i): ["xid", "ecc_single_bit", "ecc_double_bit"] for i in (0, 1)}

    # the events, as stored: GPU, kind, number, and the time they came (the fake posts on time;
    # the listener's wait sees it at once)
    stored = store.load_events(mon.path)
    assert stored[:4] == events
    assert [(e["gpu"], e["kind"], e["data"]) for e in stored] == [
        (1, "xid", 79), (0, "ecc_double_bit", 0), (1, "ecc_single_bit", 0), (1, "ecc_single_bit", 0), (0, "xid", 94)]
    xid = stored[0]
    assert t0 + 0.3 <= xid["t"] <= t0 + 0.3 + 0.25, xid["t"] - t0
    assert xid["wall"] - xid["t"] == pytest.approx(meta["clock"]["wall_minus_monotonic"], abs=0.05)
    assert xid["gpu_instance"] is None and xid["compute_instance"] is None  # no MIG

    whole = mon.summary()  # after the stop: the whole run, with the repair counters' end reading
    g0, g1 = whole["gpus"][0], whole["gpus"][1]
    assert NEW_GPU_KEYS <= set(g0)
    assert g1["xid_count"] == 1 and [e["xid"] for e in g1["xid_events"]] == [79] and g1["xid_events"][0]["t"] == xid["t"]
    assert g0["xid_count"] == 1 and [e["xid"] for e in g0["xid_events"]] == [94]
    assert g0["ecc_events"] == {"single_bit": 0, "double_bit": 1}
    assert g1["ecc_events"] == {"single_bit": 2, "double_bit": 0}
    assert g0["row_remap_new"] == {"corrected": 2, "uncorrected": 1, "pending": True, "failure": False}
    assert g1["row_remap_new"] is None  # NotSupported: unknown, not 0
    assert g0["retired_pages_new"] == {"single_bit": 3, "double_bit": 0}
    assert g1["retired_pages_new"] == {"single_bit": 0, "double_bit": 0}
    assert final["repairs_end"]["0"]["remapped_rows"]["corrected"] == 7 and final["repairs_end"]["1"]["remapped_rows"] is None

    # time in slowdown over the samples since t0: each planted span within one sample interval
    # (two, where the sampler skipped a deadline near an edge)
    figures = summary.summarize(columns, meta=meta, events=events)
    assert figures["gpus"][0]["xid_count"] == 0  # the window's events only
    slack = INTERVAL_S * (2 if final["missed"] else 1) + 0.005
    w0, w1 = figures["gpus"][0], figures["gpus"][1]
    assert w1["slowdown_s"]["sw_thermal_slowdown"] == pytest.approx(0.7, abs=slack)
    assert w1["thermal_slowdown_s"] == w1["slowdown_s"]["sw_thermal_slowdown"]
    assert w1["power_slowdown_s"] == pytest.approx(figures["duration_s"], rel=0.05)  # sw_power_cap throughout
    assert w0["slowdown_s"]["hw_thermal_slowdown"] == pytest.approx(0.2, abs=slack)
    assert w0["thermal_slowdown_s"] == w0["slowdown_s"]["hw_thermal_slowdown"] and w0["power_slowdown_s"] == 0
    assert w0["slowdown_s"]["sw_thermal_slowdown"] == 0 and w1["slowdown_s"]["hw_slowdown"] == 0
    # the clock drop: busy samples only (util > 50 %), the peak over all of them
    assert (w0["sm_clock_peak_mhz"], w0["sm_clock_busy_median_mhz"]) == (1980, 1755)
    assert w0["sm_clock_drop_pct"] == (1980 - 1755) / 1980 * 100
    assert np.median(columns["gpu0.sm_clock_mhz"]) == 345  # what counting the idle samples would give
    assert w1["sm_clock_drop_pct"] == 0
    assert w0["row_remap_new"] is None  # a window of the run: no end reading in it

    # a check's windows: the events inside them only
    late = summary.summarize_windows(columns, [(t0 + 0.6, t0 + 1.5)], meta=meta, events=events)
    assert late["gpus"][1]["xid_count"] == 0 and late["gpus"][1]["ecc_events"] == {"single_bit": 0, "double_bit": 0}


def test_summarize_windows_adds_each_repeats_slowdown_and_leaves_the_pauses_out():
    """Three 1 s repeats with 5 s pauses between them, thermal slowdown throughout: 3 s in
    slowdown, not the 13 s the samples span (nor 3 s plus the capped pauses)."""
    t = np.arange(0, 13.0 + 1e-9, 0.1)
    inside = [(0.0, 1.0), (6.0, 7.0), (12.0, 13.0)]
    keep = np.zeros(len(t), dtype=bool)
    for a, b in inside:
        keep |= (t >= a - 1e-9) & (t <= b + 1e-9)
    t = t[keep]
    columns = {"t": t, "scheduled": t, "gpu0.clock_events": np.full(len(t), 0x20, dtype=float)}
    figures = summary.summarize_windows(columns, [(a - 1e-9, b + 1e-9) for a, b in inside])
    assert figures["gpus"][0]["thermal_slowdown_s"] == pytest.approx(3.0)
    assert figures["gpus"][0]["slowdown_s"]["sw_thermal_slowdown"] == pytest.approx(3.0)
    assert summary.summarize(columns)["gpus"][0]["thermal_slowdown_s"] == pytest.approx(3.0 + 2 * 0.2)  # capped


def test_slowdown_is_time_weighted_not_counted():
    """Uneven sample spacing: a reading holds until the next sample; a stall holds it at most twice
    the median spacing; an unread sample counts nowhere."""
    t = np.array([0.0, 0.1, 0.2, 0.3, 1.3, 1.4, 1.5, 1.6])  # a 1 s stall after 0.3
    reasons = np.array([0x20, 0x20, 0x0, 0x40, 0x0, np.nan, 0x80, 0x80])
    got = summary.slowdown_seconds(t, reasons)
    assert got["slowdown_s"]["sw_thermal_slowdown"] == pytest.approx(0.2)
    assert got["slowdown_s"]["hw_thermal_slowdown"] == pytest.approx(0.2)  # the stall: 2 × 0.1 s, not 1 s
    assert got["thermal_slowdown_s"] == pytest.approx(0.4)
    assert got["power_slowdown_s"] == pytest.approx(0.1)  # 1.5 → 1.6; the last sample holds nothing
    assert got["slowdown_s"]["sw_power_cap"] == 0
    both = summary.slowdown_seconds(np.array([0.0, 0.5, 1.0]), np.array([0x24, 0x84, 0x0]))
    assert both["power_slowdown_s"] == pytest.approx(1.0) and both["thermal_slowdown_s"] == pytest.approx(0.5)
    assert summary.slowdown_seconds(t, np.full(len(t), np.nan))["slowdown_s"] is None


def test_sm_clock_drop_is_the_busy_median_below_the_peak():
    clock = np.array([1980, 1700, 1700, 1800, 300, 300, 300, 300, np.nan])
    util = np.array([95, 90, 51, 80, 50, 0, 0, 0, 99])
    got = summary.sm_clock_drop(clock, util)
    assert got == {"sm_clock_peak_mhz": 1980, "sm_clock_busy_median_mhz": 1750.0,
                   "sm_clock_drop_pct": (1980 - 1750) / 1980 * 100}
    assert summary.sm_clock_drop(clock, np.zeros(len(clock)))["sm_clock_drop_pct"] is None  # never busy


def _old_file(path, meta, columns):
    """A file as the monitor wrote it before it had events: meta.json and one chunk, nothing else."""
    buffer = io.BytesIO()
    names = sorted(columns)
    np.savez(buffer, names64=np.array(names, dtype=str), names32=np.array([], dtype=str),
             values64=np.column_stack([np.asarray(columns[n], dtype=np.float64) for n in names]),
             values32=np.empty((0, 0), dtype=np.float32))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.json", json.dumps(meta))
        zf.writestr("c00000.npz", buffer.getvalue())


def test_a_file_without_events_still_reads_and_its_event_figures_are_unknown(tmp_path):
    t = np.arange(0, 2.0, 0.1)
    columns = {"t": t, "scheduled": t, "gpu0.clock_events": np.where(t < 1.0, 0x20, 0x0),
               "gpu0.sm_clock_mhz": np.full(len(t), 1980.0), "gpu0.util_gpu_pct": np.full(len(t), 90.0)}
    _old_file(tmp_path / "old.npz", {"interval_s": 0.1}, columns)
    reader = store.Reader(tmp_path / "old.npz")
    meta, read = reader.read()
    assert read["t"].tolist() == t.tolist() and reader.events == [] and reader.repairs_end is None
    assert store.load_events(tmp_path / "old.npz") == []
    g0 = summary.summarize(read, meta=meta, events=reader.events, repairs_end=reader.repairs_end)["gpus"][0]
    # no listener then: unknown, not "no XID"
    assert (g0["xid_count"], g0["xid_events"], g0["ecc_events"], g0["row_remap_new"]) == (None, None, None, None)
    assert g0["thermal_slowdown_s"] == pytest.approx(1.0) and g0["sm_clock_drop_pct"] == 0
    # and a file with them: the events and the end reading come back, a check's slice keeps its own
    new = store.ColumnStore(tmp_path / "new.npz", {"nvml_events": {"listening": {"0": ["xid"]}}})
    new.append(columns)
    event = {"t": 0.5, "wall": 1e9, "gpu": 0, "kind": "xid", "data": 79, "gpu_instance": None, "compute_instance": None}
    new.append_events([event])
    new.append_events([])  # nothing to add: no member
    new.put_json(store.REPAIRS_END, {"0": {"remapped_rows": None, "retired_pages": None}})
    reader = store.Reader(tmp_path / "new.npz")
    meta, read = reader.read()
    assert reader.events == [event] and reader.repairs_end == {"0": {"remapped_rows": None, "retired_pages": None}}
    assert summary.summarize(read, meta=meta, events=reader.events)["gpus"][0]["xid_count"] == 1
    sliced = store.save_slice(tmp_path / "slice.npz", meta, read, [event])
    assert store.load_events(sliced) == [event]
    assert sorted(zipfile.ZipFile(tmp_path / "new.npz").namelist()) == ["c00000.npz", "events-00000.json",
                                                                       "meta.json", "repairs_end.json"]


def test_an_nvml_without_events_or_repair_counters_is_noted_and_still_sampled(tmp_path, monkeypatch):
    """An old binding without the event API and without row remapping: a note each, the figures
    None, every gauge still read; a listening source's close ends its thread within one wait."""
    (tmp_path / "old_nvml.py").write_text(
        "from fake_pynvml import *\n"
        "del nvmlEventSetCreate, nvmlDeviceGetRemappedRows\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    source = NvmlSource("old_nvml")
    assert source.open()
    row = {}
    source.read(row)
    assert row["gpu1.power_w"] == 200 and source.listening == {}
    assert any(note.startswith("no NVML events (nvmlEventSetCreate") for note in source.notes)
    assert any(note.startswith("row remapping not readable on GPU 0 (") for note in source.notes)
    assert source.repairs_start["0"] == {"remapped_rows": None, "retired_pages": {"single_bit": 0, "double_bit": 0}}
    source.close()

    listening = NvmlSource("fake_pynvml")
    assert listening.open() and not listening.notes
    event_set = listening.listener._set
    started = time.monotonic()
    listening.close()
    assert time.monotonic() - started < 1.0 and event_set.freed
    assert not listening.listener._thread.is_alive()


def _cli(tmp_path, *args, **env):
    env = {**os.environ, "GPUCERT_NVML_MODULE": "fake_pynvml",
           "PYTHONPATH": os.pathsep.join([fake_pynvml.FOLDER, os.environ.get("PYTHONPATH", "")]), **env}
    return subprocess.run([sys.executable, "-m", "gpucert.cli", "monitor", "--duration", "0.6", "--interval-ms", "50",
                           *args], capture_output=True, text=True, timeout=90, env=env)


@pytest.mark.fault("monitor", "NVML refuses event registration on GPU 0 (NotSupported), GPU 1 delivers XID "
                   "events but no ECC events, and has no row remapping",
                   "a note each; those figures null, not 0; the XID on GPU 1 still recorded; the monitor samples")
def test_monitor_command_json_with_events_refused_on_one_gpu(tmp_path, plan):
    fake_pynvml.write_plan(plan, {
        "register_not_supported": [0], "remapped_rows_not_supported": [1],
        "supported_events": {"1": 0x8 | 0x4 | 0x10},  # XID, P-state, clock: no ECC events
        # due at once: each delivered to a set that listens for it, as soon as it waits
        "events": [{"at": 0, "gpu": 1, "type": "xid", "data": 79}, {"at": 0, "gpu": 0, "type": "xid", "data": 13},
                   {"at": 0, "gpu": 1, "type": "ecc_double_bit"}]})
    done = _cli(tmp_path, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    g0, g1 = result["sources"]["nvml"]["0"], result["sources"]["nvml"]["1"]
    assert result["samples"] >= 5 and g0["power_mean_w"] == 300  # the monitor ran
    assert NEW_GPU_KEYS <= set(g0) and NEW_GPU_KEYS <= set(g1)
    assert any("NVML events not registered on GPU 0 (Not Supported)" in note for note in result["notes"])
    assert any("GPU 1 not ecc_single_bit, ecc_double_bit" in note for note in result["notes"])
    assert any("row remapping not readable on GPU 1" in note for note in result["notes"])
    assert (g0["xid_count"], g0["xid_events"], g0["ecc_events"]) == (None, None, None)
    assert g1["xid_count"] == 1 and g1["xid_events"][0]["xid"] == 79
    assert g1["ecc_events"] is None
    assert g0["row_remap_new"] == {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False}
    assert g1["row_remap_new"] is None
    assert g1["power_slowdown_s"] == pytest.approx(result["duration_s"], rel=0.05) and g1["thermal_slowdown_s"] == 0
    assert g0["sm_clock_drop_pct"] == 0


def test_monitor_command_text_names_the_faults(tmp_path, plan):
    """With handles as pynvml gives them (ctypes pointers, a new object per call: an event's
    device is matched to its GPU by address), the text line of each GPU names its faults."""
    fake_pynvml.write_plan(plan, {"remapped_rows_not_supported": [1],
                                  "events": [{"at": 0, "gpu": 1, "type": "xid", "data": 79},
                                             {"at": 0, "gpu": 1, "type": "xid", "data": 48},
                                             {"at": 0, "gpu": 1, "type": "ecc_double_bit"}]})
    done = _cli(tmp_path, FAKE_NVML_POINTER_HANDLES="1")
    assert done.returncode == 0, done.stderr
    lines = {line.split(":")[0]: line for line in done.stdout.splitlines()}
    assert "XID 2 (79, 48), ECC events 0 single-bit / 1 double-bit, row remaps ?" in lines["gpu1"], done.stdout
    assert "XID 0, ECC events 0 single-bit / 0 double-bit, row remaps +0 corrected / +0 uncorrected, " \
           "retired pages +0 / +0; slowdown thermal 0.00 s, power 0.00 s; SM clock drop 0 %" in lines["gpu0"], done.stdout
    assert "note: row remapping not readable on GPU 1" in done.stdout


class _Recorder:
    def __init__(self):
        self.findings, self.metrics = [], {}

    def record(self, metric, value, **kwargs):
        self.metrics[metric] = value

    def finding(self, kind, **fields):
        self.findings.append((kind, fields))


def test_the_session_monitor_reports_events_on_the_check_and_over_the_session(tmp_path, plan, monkeypatch):
    """The plugin's side: a check during which GPU 1 posts XID 79 gets a finding naming it; the
    session's monitor info has each GPU's events, repairs and slowdowns of the whole session."""
    monkeypatch.setenv(NVML_MODULE_HOOK, "fake_pynvml")
    session = SessionMonitor("all", 50, tmp_path)
    result = SimpleNamespace(nodeid="t::a", check_id="a", work=None, timelines=None, monitor=None)
    recorder = _Recorder()
    session.begin(result.nodeid)
    assert session.error is None, session.error
    t0 = time.monotonic()
    fake_pynvml.write_plan(plan, {"events": [{"at": t0 + 0.2, "gpu": 1, "type": "xid", "data": 79}]})
    time.sleep(0.7)
    figures = session.figures(t0, time.monotonic())
    assert figures["gpus"][1]["xid_count"] == 1 and figures["gpus"][0]["xid_count"] == 0
    session.end(result, recorder)
    notices = [fields["notice"] for kind, fields in recorder.findings if kind == "monitor"]
    assert any(n.startswith("NVML events: GPU 1 XID 79 at +") for n in notices), notices
    assert store.load_events(result.monitor["file"])[0]["data"] == 79  # kept with the check's samples
    info = session.stop()
    assert info["gpus"]["1"]["xid_count"] == 1 and info["gpus"]["1"]["xid_events"][0]["xid"] == 79
    assert info["gpus"]["0"]["row_remap_new"] == {"corrected": 0, "uncorrected": 0, "pending": False, "failure": False}
    assert set(info["gpus"]["0"]) == set(summary.RUN_HEALTH_KEYS)
