"""Report and baselines folders on a real full disk (a 64 KiB tmpfs, filled): one line
`ERROR: gpucert: …` and a non-zero exit, never a traceback or INTERNALERROR, and metrics.json is
never left saying `running` (before, the writers' OSError became an INTERNALERROR and logging
printed a traceback per record)."""

import errno
import json
import subprocess
from pathlib import Path

import pytest

from .test_plugin import THRESHOLDS, TOY


def fill(folder: Path) -> None:
    """Write until the disk refuses: ENOSPC for real."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "filler", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def run(pytester, *args):
    pytester.makepyfile(test_toy=TOY)
    pytester.makefile(".yaml", thresholds=THRESHOLDS)
    pytester.path.joinpath("value.txt").write_text("100")
    # a subprocess: the real stderr (logging's tracebacks go there) and the real exit status
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--profile", "toy-node", *args)


def no_crash_text(result):
    text = result.stdout.str() + result.stderr.str()
    for crash in ("Traceback", "INTERNALERROR", "Logging error"):
        assert crash not in text, text[-3000:]


@pytest.mark.fault("bad-input", "--report-dir on a full disk (a 64 KiB tmpfs filled to ENOSPC) from the start",
                   "one line `ERROR: gpucert: report folder … cannot be written: No space left on device`, exit 4, "
                   "nothing measured, no traceback")
def test_a_full_report_disk_stops_the_run_before_it_measures(pytester, small_disk):
    fill(small_disk)
    report = small_disk / "report"
    result = run(pytester, "--report-dir", str(report))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert [line for line in result.stderr.lines if line.strip()] == [
        f"ERROR: gpucert: report folder {report} cannot be written: No space left on device"]
    no_crash_text(result)
    assert not (report / "metrics.json").exists()


FILLS_UP = '''
import pytest

@pytest.mark.hardware
def test_fills_the_disk(gpucert, gpucert_report_dir):
    gpucert.record("tflops", 100.0, unit="TFLOP/s", direction="higher", samples=[100.0] * 5)
    with open(gpucert_report_dir / "engine.log", "wb", buffering=0) as fh:  # an engine log that grows
        try:
            while True:
                fh.write(b"x" * 4096)
        except OSError:
            pass
'''


@pytest.mark.fault("bad-input", "the report disk fills up during the run (a check's log fills the 64 KiB tmpfs "
                   "after metrics.json was first written)",
                   "the checks still run; one line `ERROR: gpucert: the run's report could not be written …`, exit 4; "
                   "metrics.json says failed-to-write or is gone, never `running`; no traceback")
def test_a_report_disk_that_fills_during_the_run(pytester, small_disk):
    pytester.makepyfile(test_zz_fill=FILLS_UP)  # collected after test_toy.py: metrics.json is written once first
    report = small_disk / "report"
    result = run(pytester, "--report-dir", str(report), "-k", "1024 or fills")
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-3000:]
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith(
        f"ERROR: gpucert: the run's report could not be written in {report}: No space left on device; "), errors
    no_crash_text(result)
    result.stdout.fnmatch_lines(["*metrics.json could not be written (No space left on device); the run goes on*"])
    result.assert_outcomes(passed=2)  # both checks ran and passed: the disk is not their fault
    path = report / "metrics.json"
    if path.exists():  # as much as the disk took: the measurements, marked as not fully written
        data = json.loads(path.read_text())
        assert data["status"] == "failed-to-write" and "No space left on device" in data["write_error"]
        assert {c["check"] for c in data["checks"]} == {"toy", "fills_the_disk"}
    else:
        assert "metrics.json could not be written at all" in errors[0]
    assert not (report / "report.html").exists()  # no half card that reads as a whole one
    assert not [p for p in report.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.fault("bad-input", "--update-baselines into a baselines folder on a full disk (its family file "
                   "already there)", "the old baseline file intact, 'baselines not written: … No space left on device' "
                   "on the card and terminal, exit 1, no traceback")
@pytest.mark.slow("child pytest sessions")
def test_a_full_baselines_disk_keeps_the_old_baseline(pytester, small_disk, tmp_path):
    baselines = small_disk / "baselines"
    first = run(pytester, "--baselines-dir", str(baselines), "--report-dir", str(tmp_path / "r1"), "--update-baselines")
    assert first.ret == 0
    family = baselines / "toy-node" / "toy.json"
    before = family.read_text()
    fill(small_disk)
    pytester.path.joinpath("value.txt").write_text("101")
    result = run(pytester, "--baselines-dir", str(baselines), "--report-dir", str(tmp_path / "r2"), "--update-baselines")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    no_crash_text(result)
    result.stdout.fnmatch_lines(["note: baselines not written: *No space left on device*"])
    assert family.read_text() == before
    assert not [p for p in family.parent.iterdir() if p.name.endswith(".tmp")]
    assert json.loads((tmp_path / "r2" / "metrics.json").read_text())["status"] == "complete"
