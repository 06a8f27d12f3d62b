"""Running the node-level checks on every node at once, and noticing a node that dies or hangs.

One `NodeRun` Ray actor per node, pinned there (NodeAffinitySchedulingStrategy, soft=False: a node
that is gone must fail its run, not move it elsewhere), starts `python -m pytest <the node's args>`
as a subprocess in a process group of its own, exactly as `pytest -m hardware` runs on one node —
with the node's own snapshot, profile and baselines — and reports the run's metrics.json, which the
plugin rewrites after every check. The driver polls every actor; a node whose actor dies (the node
or its worker gone) is reported with the last metrics it showed; one past the deadline is stopped
(its pytest's process group killed) and reported the same way; the others complete.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..physics.nccl import faults
from .guard import GRACE_S
from .nodes import FleetNode

LOG_TAIL_LINES = 40
STOP_TIMEOUT_S = GRACE_S + 20  # the driver's wait on stop(): the guard's grace and a margin
# ray.wait answers on a ready reference at once; this is only how long a silent actor is waited on
DEFAULT_POLL_S = 1.0


class NodeRun:
    """The node's side (a Ray actor): one pytest run of the node-level checks."""

    def __init__(self, python: str, repo: str, args: list[str], name: str, forwarded: dict[str, str] | None = None):
        self.workdir = Path(tempfile.mkdtemp(prefix=f"gpucert-fleet-{name}-"))
        self.report_dir = self.workdir / "report"
        self.log_path = self.workdir / "node.log"
        command = [python, "-m", "gpucert.fleet.guard", "--",
                   python, "-m", "pytest", "-c", str(Path(repo) / "pyproject.toml"),
                   # four runs of one checkout on one host would race on .pytest_cache
                   "-p", "no:cacheprovider", *args, "--report-dir", str(self.report_dir)]
        with open(self.log_path, "wb") as log:
            # a session of its own: stop() ends the run and everything it started with one killpg
            # the node's run knows its name in the fleet; `forwarded`: what the driver's environment
            # hands it (the self-tests' fault hook), over the node's own
            env = {**os.environ, **(forwarded or {}), faults.FLEET_NODE_ENV: name}
            self.proc = subprocess.Popen(command, cwd=repo, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.started = time.time()
        self.stopped_by: str | None = None

    def progress(self) -> dict[str, Any]:
        code = self.proc.poll()
        return {"state": "running" if code is None else "done", "exit_code": code, "host": socket.gethostname(),
                "workdir": str(self.workdir), "elapsed_s": round(time.time() - self.started, 1),
                "stopped_by": self.stopped_by, "metrics": self._metrics(), "log_tail": self._log_tail()}

    def stop(self, why: str = "stopped by the driver") -> dict[str, Any]:
        """End the run (the guard interrupts pytest, which keeps what it measured, then kills the
        group); kill the group here if the guard does not answer. Then the last progress."""
        if self.proc.poll() is None:
            self.stopped_by = why
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=GRACE_S + 5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        return self.progress()

    def _metrics(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.report_dir / "metrics.json").read_text())
        except (OSError, ValueError):  # not written yet (or mid-replace on a filesystem without rename)
            return None

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as log:
                return "".join(deque(log, maxlen=LOG_TAIL_LINES))
        except OSError:
            return ""


@dataclass
class NodeOutcome:
    """How one node's run ended, with the last progress it showed (its metrics.json, its log)."""

    node: FleetNode
    state: str = "running"  # completed | crashed | died | hung | running
    reason: str = ""
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.last.get("metrics")

    @property
    def log_tail(self) -> str:
        return self.last.get("log_tail") or ""

    def as_dict(self) -> dict[str, Any]:
        return {**self.node.as_dict(), "state": self.state, "reason": self.reason,
                "exit_code": self.last.get("exit_code"), "elapsed_s": self.last.get("elapsed_s"),
                "workdir": self.last.get("workdir")}


def run_fleet(nodes: list[FleetNode], *, python: str, repo: str, args: list[str], deadline_s: float,
              poll_s: float = DEFAULT_POLL_S,
              on_poll: Callable[[dict[str, NodeOutcome]], None] | None = None) -> dict[str, NodeOutcome]:
    """Start every node's run at once and poll them until each has ended, died or passed the deadline."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # num_cpus=0: the actor only waits on its subprocess; num_gpus=all of the node's: Ray hands the
    # node's GPUs to the run (CUDA_VISIBLE_DEVICES) and schedules no other Ray work on them meanwhile
    actor_class = ray.remote(num_cpus=0, max_restarts=0, max_concurrency=2)(NodeRun)
    outcomes = {node.name: NodeOutcome(node) for node in nodes}
    actors = {node.name: actor_class.options(
        num_gpus=node.gpus, scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
    ).remote(python, repo, args, node.name, faults.forwarded_environment()) for node in nodes}
    deadline = time.monotonic() + deadline_s
    try:
        while active := [name for name, outcome in outcomes.items() if outcome.state == "running"]:
            _poll_once(actors, outcomes, active, poll_s)
            if time.monotonic() >= deadline:
                _stop_hung(actors, outcomes, deadline_s)
            if on_poll is not None:
                on_poll(outcomes)
    finally:
        for actor in actors.values():  # the guard ends each run's process group with its actor
            ray.kill(actor, no_restart=True)
    return outcomes


def _poll_once(actors: dict, outcomes: dict[str, NodeOutcome], active: list[str], poll_s: float) -> None:
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError

    started = time.monotonic()
    refs = {actors[name].progress.remote(): name for name in active}
    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=poll_s)
    for ref in ready:
        outcome = outcomes[refs[ref]]
        try:
            outcome.last = ray.get(ref)
        except ActorUnavailableError:
            continue  # a transient loss of contact: asked again next round, until the deadline
        except RayActorError as exc:
            outcome.state, outcome.reason = "died", _died_reason(exc, outcome)
            continue
        if outcome.last["state"] == "done":
            outcome.state, outcome.reason = _ended(outcome.last)
    time.sleep(max(0.0, poll_s - (time.monotonic() - started)))


def _ended(progress: dict[str, Any]) -> tuple[str, str]:
    """completed: pytest ran to its end and wrote the final metrics.json (exit 0 certified, 1 a
    check failed, 6 not certified); anything else crashed, with the log's last line as the reason."""
    code = progress.get("exit_code")
    status = (progress.get("metrics") or {}).get("status")
    if code in (0, 1, 6) and status == "complete":
        return "completed", f"the node's run completed (exit {code})"
    last_line = next((line for line in reversed(progress.get("log_tail", "").splitlines()) if line.strip()), "")
    return "crashed", (f"the node's pytest ended with exit {code} (metrics.json status {status or 'absent'})"
                       + (f": {last_line.strip()[:300]}" if last_line else ""))


def _died_reason(exc: Exception, outcome: NodeOutcome) -> str:
    # Ray's own words say why (the node died, the worker was killed, out of memory), over lines
    said = " ".join(str(exc).split()) or type(exc).__name__
    measured = _checks_done(outcome.metrics)
    return (f"the node's actor died ({type(exc).__name__}: {said[:400]}); "
            f"{measured} check(s) had ended before, their metrics kept")


def _stop_hung(actors: dict, outcomes: dict[str, NodeOutcome], deadline_s: float) -> None:
    """Stop every run still going, all at once (each stop waits out its run's grace)."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    why = f"still running at the fleet deadline ({deadline_s:g} s)"
    stops = {name: actors[name].stop.remote(why) for name, o in outcomes.items() if o.state == "running"}
    until = time.monotonic() + STOP_TIMEOUT_S
    for name, ref in stops.items():
        outcome = outcomes[name]
        try:
            outcome.last = ray.get(ref, timeout=max(1.0, until - time.monotonic())) or outcome.last
        except (GetTimeoutError, RayActorError):
            pass  # the actor itself does not answer: killed with the others in run_fleet's finally
        started = "never started (its actor was not placed)" if not outcome.last else \
            f"{_checks_done(outcome.metrics)} check(s) had ended, their metrics kept"
        outcome.state, outcome.reason = "hung", f"{why}: stopped; {started}"


def _checks_done(metrics: dict[str, Any] | None) -> int:
    checks = (metrics or {}).get("checks") or []
    return sum(1 for check in checks if check.get("outcome") not in (None, "pending"))
