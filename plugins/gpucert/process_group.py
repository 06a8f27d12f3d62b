"""Ending what gpucert started. Every engine it starts runs in a session of its own
(`start_new_session=True`): its process group is the child and all it started — vLLM's workers,
an NCCL rank's helpers, Chromium's renderers. Ending the group, not the child, is what gives the
GPUs back; one set of helpers for the server, the NCCL ranks, the offline and accuracy workers and
the self-tests' browser (tests/selftest/browser.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass


def signal_group(proc: subprocess.Popen, sig: int) -> bool:
    """Send `sig` to the group `proc` leads; False when the group is gone already."""
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the leader's pid is the group id
    except ProcessLookupError:
        return False
    return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still exists
        return True
    return True


def wait_group(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Reap the leader and wait until no process is left in its group (workers included)."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc.poll()  # reap the leader so its zombie does not keep the group "alive"
        if not group_alive(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the group at once (an interrupt, a timeout) and reap the leader."""
    signal_group(proc, signal.SIGKILL)
    proc.wait()


def stop_groups(procs: list[subprocess.Popen], grace_s: float) -> str:
    """SIGTERM every group, give them `grace_s` together to end, SIGKILL what is left and wait
    for it. Returns the strongest signal that was needed: "none", "SIGTERM" or "SIGKILL"."""
    sent = "none"
    for proc in procs:
        if group_alive(proc.pid) and signal_group(proc, signal.SIGTERM):
            sent = "SIGTERM"
    if sent == "none":
        for proc in procs:
            proc.poll()
        return sent
    deadline = time.monotonic() + grace_s
    for proc in procs:
        if not wait_group(proc, max(0.0, deadline - time.monotonic())):
            signal_group(proc, signal.SIGKILL)
            sent = "SIGKILL"
            wait_group(proc, grace_s)
    return sent


@dataclass
class WorkerRun:
    stdout: str  # all the worker wrote, also when it was killed (what it measured so far)
    returncode: int
    timed_out: bool


def run_worker(argv: list[str], *, stderr, env: dict[str, str], timeout_s: float,
               leftover_grace_s: float = 30.0) -> WorkerRun:
    """Run a worker script (an engine's Python: offline, accuracy) in a session of its own and
    return its stdout. The worker's exit is the end of the run: whatever it started and left
    behind — an engine core process, which holds the stdout pipe and the GPU — is ended with its
    group (SIGTERM, then SIGKILL after `leftover_grace_s`), so a leftover cannot keep the pipe
    open until the timeout. Past `timeout_s` the whole group gets SIGKILL. An interrupt (Ctrl-C,
    a time budget's SIGINT) kills the group and goes on."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr, text=True,
                            env=env, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc)
    except BaseException:
        kill_group(proc)
        raise
    stop_groups([proc], leftover_grace_s)
    # EOF comes once the group is gone; a process that left the group could still hold the
    # pipe: keep what came by then rather than wait for it
    reader.join(timeout=10.0)
    return WorkerRun("".join(lines), proc.returncode, timed_out)
