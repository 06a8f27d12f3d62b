"""The verdict in words (gpucert.certification) in real pytest sessions (pytester): the last line of
the terminal and the card's heading say whether the node is certified, and `--certify` (what
`make certify` and `make nightly` pass) turns "not certified" into a non-zero exit — also when
checks it needs could not run — while pytest's own exit codes keep their meanings."""

import json

import pytest

from gpucert import certification
from gpucert.report import card
from gpucert.progress import duration_text

from . import device_runs
from .test_plugin import TOY  # two sizes of a toy GEMM check, its value from value.txt

PAIR = '''
import pathlib
import pytest
from gpucert.certification import not_applicable

@pytest.mark.hardware
def test_pair(gpucert):
    how = pathlib.Path(__file__).with_name("pair.txt").read_text()
    if how == "moot":
        pytest.skip(not_applicable("P2P needs ≥ 2 GPUs, found 1 (this node's shape)"))
    if how == "absent":
        pytest.skip("no CUDA device: PyTorch 2.13.0+cpu is a CPU build")
    if how == "broken":
        raise RuntimeError("the copy engine hung")
    gpucert.record("gbps", 400.0, unit="GB/s", samples=[400.0] * 5)
'''

THRESHOLDS = '''
schema_version: 1
defaults: {rel_tol: 0.05, warn_rel: 0.02, min_samples: 3}
rules:
  - {check: toy, metric: tflops, direction: higher, rel_tol: 0.10, warn_rel: 0.03}
  - {check: pair, metric: gbps, direction: higher}
'''


@pytest.fixture
def node(pytester):
    pytester.makepyfile(test_toy=TOY, test_pair=PAIR)
    pytester.makefile(".yaml", thresholds=THRESHOLDS)

    def run(*args, value=100, pair="ok"):
        pytester.path.joinpath("value.txt").write_text(str(value))
        pytester.path.joinpath("pair.txt").write_text(pair)
        report_dir = pytester.path / f"report-{len(list(pytester.path.glob('report-*')))}"
        result = pytester.runpytest("-p", "no:cacheprovider", "--profile", "toy-node", "--report-dir", str(report_dir),
                                    *args)
        result.data = json.loads((report_dir / "metrics.json").read_text())
        result.html = (report_dir / "report.html").read_text()
        result.last = [line for line in result.outlines if line.strip()][-1]
        return result

    return run


def test_a_node_that_ran_every_check_without_a_regression_is_certified(node):
    node("--update-baselines")
    run = node("--certify")
    assert run.last == "gpucert: CERTIFIED toy-node — 3 checks, 0 regressions"
    assert run.ret == 0 and run.data["certification"]["certified"] is True
    assert 'id="certification" class="certification certified">CERTIFIED toy-node — 3 checks, 0 regressions<' in run.html
    assert '<span class="verdict big v-pass">certified</span>' in run.html  # the badge is the certification


@pytest.mark.fault("certification", "a check skipped because the node has too few GPUs for it (P2P on one GPU)",
                   "CERTIFIED, the line counting it 'not applicable here'; exit 0 under --certify")
def test_a_check_the_nodes_shape_makes_moot_does_not_count_against_it(node):
    node("--update-baselines")
    run = node("--certify", pair="moot")
    assert run.last == "gpucert: CERTIFIED toy-node — 2 checks, 0 regressions, 1 not applicable here"
    assert run.ret == 0


@pytest.mark.fault("certification", "a check that could not run here (no CUDA device), the rest passing",
                   "NOT CERTIFIED '1 of 3 checks could not run here (no CUDA device)' as the last line; "
                   "exit 6 under --certify, pytest's 0 without it")
def test_checks_that_could_not_run_leave_the_node_not_certified(node):
    node("--update-baselines")
    run = node("--certify", pair="absent")
    assert run.last == "gpucert: NOT CERTIFIED toy-node — 1 of 3 checks could not run here (no CUDA device)"
    assert run.ret == certification.EXIT_NOT_CERTIFIED == 6
    assert run.data["certification"] == {**run.data["certification"], "certified": False, "not_run": 1}
    assert "not-certified" in run.html
    plain = node(pair="absent")  # without --certify: pytest's meaning (skips pass), the line still said
    assert plain.ret == 0 and plain.last.startswith("gpucert: NOT CERTIFIED")


@pytest.mark.fault("certification", "a planted regression (-30 % against the baseline) and a check whose body raised",
                   "NOT CERTIFIED naming the regression (check::metric) and the failed check; pytest's exit 1")
def test_a_regression_is_named_and_keeps_pytests_exit_code(node):
    node("--update-baselines")
    run = node("--certify", value=70, pair="broken")
    assert run.last == ("gpucert: NOT CERTIFIED toy-node — 2 regression(s): toy[size=1024]::tflops, "
                        "toy[size=4096]::tflops; 1 check(s) failed: pair")
    assert run.ret == 1


def test_the_line_names_at_most_three_and_counts_the_rest():
    checks = [{"check_id": f"c{i}", "verdict": "fail", "outcome": "failed",
               "metrics": [{"metric": "m", "verdict": "fail"}]} for i in range(5)]
    decided = certification.decide({"status": "complete", "profile": "p", "checks": checks})
    assert decided["line"] == "NOT CERTIFIED p — 5 regression(s): c0::m, c1::m, c2::m and 2 more"
    assert certification.decide({"status": "interrupted", "profile": "p", "checks": []})["line"] == \
        "NOT CERTIFIED p — run interrupted; no check ran"
    assert certification.exit_status(2, {"certified": False}) == 2  # pytest's own code stands


def test_a_run_of_studies_alone_does_not_claim_a_certification():
    """make study measures settings; its verdict keeps the same arithmetic in its own words."""
    study = [{"check_id": "batching[p-c1]", "verdict": "pass", "outcome": "passed", "markers": ["study"], "metrics": []}]
    decided = certification.decide({"status": "complete", "profile": "p", "checks": study})
    assert decided["line"] == "STUDY PASSED p — 1 checks, 0 regressions"
    assert decided["badge"] == "study passed"  # the card's badge: not "certified" (it was, until session 22)
    broken = [{**study[0], "verdict": "fail", "outcome": "failed", "metrics": [{"metric": "output_tok_s", "verdict": "fail"}]}]
    decided = certification.decide({"status": "complete", "profile": "p", "checks": broken})
    assert decided["line"] == "STUDY FAILED p — 1 regression(s): batching[p-c1]::output_tok_s"
    assert decided["badge"] == "study failed"
    mixed = study + [{"check_id": "stack", "verdict": "pass", "outcome": "passed", "markers": ["hardware"], "metrics": []}]
    assert certification.decide({"status": "complete", "profile": "p", "checks": mixed})["line"].startswith("CERTIFIED p")


def test_one_duration_everywhere_and_skips_grouped_by_reason(node):
    """The run's duration is one figure in metrics.json, the card and the terminal; the card's
    skipped checks are one row per reason with the ids folded; empty sections are left out."""
    run = node(pair="absent")
    took = duration_text(run.data["duration_s"])
    assert f"· took {took}" in run.html
    assert any(line.startswith(f"the run took {took}") for line in run.outlines), run.outlines[-8:]
    assert "<th>reason</th><th>checks</th>" in run.html and "<summary>1 check(s)</summary><code>pair</code>" in run.html
    assert 'id="regressions"' not in run.html  # nothing regressed: no empty table
    moot = node(pair="moot")
    assert "does not apply to this node" in moot.html and "(1 do not apply to this node's shape)" in moot.html


@pytest.mark.fault("terminal", "pytest -q: a family's progress line after the previous family's dots",
                   "the line stands on its own line (not glued to the dots)")
def test_progress_lines_stand_on_their_own_line_under_q(node):
    run = node("-q")
    assert any(line.startswith("gpucert ▸ pair: 1 check(s)") for line in run.outlines), run.outlines
    assert any(line.startswith("gpucert ▸ toy: 2 check(s)") for line in run.outlines), run.outlines


def test_a_serving_table_of_skipped_levels_is_left_out():
    from gpucert.report import card
    skipped = [{"check": name, "params": {"concurrency": str(c)}, "outcome": "skipped", "verdict": "skipped", "metrics": []}
               for name in ("serving_baseline", "offline_throughput") for c in (1, 16)]
    assert card.serving_view({"checks": skipped}) is None
    ran = [{**skipped[0], "outcome": "passed", "verdict": "new", "metrics": [{"metric": "output_tok_s", "value": 400.0}]}] + skipped[1:]
    assert card.serving_view({"checks": ran}) is not None


def test_a_study_card_from_before_the_badge_says_its_own_words():
    """The H100's batching study (session 22) stored its certification without `badge`, and its
    card's badge read "certified" over the STUDY PASSED line; rendered again it says so."""
    data = device_runs.load(device_runs.STUDY_BATCHING)
    assert "badge" not in data["certification"] and data["certification"]["line"].startswith("STUDY PASSED")
    html = card.render(data)
    assert '<span class="verdict big v-pass">study passed</span>' in html
    assert ">certified</span>" not in html
