"""Ending what gpucert started. Every engine it starts runs in a session of its own
(`start_new_session=True`): its process group is the child and all it started — vLLM's workers,
an NCCL rank's helpers, Chromium's renderers. Ending the group, not the child, is what gives the
GPUs back; one set of helpers for the server, the NCCL ranks, the offline worker and the self-tests'
browser (tests/selftest/browser.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import time


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
