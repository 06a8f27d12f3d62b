"""Ties a node's pytest run to the life of the Ray actor that started it, and ends it cleanly.

The actor starts `python -m gpucert.fleet.guard -- <command>` in a process group of its own; the
guard runs the command in that group. When its parent (the actor's worker) dies — the node
removed, the worker killed — or the actor asks it to stop (SIGTERM: the run is past the fleet's
deadline), it interrupts the run (SIGINT: pytest records what it measured as interrupted and ends
the NCCL ranks and engines it started, which run in sessions of their own), gives it GRACE_S, then
kills the whole group. Without it an orphaned run would go on holding the node's GPUs. (A
SIGKILLed parent cannot clean up after itself, hence a watcher on the child's side.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

POLL_S = 0.5
GRACE_S = 15.0


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        sys.stderr.write("usage: python -m gpucert.fleet.guard -- COMMAND [ARG ...]\n")
        return 2
    parent = os.getppid()
    asked: list[str] = []
    signal.signal(signal.SIGTERM, lambda *_: asked.append("the driver stopped the run"))
    # a Ray worker runs with SIGINT ignored or blocked, and exec passes both on: the run must get
    # it back, or the interrupt below would wait out the grace and end in SIGKILL
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    child = subprocess.Popen(argv[1:])  # same process group as the guard: one killpg ends both
    while True:
        code = child.poll()
        if code is not None:
            return code
        if asked or os.getppid() != parent:
            end(child, asked[0] if asked else "the Ray actor that started this run died")
        time.sleep(POLL_S)


def end(child: subprocess.Popen, why: str) -> None:
    sys.stderr.write(f"gpucert fleet guard: {why}; interrupting the run\n")
    sys.stderr.flush()
    child.send_signal(signal.SIGINT)
    try:
        child.wait(timeout=GRACE_S)
    except subprocess.TimeoutExpired:
        pass
    os.killpg(0, signal.SIGKILL)  # the guard too: what is left of the group goes with it


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
