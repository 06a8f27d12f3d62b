"""The fault catalogue: self-tests that plant a fault for real say so with a marker, and
`pytest tests/selftest -m fault --fault-table FILE` writes the table of every fault tried and how
it ended (docs/evidence/issue-13-faults/).

    @pytest.mark.fault("secrets", "the server echoes the API key in a 401 body",
                       "redacted in stdout, gpucert.log, metrics.json, report.html, junit.xml, metrics.prom")

A parametrized test marks each case (`pytest.param(..., marks=pytest.mark.fault(...))`), so one
row is one fault. The row's ending is what the test asserts; a row whose test failed is BROKEN,
one whose test was skipped is UNCLEAR (nothing was shown either way).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gpucert.progress import take_back_sigint

_FAULT_PROPERTY = "gpucert_fault"


@pytest.fixture(autouse=True)
def _secrets_of_this_test_only():
    """Each self-test's secrets in a redaction scope of their own, forgotten after it: an engine a
    test started with a key registers it for the process, and a later test on the same xdist
    worker that checks `redaction.active()` would find it (seen in CI: the loadgen secrets test
    after the engine lifecycle's)."""
    from gpucert import redaction

    depth = redaction.push_scope()
    yield
    redaction.pop_scope(depth)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--fault-table", default=None, metavar="FILE",
                     help="write the markdown table of the fault-planting self-tests (marker `fault`) and how each ended")


def pytest_configure(config: pytest.Config) -> None:
    # launched as a background job (`make test &`), every process the self-tests start would
    # inherit an ignored SIGINT and shrug off the real Ctrl-C the interrupt self-tests send
    take_back_sigint()
    config.addinivalue_line("markers", "fault(area, planted, ending): this self-test plants a fault for real "
                                       "and asserts how it ends (one row of the fault table)")
    config.addinivalue_line("markers", "slow(why): a heavy self-test (a real Ray cluster, the real CPU model, a "
                                       "long emulator run): `make test-slow`, not `make test`; CI runs both")
    if not hasattr(config, "workerinput"):  # an xdist worker sees only its share: its reports go to the controller
        config.pluginmanager.register(FaultTable(config.getoption("--fault-table")), "gpucert-fault-table")


def _fault(item: pytest.Item):
    marker = item.get_closest_marker("fault")
    if marker is None:
        return None
    if len(marker.args) != 3:
        raise pytest.UsageError(f"{item.nodeid}: fault marker needs (area, planted, ending), got {marker.args!r}")
    return marker.args


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    """The fault rides on each phase's report (as a user property, which xdist carries from its
    workers to the controller): the table is written where every report arrives."""
    report = yield
    fault = _fault(item)
    if fault is not None:
        callspec = getattr(item, "callspec", None)
        planted = fault[1] + (f" (case `{callspec.id}`)" if callspec is not None else "")
        # a new list: the report's is the item's own, which each phase would extend again
        report.user_properties = [*report.user_properties, (_FAULT_PROPERTY, (fault[0], planted, fault[2]))]
    return report


class FaultTable:
    """Collects a row per fault test from the reports, where every report arrives (the one
    process, or xdist's controller), and writes the table at the session's end."""

    def __init__(self, target: str | None):
        self.target = target
        self.rows: dict[str, dict] = {}  # node id → its row

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        fault = dict(report.user_properties).get(_FAULT_PROPERTY)
        if fault is None:
            return
        area, planted, ending = fault
        row = self.rows.setdefault(report.nodeid, {"nodeid": report.nodeid, "area": area, "planted": planted,
                                                   "ending": ending, "result": "survived"})
        if report.failed:
            row["result"] = "BROKEN"
        elif report.skipped and row["result"] == "survived":
            row["result"] = "UNCLEAR (skipped)"

    def pytest_sessionfinish(self) -> None:
        rows = list(self.rows.values())
        if not self.target or not rows:
            return
        counts = {r: sum(row["result"].split()[0] == r for row in rows) for r in ("survived", "BROKEN", "UNCLEAR")}
        lines = [
            "# Faults planted by the self-tests, and how each ended",
            "",
            f"{len(rows)} faults and bad inputs: {counts['survived']} survived as stated, {counts['BROKEN']} broken, "
            f"{counts['UNCLEAR']} unclear. Written by `pytest tests/selftest -m fault --fault-table FILE`: "
            "each row is a self-test that plants the fault for real and asserts the ending.",
            "",
            "| # | area | fault planted | how it must end | result | self-test |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for i, row in enumerate(sorted(rows, key=lambda r: (r["area"], r["nodeid"])), 1):
            cells = [str(i), row["area"], row["planted"], row["ending"], row["result"],
                     f"`{row['nodeid'].split('[')[0]}`"]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        Path(self.target).parent.mkdir(parents=True, exist_ok=True)
        Path(self.target).write_text("\n".join(lines) + "\n")
