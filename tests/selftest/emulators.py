"""`gpucert emulator` as a real server process on 127.0.0.1 for the self-tests, and a liveness
probe for processes the tests expect to end."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from types import SimpleNamespace

from gpucert.serving.vllm_server import free_port, health_ok


@contextlib.contextmanager
def emulator_process(*args: str, timeout_s: float = 20.0):
    """Start `gpucert emulator --port <free> ARGS`, wait for /health, yield (v1_url, proc, port),
    terminate it after."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "gpucert.cli", "emulator", "--port", str(port), *args],
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not health_ok(f"http://127.0.0.1:{port}", timeout=1.0):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the emulator did not start: gpucert emulator {' '.join(args)}")
            time.sleep(0.05)
        yield SimpleNamespace(v1_url=f"http://127.0.0.1:{port}/v1", proc=proc, port=port)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def process_alive(pid: int) -> bool:
    """Running, not a zombie (an exited process its parent has not reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not process_alive(pid)
