"""The run's verdict in words: is this node certified? (judge → report)

A node is CERTIFIED when the run completed, no check regressed or stopped half-way, and every
check that applies to the node ran. Warnings and metrics without a baseline do not stop it (the
line counts them). A check skipped because the node's shape makes it moot — P2P or NCCL on a
node of one GPU — does not count against it: its skip reason starts with NOT_APPLICABLE. Any
other skip (no CUDA device, no vLLM, the time budget) means the check could not run here, and
nothing about it is certified.

Exit status of a run given `--certify` (`make certify`, `make nightly`): pytest's own meanings
are kept — 0 certified, 1 a check failed (a regression), 2 interrupted, 3 internal error, 4 bad
input, 5 nothing collected — and EXIT_NOT_CERTIFIED where pytest would have said 0 but the node
is not certified (checks it needs could not run, or ran incomplete).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

NOT_APPLICABLE = "not applicable: "
EXIT_NOT_CERTIFIED = 6
# the few ids a line names before it says how many more
_NAMED = 3
# runs of one kind that certify nothing by themselves: their verdict's words
RUN_WORDS = {"study": ("STUDY PASSED", "STUDY FAILED"), "forensics": ("FORENSICS PASSED", "FORENSICS FAILED"),
             "burnin": ("BURN-IN PASSED", "BURN-IN FAILED"),
             # the driver of a fleet run judges the nodes, not the machine it runs on
             "fleet": ("FLEET PASSED", "FLEET FAILED")}

def not_applicable(reason: str) -> str:
    """A skip reason that does not count against certification (the node's shape makes it moot)."""
    return NOT_APPLICABLE + reason


def _names(ids: list[str]) -> str:
    more = len(ids) - _NAMED
    return ", ".join(ids[:_NAMED]) + (f" and {more} more" if more > 0 else "")


def _cause(reason: str) -> str:
    """A skip reason's cause: the part before its first ': ' or ' (' ("no CUDA device: PyTorch … is
    a CPU build" → "no CUDA device"), at most 100 characters."""
    cause = re.split(r": | \(", reason, maxsplit=1)[0].strip() or reason
    return cause if len(cause) <= 100 else cause[:99] + "…"


def _main_reasons(reasons: list[str]) -> str:
    """The two most common causes among the skip reasons, then how many others."""
    causes = [cause for cause, _ in Counter(_cause(r) for r in reasons).most_common()]
    return "; ".join(causes[:2]) + (f"; {len(causes) - 2} other cause(s)" if len(causes) > 2 else "")


def decide(data: dict[str, Any]) -> dict[str, Any]:
    """{certified, line, badge, regressions, incomplete, not_run, not_applicable, warnings}: `line`
    is the verdict as the terminal's last line and the card's heading show it, `badge` its first
    words ("certified", "study failed")."""
    checks = data.get("checks") or []
    node = data.get("profile") or "this node"
    failed = [c for c in checks if c.get("verdict") == "fail"]
    incomplete = [c for c in checks if c.get("verdict") == "incomplete"]
    skipped = [c for c in checks if c.get("outcome") == "skipped"]
    moot = [c for c in skipped if str(c.get("message") or "").startswith(NOT_APPLICABLE)]
    not_run = [c for c in skipped if not str(c.get("message") or "").startswith(NOT_APPLICABLE)]
    ran = len(checks) - len(skipped)
    warned = sum(1 for c in checks if c.get("verdict") == "warn")
    new = (data.get("metric_counts") or {}).get("new", 0)
    status = data.get("status")

    problems = []
    # a regression: a metric judged fail; a check that failed with none (its body raised) failed
    regressed = {c["check_id"]: next((m["metric"] for m in c.get("metrics") or [] if m.get("verdict") == "fail"), None)
                 for c in failed}
    named = [f"{check}::{metric}" for check, metric in regressed.items() if metric]
    broken = [check for check, metric in regressed.items() if not metric]
    if named:
        problems.append(f"{len(named)} regression(s): {_names(named)}")
    if broken:
        problems.append(f"{len(broken)} check(s) failed: {_names(broken)}")
    if incomplete:
        problems.append(f"{len(incomplete)} check(s) incomplete: {_names([c['check_id'] for c in incomplete])}")
    if not_run:
        problems.append(f"{len(not_run)} of {len(checks)} checks could not run here "
                        f"({_main_reasons([str(c.get('message') or 'no reason given') for c in not_run])})")
    if status != "complete":
        problems.insert(0, "run in progress" if status == "running" else f"run {status}")
    if not checks:
        problems.append("no check ran")
    certified = not problems
    # a run of studies, trace captures or a burn-in alone (make study, forensics, burnin) does not
    # certify the node: the same verdict, in words that do not claim a certification
    passed, failed_word = "CERTIFIED", "NOT CERTIFIED"
    for marker, words in RUN_WORDS.items():
        if checks and all(marker in (c.get("markers") or []) for c in checks):
            passed, failed_word = words
    if certified:
        extras = [f"{warned} warning(s)" if warned else "",
                  f"{len(moot)} not applicable here" if moot else "",
                  f"{new} metric(s) without a baseline (judged on absolute limits)" if new else ""]
        line = f"{passed} {node} — {ran} checks, 0 regressions" + "".join(f", {e}" for e in extras if e)
    else:
        line = f"{failed_word} {node} — " + "; ".join(problems)
    # the card's badge says the same words: a study's card is not a certificate either
    return {"certified": certified, "line": line, "badge": (passed if certified else failed_word).lower(),
            "regressions": len(named), "failed": len(broken),
            "incomplete": len(incomplete),
            "not_run": len(not_run), "not_applicable": len(moot), "warnings": warned}


def exit_status(pytest_status: int, certification: dict[str, Any]) -> int:
    """The run's exit status under --certify: pytest's own where it is not 0, else 0 or
    EXIT_NOT_CERTIFIED."""
    if pytest_status != 0:
        return pytest_status
    return 0 if certification.get("certified") else EXIT_NOT_CERTIFIED
