"""Between-run noise and judging by meaning, in real pytest sessions (pytester) under the shipped
thresholds.yaml: baselines built from several `--update-baselines` runs keep their runs and the
judge holds a rerun against their spread; a plain rerun inside that noise never fails, a real
slowdown still does; mean power is judged only when the work was the same."""

import json
import math
from pathlib import Path

import pytest

THRESHOLDS = Path(__file__).resolve().parents[2] / "thresholds.yaml"

# three levels of a served check, each measured three times (its value: the mean of the repeats),
# plus the mean power the monitor would record over them; numbers come from load.json
LEVELS = '''
import json, pathlib
import pytest

@pytest.mark.inference
@pytest.mark.gpucert_check(name="serving_baseline", family="serving_baseline")
@pytest.mark.parametrize("concurrency", [1, 16, 64])
def test_level(gpucert, concurrency):
    load = json.loads(pathlib.Path(__file__).with_name("load.json").read_text())
    base = {1: 90.0, 16: 1300.0, 64: 4100.0}[concurrency] * load["speed"] * load["level"][str(concurrency)]
    repeats = [base * f for f in (0.99, 1.0, 1.01)]
    gpucert.record("output_tok_s", sum(repeats) / 3, unit="tok/s", direction="higher", samples=repeats, stat="mean")
    tpot = [12.0 * load["tpot"] * load["tpot_level"].get(str(concurrency), 1.0) * f for f in (0.99, 1.0, 1.01)]
    gpucert.record("tpot_ms_p99", sum(tpot) / 3, unit="ms", direction="lower", samples=tpot, stat="mean")
    gpucert.record("gpu_power_mean_w", 400.0 * load["power"], unit="W", direction="lower")
    slo = load["slo"].get(str(concurrency), [100.0, 100.0, 100.0])  # the light levels meet every SLO
    gpucert.record("slo_attainment_pct", sum(slo) / 3, unit="%", direction="higher", samples=slo, stat="mean")
    goodput = [base / 300.0 * share / 100 for share in slo]  # requests/s (300 tokens each) meeting the SLOs
    gpucert.record("goodput_requests_per_s", sum(goodput) / 3, unit="req/s", direction="higher", samples=goodput,
                   stat="mean")
'''


@pytest.fixture
def node(pytester):
    pytester.makepyfile(test_levels=LEVELS)
    # the shipped rules, copied in: an absolute path among the arguments would move pytest's rootdir
    pytester.path.joinpath("thresholds.yaml").write_text(THRESHOLDS.read_text())

    def run(*args, speed=1.0, tpot=1.0, power=1.0, level=None, slo=None, tpot_level=None):
        level = {"1": 1.0, "16": 1.0, "64": 1.0, **(level or {})}
        pytester.path.joinpath("load.json").write_text(json.dumps({"speed": speed, "tpot": tpot, "power": power,
                                                                   "level": level, "slo": slo or {},
                                                                   "tpot_level": tpot_level or {}}))
        report_dir = pytester.path / f"report-{len(list(pytester.path.glob('report-*')))}"
        # --monitor off: the toy levels take a few ms, so whether the 100 ms sampler caught one (and
        # recorded monitor_jitter_ms_p99 for it) varied between runs and failed a count (CI, session 11)
        result = pytester.runpytest("-p", "no:cacheprovider", "--profile", "toy-node", "--report-dir", str(report_dir),
                                    "--monitor", "off", *args)
        if (report_dir / "metrics.json").exists():
            data = json.loads((report_dir / "metrics.json").read_text())
            result.metrics = {m["key"]: m for c in data["checks"] for m in c["metrics"]}
            result.html = (report_dir / "report.html").read_text()
        return result

    run.baseline = lambda: json.loads((pytester.path / "baselines" / "toy-node" / "serving_baseline.json").read_text())["metrics"]
    run.path = pytester.path
    return run


def verdict(result, concurrency, metric):
    return result.metrics[f"serving_baseline[concurrency={concurrency}]::{metric}"]


def test_two_update_runs_keep_both_runs_and_their_median(node):
    node("--update-baselines")
    second = node("--update-baselines", speed=1.06, level={"16": 0.97})  # another engine start
    entry = node.baseline()["serving_baseline[concurrency=16]::output_tok_s"]
    assert [round(r["value"], 3) for r in entry["runs"]] == [1300.0, round(1300 * 1.06 * 0.97, 3)]
    assert entry["value"] == pytest.approx((1300 + 1300 * 1.06 * 0.97) / 2)
    assert entry["run_spread"] == pytest.approx(abs(math.log(1.06 * 0.97)) / math.sqrt(2), abs=1e-6)
    assert entry["ci_method"] == "Student t 95%, mean of n=3"
    second.stdout.fnmatch_lines(["*baseline values rest on: 15 metric(s) on 2 runs*"])
    second.stdout.fnmatch_lines(["*concurrency=16[]]::output_tok_s: 1300 -> 1318.33 (+1.4%) (median of 2 runs)*"])


@pytest.mark.fault("statistics", "a plain rerun of an unchanged node, 15 % slower than a baseline of 2 separate "
                   "runs that were 6 % apart (an engine start's swing)",
                   "warn 'within run-to-run noise' (pooled between-run interval holds 0), never fail; exit 0")
def test_a_plain_rerun_inside_the_between_run_noise_warns_never_fails(node):
    node("--update-baselines")
    node("--update-baselines", speed=1.06, level={"16": 0.97, "64": 1.04})
    rerun = node(speed=0.88)
    assert rerun.ret == 0
    j = verdict(rerun, 64, "output_tok_s")
    assert j["verdict"] == "warn" and j["within_noise"] and j["delta_pct"] < -10  # beyond the 10 % band
    assert "estimated from 6 runs" in j["reason"] and "baseline of 2 run(s)" in j["reason"]
    assert all(m["verdict"] != "fail" for m in rerun.metrics.values())


@pytest.mark.fault("statistics", "a planted slowdown after a baseline of 2 runs: −42 % output tok/s and 2× TPOT p99",
                   "both fail their checks (beyond the band and outside the between-run noise); exit 1")
def test_a_planted_regression_still_fails(node):
    node("--update-baselines")
    node("--update-baselines", speed=1.06, level={"16": 0.97, "64": 1.04})
    slow = node(speed=0.6, tpot=2.0)
    assert slow.ret == 1
    for concurrency in (1, 16, 64):
        for metric in ("output_tok_s", "tpot_ms_p99"):
            j = verdict(slow, concurrency, metric)
            assert j["verdict"] == "fail" and not j["within_noise"], (concurrency, metric, j["reason"])
    slow.stdout.fnmatch_lines(["*serving_baseline[[]concurrency=16[]]::output_tok_s: FAIL: *beyond tolerance 10%*"])


# an overloaded level where the SLO cuts through the latencies: its share of requests meeting the
# SLOs swings between engine starts (H200, session 8: 77 % and 81 % in the baseline, then 60 % and
# 54 % on plain reruns), while the lighter levels meet them in every run
OVERLOADED = {"64": [76.0, 77.5, 78.25]}


def _baseline_of_an_overloaded_level(node):
    node("--update-baselines", slo=OVERLOADED)
    node("--update-baselines", slo={"64": [80.0, 81.0, 82.3]})  # another engine start


@pytest.mark.fault("statistics", "SLO attainment of an overloaded level 77 % and 81 % in the baseline's two runs, "
                   "58 % on a plain rerun, the light levels at 100 % in every run",
                   "warn 'within run-to-run noise' from that level's own runs (1 df), not the ~0 spread pooled "
                   "from the levels pinned at 100 %; exit 0")
def test_an_overloaded_levels_slo_attainment_is_judged_by_its_own_spread(node):
    _baseline_of_an_overloaded_level(node)
    rerun = node(slo={"64": [57.0, 58.0, 59.0]})
    j = verdict(rerun, 64, "slo_attainment_pct")
    assert j["verdict"] == "warn" and j["within_noise"], j["reason"]
    assert "estimated from 2 runs in 1 group(s), 1 df" in j["reason"]
    # goodput (requests/s × that share) is shown with its change, judged through its two parts
    goodput = verdict(rerun, 64, "goodput_requests_per_s")
    assert goodput["verdict"] == "pass" and goodput["delta_pct"] < -20 and "informational" in goodput["reason"]
    assert rerun.ret == 0


@pytest.mark.fault("statistics", "SLO attainment of a light level falls from 100 % (both baseline runs) to 80 %, "
                   "while an overloaded level's share swings between runs",
                   "fail: a level pinned at 100 % has no spread of its own, so the documented default "
                   "(run_noise_rel 0.03) judges it; exit 1")
def test_a_light_level_losing_its_slo_attainment_still_fails(node):
    _baseline_of_an_overloaded_level(node)
    rerun = node(slo={"16": [79.0, 80.0, 81.0], "64": [76.0, 77.5, 78.25]})
    j = verdict(rerun, 16, "slo_attainment_pct")
    assert j["verdict"] == "fail" and not j["within_noise"], j["reason"]
    assert "default run_noise_rel" in j["reason"]
    assert verdict(rerun, 64, "slo_attainment_pct")["verdict"] == "pass"
    assert rerun.ret == 1


@pytest.mark.fault("statistics", "TPOT p99 of one level 35 % apart in the baseline's two runs, its siblings 2 % "
                   "apart; a plain rerun at +87 % there, and a light level at 2x",
                   "the noisy level warns within its own spread (F test: not pooled with the others'), the "
                   "light level's 2x still fails; exit 1")
def test_a_level_noisier_than_its_siblings_is_judged_by_its_own_spread(node):
    node("--update-baselines")
    node("--update-baselines", tpot_level={"1": 1.02, "16": 0.98, "64": 1.35})  # another engine start
    rerun = node(tpot_level={"1": 2.0, "64": 2.2})
    noisy = verdict(rerun, 64, "tpot_ms_p99")
    assert noisy["verdict"] == "warn" and noisy["within_noise"] and noisy["delta_pct"] > 80, noisy["reason"]
    assert "this entry's own" in noisy["reason"] and "not pooled with theirs" in noisy["reason"]
    light = verdict(rerun, 1, "tpot_ms_p99")
    assert light["verdict"] == "fail" and not light["within_noise"], light["reason"]
    assert "in 3 group(s), 3 df" in light["reason"]  # its spread pooled with both siblings'
    assert rerun.ret == 1


@pytest.mark.fault("statistics", "a baseline of ONE run (no spread to estimate from): reruns at −20 % and −45 %",
                   "−20 % warns within the documented default noise (run_noise_rel 0.12); −45 % fails")
def test_a_baseline_of_one_run_uses_the_documented_default(node):
    node("--update-baselines")
    entry = node.baseline()["serving_baseline[concurrency=1]::output_tok_s"]
    assert len(entry["runs"]) == 1
    swing = node(speed=0.8)
    j = verdict(swing, 1, "output_tok_s")
    assert swing.ret == 0 and j["verdict"] == "warn" and j["within_noise"]
    assert "default run_noise_rel of thresholds.yaml" in j["reason"] and "σ 12.0%" in j["reason"]
    slow = node(speed=0.55)
    assert slow.ret == 1 and verdict(slow, 1, "output_tok_s")["verdict"] == "fail"


@pytest.mark.fault("statistics", "mean power +25 % on a rerun whose work differed (output tok/s +23 %: a faster node)",
                   "gpu_power_mean_w informational (pass, 'the work differed'), never fails")
def test_power_is_information_when_the_work_differed(node):
    node("--update-baselines")
    faster = node(speed=1.23, power=1.25)
    j = verdict(faster, 64, "gpu_power_mean_w")
    assert faster.ret == 0 and j["verdict"] == "pass" and j["informational"]
    assert "the work differed (output_tok_s +23.0% from its baseline" in j["reason"]
    assert j["delta_pct"] == pytest.approx(25.0)
    assert "informational" in faster.html


@pytest.mark.fault("statistics", "mean power +40 % for the same work (output tok/s unchanged)",
                   "gpu_power_mean_w judged against its baseline and fails")
def test_power_is_judged_when_the_work_was_the_same(node):
    node("--update-baselines")
    node("--update-baselines", level={"16": 0.99})
    hungry = node(power=1.4)
    j = verdict(hungry, 16, "gpu_power_mean_w")
    assert hungry.ret == 1 and j["verdict"] == "fail" and not j["informational"]


@pytest.mark.fault("statistics", "a changed level (an approved upgrade: +60 % output) written with --update-baselines",
                   "the runs start afresh from it: the baseline moves to the new level, not the median with the old")
def test_an_approved_change_restarts_the_runs(node):
    node("--update-baselines")
    node("--update-baselines")
    node("--update-baselines", speed=1.6)
    entry = node.baseline()["serving_baseline[concurrency=64]::output_tok_s"]
    assert len(entry["runs"]) == 1 and entry["value"] == pytest.approx(4100 * 1.6)


def _bad_entry(fields, message, planted, case):
    return pytest.param(fields, message, id=case, marks=pytest.mark.fault(
        "statistics", planted, "ERROR: gpucert: one line naming the entry, exit 4"))


@pytest.mark.parametrize("fields, message", [
    _bad_entry({"runs": [{"value": "fast"}]}, "runs[0] needs a finite number 'value'",
               "a baseline entry's runs[0].value is text", "text-value"),
    _bad_entry({"runs": {"value": 1.0}}, "runs must be a list of 1 to 5 runs",
               "a baseline entry's runs is a mapping, not a list", "not-a-list"),
    _bad_entry({"runs": [{"value": 1.0}] * 6}, "runs must be a list of 1 to 5 runs",
               "a baseline entry with 6 runs (more than kept)", "too-many"),
    _bad_entry({"run_spread": -0.1}, "run_spread must be a finite number >= 0",
               "a baseline entry's run_spread is negative", "negative-spread"),
])
def test_bad_runs_in_a_baseline_stop_the_run_with_one_line(node, fields, message):
    node("--update-baselines")
    path = node.path / "baselines" / "toy-node" / "serving_baseline.json"
    doc = json.loads(path.read_text())
    doc["metrics"]["serving_baseline[concurrency=1]::output_tok_s"].update(fields)
    path.write_text(json.dumps(doc))
    broken = node()
    assert broken.ret == pytest.ExitCode.USAGE_ERROR
    broken.stderr.fnmatch_lines([f"ERROR: gpucert: *serving_baseline.json: serving_baseline[[]concurrency=1[]]::output_tok_s: {message.replace('[', '[[]')}*"])
    assert "Traceback" not in broken.stderr.str() + broken.stdout.str()


@pytest.mark.parametrize("rule, message", [
    pytest.param("run_noise_rel: .inf", "rules[[]0[]].run_noise_rel: expected a finite number, got inf",
                 marks=pytest.mark.fault("statistics", "thresholds.yaml run_noise_rel: .inf (noise that hides everything)",
                                         "ERROR: gpucert: one line naming the key, exit 4"), id="infinite-noise"),
    pytest.param("same_work: 3", "rules[[]0[]].same_work: expected text, got 3",
                 marks=pytest.mark.fault("statistics", "thresholds.yaml same_work: 3 (not a metric name)",
                                         "ERROR: gpucert: one line naming the key, exit 4"), id="same-work-number"),
])
def test_bad_noise_rules_stop_the_run_with_one_line(node, rule, message):
    node.path.joinpath("thresholds.yaml").write_text(f"schema_version: 1\nrules:\n  - check: serving_baseline\n    {rule}\n")
    broken = node()
    assert broken.ret == pytest.ExitCode.USAGE_ERROR
    broken.stderr.fnmatch_lines([f"ERROR: gpucert: *thresholds.yaml: {message}"])
    assert "Traceback" not in broken.stderr.str() + broken.stdout.str()
