"""What a person watching a certification sees and what the run leaves behind about its course:
a line per check family with the time spent and left, the run's wall-clock budget, and Python
logging into the report folder (`gpucert.log`: engine start/stop, each check's verdict).

The budget: a check that would start after it is skipped with that reason (the card lists it);
one still running at the budget plus a grace period is interrupted as Ctrl-C would (what it
measured is kept, marked incomplete; the engine is stopped by its fixture's teardown).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from . import redaction

LOG_NAME = "gpucert.log"
LOCK_NAME = ".gpucert-run.lock"
log = logging.getLogger("gpucert")


def take_back_sigint() -> bool:
    """Python's Ctrl-C handler where SIGINT was ignored (True then). A shell without job control
    starts a background job (`make certify &` in a script, nohup) with SIGINT ignored, and an
    ignored signal stays ignored across exec; a handler, unlike SIG_IGN, resets on exec, so the
    processes started after this get the default again. Main thread only."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return True


class ReportDirError(ValueError):
    """The report folder is taken by another run, or cannot be written: bad input, one line."""


def claim_report_dir(report_dir: Path) -> int:
    """Take the report folder for this run (an exclusive flock held until the process ends, or
    `release_report_dir`): two runs writing one folder would interleave gpucert.log and overwrite
    each other's metrics.json and card. A second run is refused, naming the holder's pid. The
    pid is written and synced now, so a full disk stops the run before it measures anything it
    could not keep."""
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(report_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        raise ReportDirError(f"report folder {report_dir} cannot be used: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise ReportDirError(f"report folder {report_dir} is in use by another run (pid {holder}); "
                             "give this run its own --report-dir") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        raise ReportDirError(f"report folder {report_dir} cannot be written: {exc.strerror or exc}") from None
    return fd


def release_report_dir(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)


class _KeepGoingFileHandler(logging.FileHandler):
    """gpucert.log on a disk that fills up: logging's default prints a traceback to stderr for
    every record that fails; this keeps the first error (the run reports it once) and goes on."""

    failure: str | None = None

    def handleError(self, record: logging.LogRecord) -> None:
        if self.failure is None:
            exc = sys.exc_info()[1]
            self.failure = f"{LOG_NAME} could not be written: {getattr(exc, 'strerror', None) or exc}"


def grace_s(budget_s: float) -> float:
    """How long a check may overrun the budget before it is interrupted: a serving level at
    4,096 streams takes minutes, so a tenth of the budget, at least one minute."""
    return max(60.0, 0.1 * budget_s)


def duration_text(seconds: float | None) -> str:
    """A duration as every gpucert output writes it (terminal, card, log): "5.2 s", "4 min 05 s"."""
    if seconds is None:
        return "—"
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    return f"{whole // 60} min {whole % 60:02d} s"


class Progress:
    def __init__(self, budget_min: float | None, write_line=None):
        self.started = time.monotonic()
        self.budget_s = budget_min * 60 if budget_min else None
        self.write_line = write_line or (lambda text: None)
        self.family: str | None = None
        self.skipped: list[str] = []
        self.interrupted_at_s: float | None = None
        self._timer: threading.Timer | None = None
        self._handler: logging.Handler | None = None

    # ---- the budget --------------------------------------------------------------------------
    def start(self) -> None:
        """The clock starts with the first check (after collection and the stack snapshot)."""
        self.started = time.monotonic()
        if self.budget_s is not None and self._timer is None:
            # the budget stops the check in flight with SIGINT: in a background job, where it is
            # ignored, the budget would never stop anything (pytest's main thread, first check)
            if take_back_sigint():
                log.info("SIGINT was ignored (a background job): restored, so the time budget can stop a check")
            self._timer = threading.Timer(max(self.budget_s + grace_s(self.budget_s) - self.elapsed_s(), 0.0),
                                          self._interrupt)
            self._timer.daemon = True
            self._timer.start()

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def over_budget(self) -> bool:
        return self.budget_s is not None and self.elapsed_s() >= self.budget_s

    def skip_reason(self, check_id: str) -> str:
        self.skipped.append(check_id)
        return (f"time budget: {self.budget_s / 60:g} min spent before this check "
                f"({duration_text(self.elapsed_s())} elapsed); raise --time-budget-min to run it")

    def _interrupt(self) -> None:
        """The main thread gets SIGINT: pytest stops as after Ctrl-C and still writes the card."""
        self.interrupted_at_s = self.elapsed_s()
        log.error("time budget of %g min plus %.0f s grace spent: interrupting the check in flight",
                  self.budget_s / 60, grace_s(self.budget_s))
        os.kill(os.getpid(), signal.SIGINT)

    def stop(self) -> dict[str, Any]:
        if self._timer is not None:
            self._timer.cancel()
        return {"budget_min": self.budget_s / 60 if self.budget_s else None,
                "grace_s": grace_s(self.budget_s) if self.budget_s else None,
                "elapsed_s": round(self.elapsed_s(), 1), "skipped": list(self.skipped),
                "interrupted_at_s": None if self.interrupted_at_s is None else round(self.interrupted_at_s, 1)}

    # ---- what a person sees -------------------------------------------------------------------
    def announce(self, family: str, checks: int) -> None:
        """One line when a new check family starts: which, how many, time spent and left."""
        if family == self.family:
            return
        self.family = family
        left = f", {duration_text(self.budget_s - self.elapsed_s())} of the budget left" if self.budget_s else ""
        line = f"gpucert ▸ {family}: {checks} check(s) · {duration_text(self.elapsed_s())} elapsed{left}"
        self.write_line(line)
        log.info(line.removeprefix("gpucert ▸ "))

    # ---- the log file -------------------------------------------------------------------------
    def open_log(self, report_dir: Path) -> Path:
        """gpucert's loggers (plugin, engine lifecycle, monitor) into <report-dir>/gpucert.log."""
        report_dir.mkdir(parents=True, exist_ok=True)
        path = report_dir / LOG_NAME
        if self._handler is None:
            self._handler = _KeepGoingFileHandler(path, encoding="utf-8")
            self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            # by value, on the handler: a record of any gpucert logger, and its traceback, may
            # quote a server's answer with the key in it
            self._handler.addFilter(redaction.RedactingFilter())
            log.addHandler(self._handler)
            if log.level == logging.NOTSET or log.level > logging.INFO:
                log.setLevel(logging.INFO)
        return path

    @property
    def log_failure(self) -> str | None:
        """Why gpucert.log is incomplete (a full disk), or None."""
        return self._handler.failure if self._handler is not None else None

    def close_log(self) -> None:
        if self._handler is not None:
            log.removeHandler(self._handler)
            try:
                self._handler.close()
            except OSError:  # the last flush on a full disk: already reported as log_failure
                pass
            self._handler = None
