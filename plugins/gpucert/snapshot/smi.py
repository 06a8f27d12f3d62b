"""Running nvidia-smi: argument lists, a timeout, and a failure reason instead of exceptions."""

from __future__ import annotations

import shutil
import subprocess

QUERY = ("-q",)
QUERY_XML = ("-q", "-x")  # the same as XML (nvsmi_device_v*.dtd), read first where it works
TOPOLOGY = ("topo", "-m")
NVLINK_STATUS = ("nvlink", "-s")
TIMEOUT_S = 60  # -q on an 8-GPU node with persistence off can take tens of seconds


class SmiUnavailable(RuntimeError):
    """nvidia-smi failed; `fatal` when no other nvidia-smi command can work either (missing,
    hanging, no driver), as opposed to one subcommand this GPU does not support."""

    def __init__(self, message: str, fatal: bool = True):
        super().__init__(message)
        self.fatal = fatal


def run(args: tuple[str, ...], timeout_s: float = TIMEOUT_S) -> str:
    executable = shutil.which("nvidia-smi")
    if executable is None:
        raise SmiUnavailable("nvidia-smi not on PATH")
    command = " ".join(("nvidia-smi", *args))
    try:
        done = subprocess.run([executable, *args], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as err:
        raise SmiUnavailable(f"{command} timed out after {timeout_s:g} s") from err
    except OSError as err:
        raise SmiUnavailable(f"{command} could not run: {err}") from err
    if done.returncode != 0:
        # nvidia-smi writes "NVIDIA-SMI has failed because it couldn't communicate with the
        # NVIDIA driver" to stdout; that one means no command will work.
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        first = lines[0] if lines else ""
        raise SmiUnavailable(f"{command} exited {done.returncode}" + (f": {first}" if first else ""),
                             fatal="driver" in first.lower())
    return done.stdout


class Session:
    """Runs nvidia-smi commands, remembering failures; after a fatal one it stops trying, so a
    missing nvidia-smi costs one note and no repeated timeouts."""

    def __init__(self, runner=run):
        self.runner = runner
        self.failures: list[str] = []
        self.dead = False

    def get(self, args: tuple[str, ...]) -> str | None:
        if self.dead:
            return None
        try:
            return self.runner(args)
        except SmiUnavailable as err:
            self.failures.append(str(err))
            self.dead = err.fatal
            return None
