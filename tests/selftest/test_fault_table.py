"""The fault table (tests/selftest/conftest.py): one row per fault-planting self-test, however the
run is spread over processes."""

from __future__ import annotations

from pathlib import Path

import pytest

SELFTEST_CONFTEST = Path(__file__).with_name("conftest.py")


@pytest.mark.parametrize("processes", [[], ["-n", "2"]], ids=["one-process", "two-xdist-workers"])
@pytest.mark.slow("child pytest sessions")
def test_the_fault_table_has_every_fault_however_the_run_is_spread(pytester, processes):
    """Under xdist each worker saw only its share of the tests, and each wrote the table over the
    last: a run on two workers once wrote 205 of 292 rows, saying nothing. The controller, which
    every report reaches, writes it now."""
    pytester.makeconftest(SELFTEST_CONFTEST.read_text())
    cases = ", ".join(f'pytest.param({i}, marks=pytest.mark.fault("area{i % 2}", "fault {i}", "ends {i}"))'
                      for i in range(8))
    pytester.makepyfile(test_planted=f"""
        import pytest

        @pytest.mark.parametrize("i", [{cases}])
        def test_fault(i):
            assert i != 5, "the fault was not caught"

        @pytest.mark.fault("area0", "a skipped fault", "unknown")
        def test_skipped():
            pytest.skip("nothing shown")

        def test_not_a_fault():
            pass
    """)
    table = pytester.path / "faults.md"
    result = pytester.runpytest_subprocess(*processes, "-p", "no:cacheprovider", f"--fault-table={table}")
    result.assert_outcomes(passed=8, failed=1, skipped=1)
    rows = [line for line in table.read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 9, rows
    assert sorted(int(row.split("|")[1]) for row in rows) == list(range(1, 10))
    results = {row.split("|")[3].strip(): row.split("|")[5].strip() for row in rows}
    assert results["fault 5 (case `5`)"] == "BROKEN"
    assert results["a skipped fault"] == "UNCLEAR (skipped)"
    assert sum(r == "survived" for r in results.values()) == 7
    assert "9 faults and bad inputs: 7 survived as stated, 1 broken, 1 unclear" in table.read_text()
