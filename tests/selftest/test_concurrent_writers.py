"""Concurrent writers, for real: two pytest processes updating one baselines folder lose nothing
(before, both read the family when they started and the last to write dropped the other's
update while both reported success), the run that waits for the lock says for whom; a second run
on a report folder in use is refused with one line, so gpucert.log is never interleaved."""

import fcntl
import json
import multiprocessing
import os
import subprocess
import sys
import time

import pytest

from gpucert.baselines import LOCK_NAME, BaselineStore, Provenance, merge, write_atomic
from gpucert.metrics import Metric
from .test_plugin import THRESHOLDS

# each check waits until both runs are inside a check: both have loaded the baselines before
# either stores, the interleaving that lost an update
TOY = '''
import os, pathlib, time
import pytest

BARRIER = pathlib.Path(os.environ["BARRIER_DIR"])

@pytest.mark.hardware
@pytest.mark.parametrize("size", [1024, 4096])
def test_toy(gpucert, size):
    BARRIER.joinpath(str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(BARRIER.iterdir())) < int(os.environ["BARRIER_N"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    release = os.environ.get("RELEASE_FILE")
    while release and not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    gpucert.record("tflops", float(size), unit="TFLOP/s", samples=[float(size)] * 5)
'''


def start(tmp_path, name, *args, barrier_n=2, release=None):
    env = {**os.environ, "BARRIER_DIR": str(tmp_path / "barrier"), "BARRIER_N": str(barrier_n)}
    if release:
        env["RELEASE_FILE"] = str(release)
    out = open(tmp_path / f"{name}.out", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_toy.py",
                             "--profile", "toy-node", *args], cwd=tmp_path, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    proc.out = tmp_path / f"{name}.out"
    return proc


def wait_for(predicate, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def project(tmp_path):
    (tmp_path / "test_toy.py").write_text(TOY)
    (tmp_path / "thresholds.yaml").write_text(THRESHOLDS)
    (tmp_path / "barrier").mkdir()
    return tmp_path


@pytest.mark.fault("concurrency", "two pytest processes run --update-baselines on one baselines folder at once, "
                   "each measuring one of a family's two metrics, both having read the family before either writes",
                   "both updates in the file; each run waited for the lock and said for whom (pid)")
@pytest.mark.slow("child pytest sessions")
def test_two_updating_runs_lose_nothing_and_the_waiter_says_so(project):
    lock_path = project / "baselines" / "toy-node" / LOCK_NAME
    lock_path.parent.mkdir(parents=True)
    # this test holds the lock as a third writer would, so both runs must wait and say so
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, f"{os.getpid()}\n".encode())
    runs = [start(project, f"run{i}", "-k", size, "--update-baselines", "--report-dir", str(project / f"report{i}"))
            for i, size in enumerate(("1024", "4096"))]
    try:
        waiting = f"waiting for the baselines lock held by pid {os.getpid()}"
        assert wait_for(lambda: all(waiting in r.out.read_text() for r in runs)), [r.out.read_text()[-2000:] for r in runs]
    finally:
        os.close(fd)  # released: the two runs now take turns
    for run in runs:
        assert run.wait(timeout=120) == 0, run.out.read_text()[-3000:]
    stored = json.loads((project / "baselines" / "toy-node" / "toy.json").read_text())["metrics"]
    assert {k: v["value"] for k, v in stored.items()} == {"toy[size=1024]::tflops": 1024.0,
                                                          "toy[size=4096]::tflops": 4096.0}
    for i, run in enumerate(runs):
        text = run.out.read_text()
        assert "1 change(s)" in text and "Traceback" not in text
        log = (project / f"report{i}" / "gpucert.log").read_text()
        assert waiting in log and "baselines lock taken" in log  # the card's notes too
        assert any(waiting in note for note in json.loads((project / f"report{i}" / "metrics.json").read_text())["notes"])


def _merge_one(root, n, start_at):
    """One process of the multiprocessing test: the update path the plugin takes, for metric n."""
    store = BaselineStore(root, "toy-node")
    store.family("toy")  # read before the others write: what a run does when it starts
    while time.time() < start_at:
        time.sleep(0.001)
    metric = Metric("toy", "toy", f"m{n}", "x", float(n + 1), {}, samples=[float(n + 1)] * 3, direction="higher")
    with store.locked():
        doc, _ = merge(store.reread("toy"), [metric], {}, Provenance(None, None), {})
        time.sleep(0.02)  # widen the read-merge-write window: without the lock the last writer wins
        write_atomic(store.path("toy"), doc)


@pytest.mark.fault("concurrency", "eight processes merge one metric each into one family file at the same instant",
                   "all eight entries in the file")
@pytest.mark.slow("child pytest sessions")
def test_eight_processes_merging_at_once_keep_every_entry(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start_at = time.time() + 3.0
    procs = [ctx.Process(target=_merge_one, args=(tmp_path, n, start_at)) for n in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    stored = json.loads((tmp_path / "toy-node" / "toy.json").read_text())["metrics"]
    assert sorted(stored) == sorted(f"toy::m{n}" for n in range(8))


@pytest.mark.fault("concurrency", "a second run started on a report folder while the first still runs in it",
                   "the second refused with one line `ERROR: gpucert: … in use by another run (pid N)`, exit 4; "
                   "the first's gpucert.log and metrics.json hold only the first run")
@pytest.mark.slow("child pytest sessions")
def test_a_second_run_on_a_busy_report_folder_is_refused(project):
    release = project / "release"
    report = project / "shared-report"
    first = start(project, "first", "--report-dir", str(report), barrier_n=1, release=release)
    try:
        assert wait_for(lambda: any((project / "barrier").iterdir())), first.out.read_text()[-2000:]
        second = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_toy.py",
                                 "--profile", "toy-node", "--report-dir", str(report)], cwd=project,
                                env={**os.environ, "BARRIER_DIR": str(project / "barrier"), "BARRIER_N": "1"},
                                capture_output=True, text=True, timeout=120)
    finally:
        release.touch()
    assert second.returncode == pytest.ExitCode.USAGE_ERROR, second.stdout[-2000:] + second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines() if line.strip()]
    assert errors == [f"ERROR: gpucert: report folder {report} is in use by another run (pid {first.pid}); "
                      "give this run its own --report-dir"]
    assert "Traceback" not in second.stdout + second.stderr
    assert first.wait(timeout=120) == 0, first.out.read_text()[-3000:]
    log = (report / "gpucert.log").read_text()
    assert log.count("run of 2 check(s)") == 1 and "run complete" in log
    assert json.loads((report / "metrics.json").read_text())["status"] == "complete"
