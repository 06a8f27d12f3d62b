"""Ending an engine's whole process group (gpucert.process_group), with real processes: a leader
that starts a worker of its own, as vLLM, an NCCL rank or Chromium do."""

import signal
import subprocess
import sys
import textwrap

import pytest

from gpucert import process_group

from .emulators import process_alive

LEADER = textwrap.dedent('''
    import signal, subprocess, sys, time
    if sys.argv[1] == "stubborn":  # ignores SIGTERM, and so does its worker
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    worker = subprocess.Popen([sys.executable, "-c",
        "import signal, sys, time\\n"
        "if sys.argv[1] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
        "print('up', flush=True)\\n"
        "time.sleep(60)", sys.argv[1]], stdout=sys.stdout)
    time.sleep(60)
''')


def start(kind: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", LEADER, kind], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "up"  # the worker runs: the group has two members
    return proc


def test_a_group_that_ends_on_sigterm_is_stopped_with_it_workers_included():
    procs = [start("polite"), start("polite")]
    assert process_group.stop_groups(procs, grace_s=10) == "SIGTERM"
    assert not any(process_group.group_alive(p.pid) for p in procs)
    assert all(p.returncode == -signal.SIGTERM for p in procs)


@pytest.mark.slow("a SIGTERM grace waited out")
def test_a_group_that_ignores_sigterm_is_killed_after_the_grace():
    polite, stubborn = start("polite"), start("stubborn")
    # (a grace of seconds: the orphaned worker of the polite one is a zombie until init reaps it)
    assert process_group.stop_groups([polite, stubborn], grace_s=3.0) == "SIGKILL"
    assert not process_group.group_alive(polite.pid) and not process_group.group_alive(stubborn.pid)
    assert stubborn.returncode == -signal.SIGKILL  # its worker, which ignored SIGTERM too, is gone with it
    assert process_group.stop_groups([polite, stubborn], grace_s=0.5) == "none"  # gone: nothing to send


def test_kill_group_ends_the_group_at_once():
    proc = start("stubborn")
    process_group.kill_group(proc)
    assert proc.returncode == -signal.SIGKILL and process_group.wait_group(proc, 5.0)
    assert process_group.signal_group(proc, signal.SIGTERM) is False  # nothing left to signal


WORKER = textwrap.dedent('''
    import subprocess, sys, time
    # an engine core of its own that outlives it, holding the same stdout pipe (as vLLM's would)
    core = subprocess.Popen(["sleep", "300"], stdout=sys.stdout)
    print("core", core.pid, flush=True)
    print("scored", flush=True)
    if sys.argv[1] == "hang":
        time.sleep(300)
''')


@pytest.mark.fault("process", "a worker exits and leaves a process holding its stdout pipe",
                   "run_worker returns at the worker's exit with all it wrote; the leftover is ended")
def test_run_worker_ends_at_the_workers_exit_and_ends_what_it_left(tmp_path):
    with open(tmp_path / "err", "w") as err:
        run = process_group.run_worker([sys.executable, "-c", WORKER, "exit"], stderr=err, env={}, timeout_s=60,
                                       leftover_grace_s=5)
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and not run.timed_out and lines[1] == "scored"
    assert not process_alive(int(lines[0].split()[1]))


@pytest.mark.fault("process", "a worker hangs past its timeout",
                   "its group is killed; what it wrote before comes back, marked timed out")
def test_run_worker_past_its_timeout_keeps_what_was_written(tmp_path):
    with open(tmp_path / "err", "w") as err:
        run = process_group.run_worker([sys.executable, "-c", WORKER, "hang"], stderr=err, env={}, timeout_s=2)
    lines = run.stdout.splitlines()
    assert run.timed_out and run.returncode == -signal.SIGKILL and lines[1] == "scored"
    assert not process_alive(int(lines[0].split()[1]))
