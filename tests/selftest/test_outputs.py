"""The run's machine-readable outputs beside the card: the Prometheus textfile (metrics.prom)
and the metrics carried as properties in pytest's --junitxml."""

import json
import math
import os
import xml.etree.ElementTree as ET

import prometheus_client.exposition
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpucert.metrics import VERDICTS
from gpucert.report import prometheus

from . import device_runs

# label values a check id, a unit or a check name can carry: the exposition format must escape
# the backslash, the quote and the newline; the rest must pass through untouched
NASTY = 'ev"il\\ch\neck {a=1,b="x"} ]'


def samples(path):
    """{(name, sorted labels): value} of a textfile, read back by Prometheus's own parser."""
    out = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"duplicate series {key}"
            out[key] = s.value
    return out


def series(parsed, name, **labels):
    """The samples of one metric name whose labels include these."""
    return {k: v for k, v in parsed.items() if k[0] == name and set(labels.items()) <= set(k[1])}


def metric(key, value, verdict="pass", unit="ms", **extra):
    check_id, name = key.rsplit("::", 1)
    return {"key": key, "check": check_id.split("[")[0], "metric": name, "unit": unit, "value": value,
            "verdict": verdict, "baseline": None, "delta_pct": None, "params": {}, **extra}


def synthetic_running_run():
    return {
        "gpucert_version": "0.1.0", "status": "running", "profile": NASTY, "verdict": "warn",
        "started_at": "2026-11-27T08:20:47+00:00", "finished_at": None,
        "counts": {"fail": 0, "incomplete": 0, "warn": 1, "new": 0, "pass": 1, "skipped": 1},
        "metric_counts": {"warn": 1, "pass": 3},
        "checks": [
            {"check": NASTY, "check_id": f"{NASTY}[concurrency=128]", "family": "fam\\ily", "verdict": "warn",
             "duration_s": 1.5, "metrics": [
                 metric(f"{NASTY}[concurrency=128]::ttft_ms", 12.5, "warn", unit='°C "\\ \n',
                        baseline=10.0, delta_pct=25.0, delta_ci_pct=[20.0, "inf"]),
                 metric(f"{NASTY}[concurrency=128]::tpot_ms", "nan", "fail"),     # json_safe's NaN
                 metric(f"{NASTY}[concurrency=128]::itl_ms", float("inf"), "fail"),  # a dict before json_safe
                 metric(f"{NASTY}[concurrency=128]::flag", True),
             ]},
            {"check": "gemm", "check_id": "gemm", "family": "gemm", "verdict": "pass", "duration_s": 2.0,
             "metrics": [  # one metric per size of a sweep: record(params=...) extends the check id
                 metric("gemm[size=1024]::tflops", 100.0, unit="TFLOP/s", params={"size": "1024"}),
                 metric("gemm[size=4096]::tflops", 400.0, unit="TFLOP/s", params={"size": "4096"}, baseline=390.0,
                        delta_pct=2.56, delta_ci_pct=[1.0, 4.0]),
             ]},
            {"check": "nvlink", "check_id": "nvlink", "family": "p2p", "verdict": "skipped", "duration_s": 0.1,
             "metrics": [metric("nvlink::gbps", 0.0, "skipped", unit="GB/s")]},
        ],
    }


def test_device_run_textfile_round_trips(tmp_path):
    data = device_runs.load(device_runs.SERVING_CHECK)
    path = prometheus.write(tmp_path, data)
    assert path == tmp_path / "metrics.prom"
    parsed = samples(path)

    assert parsed[("gpucert_run_info", (("gpucert_version", "0.1.0"), ("profile", "2xH100-80GB-HBM3-NV18"),
                                        ("status", "complete")))] == 1
    assert {k[1][0][1]: v for k, v in series(parsed, "gpucert_run_verdict").items()} == {
        v: float(v == "fail") for v in VERDICTS}
    assert {k[1][0][1]: v for k, v in series(parsed, "gpucert_run_checks").items()} == data["counts"]
    assert {k[1][0][1]: v for k, v in series(parsed, "gpucert_run_metrics").items()} == data["metric_counts"]
    assert parsed[("gpucert_run_finished_timestamp_seconds", ())] == 1795767934.0  # 2026-11-27T08:25:34Z
    assert parsed[("gpucert_run_duration_seconds", ())] == 287.0

    # one series per check, with its own verdict only
    check_verdicts = series(parsed, "gpucert_check_verdict")
    assert len(check_verdicts) == len(data["checks"]) and set(check_verdicts.values()) == {1.0}
    assert ("gpucert_check_verdict", (("check", "serving_baseline"), ("check_id", "serving_baseline[concurrency=128]"),
                                      ("family", "serving_baseline"), ("verdict", "fail"))) in parsed

    # every metric of this run is a finite, judged number: each one is exposed exactly
    every = [(c, m) for c in data["checks"] for m in c["metrics"]]
    values = series(parsed, "gpucert_metric_value")
    assert len(values) == len(every) == 115
    for check, m in every:
        labels = (("check_id", check["check_id"]), ("metric", m["metric"]), ("unit", m["unit"]))
        assert parsed[("gpucert_metric_value", labels)] == m["value"]
        assert parsed[("gpucert_metric_baseline", labels)] == m["baseline"]
        if m["delta_pct"] is not None:
            assert parsed[("gpucert_metric_delta_percent", labels)] == m["delta_pct"]
        assert parsed[("gpucert_metric_verdict", (("check_id", check["check_id"]), ("metric", m["metric"]),
                                                  ("verdict", m["verdict"])))] == 1
    assert len(series(parsed, "gpucert_metric_verdict", verdict="fail")) == data["metric_counts"]["fail"]
    assert not series(parsed, "gpucert_metric_delta_ci_low_percent")  # this run predates delta_ci_pct
    assert not series(parsed, "gpucert_headline_value")  # and headline marks


def test_headline_metrics_have_their_own_short_list(tmp_path):
    data = device_runs.load(device_runs.SERVING_CHECK)
    marked = 0
    for check in data["checks"]:
        for m in check["metrics"]:
            m["headline"] = m["metric"] in ("output_tok_s", "ttft_ms_p99")
            marked += m["headline"]
    parsed = samples(prometheus.write(tmp_path, data))
    headline = series(parsed, "gpucert_headline_value")
    assert len(headline) == marked == 8
    assert parsed[("gpucert_headline_value", (("check_id", "serving_baseline[concurrency=128]"),
                                              ("metric", "output_tok_s"), ("unit", "tok/s")))] == \
        parsed[("gpucert_metric_value", (("check_id", "serving_baseline[concurrency=128]"),
                                         ("metric", "output_tok_s"), ("unit", "tok/s")))]


def test_nasty_labels_round_trip_and_non_finite_values_are_left_out(tmp_path):
    parsed = samples(prometheus.write(tmp_path, synthetic_running_run()))

    # the library escaped the label values: the parser gives back exactly what went in
    assert parsed[("gpucert_run_info", (("gpucert_version", "0.1.0"), ("profile", NASTY), ("status", "running")))] == 1
    cid = f"{NASTY}[concurrency=128]"
    assert parsed[("gpucert_check_verdict", (("check", NASTY), ("check_id", cid), ("family", "fam\\ily"),
                                             ("verdict", "warn")))] == 1
    labels = (("check_id", cid), ("metric", "ttft_ms"), ("unit", '°C "\\ \n'))
    assert parsed[("gpucert_metric_value", labels)] == 12.5
    assert parsed[("gpucert_metric_baseline", labels)] == 10.0
    assert parsed[("gpucert_metric_delta_percent", labels)] == 25.0
    assert parsed[("gpucert_metric_delta_ci_low_percent", labels)] == 20.0
    assert ("gpucert_metric_delta_ci_high_percent", labels) not in parsed  # "inf": no bound
    assert parsed[("gpucert_metric_verdict", (("check_id", cid), ("metric", "ttft_ms"), ("verdict", "warn")))] == 1

    # nan / inf / a bool measure nothing; a skipped metric is no headline
    names = {dict(k[1]).get("metric") for k in series(parsed, "gpucert_metric_value")}
    assert names == {"ttft_ms", "tflops"}
    assert not any(math.isnan(v) or math.isinf(v) for v in parsed.values())
    assert not series(parsed, "gpucert_metric_verdict", verdict="skipped")
    assert parsed[("gpucert_check_verdict", (("check", "nvlink"), ("check_id", "nvlink"), ("family", "p2p"),
                                             ("verdict", "skipped")))] == 1

    # a sweep recorded with params: one series per size, under the metric's own check id
    assert {dict(k[1])["check_id"]: v for k, v in series(parsed, "gpucert_metric_value", metric="tflops").items()} == {
        "gemm[size=1024]": 100.0, "gemm[size=4096]": 400.0}
    gemm = (("check_id", "gemm[size=4096]"), ("metric", "tflops"), ("unit", "TFLOP/s"))
    assert (parsed[("gpucert_metric_delta_ci_low_percent", gemm)],
            parsed[("gpucert_metric_delta_ci_high_percent", gemm)]) == (1.0, 4.0)

    # still running: started, not finished, no duration; counts filled for every verdict
    assert ("gpucert_run_started_timestamp_seconds", ()) in parsed
    assert not series(parsed, "gpucert_run_finished_timestamp_seconds")
    assert not series(parsed, "gpucert_run_duration_seconds")
    assert {k[1][0][1]: v for k, v in series(parsed, "gpucert_run_metrics").items()} == {
        **{v: 0.0 for v in VERDICTS}, "warn": 1.0, "pass": 3.0}
    assert [k[1][0][1] for k, v in series(parsed, "gpucert_run_verdict").items() if v == 1] == ["warn"]


def test_textfile_is_replaced_atomically(tmp_path, monkeypatch):
    first = synthetic_running_run()
    path = prometheus.write(tmp_path, first)
    old_inode = path.stat().st_ino
    reader = path.open(encoding="utf-8")  # node_exporter mid-read when the next write lands

    def broken(*args, **kwargs):
        raise RuntimeError("exposition failed")

    # a write that fails leaves the previous file whole and no temporary behind
    with monkeypatch.context() as patch:
        patch.setattr(prometheus_client.exposition, "generate_latest", broken)
        with pytest.raises(RuntimeError):
            prometheus.write(tmp_path, {**first, "status": "complete"})
    assert os.listdir(tmp_path) == ["metrics.prom"] and path.stat().st_ino == old_inode

    second = prometheus.write(tmp_path, {**first, "status": "complete", "finished_at": "2026-11-27T08:25:34Z"})
    assert os.listdir(tmp_path) == ["metrics.prom"]  # renamed into place: no temporary left
    assert second.stat().st_ino != old_inode  # a new file, not the old one rewritten in place
    assert 'status="running"' in reader.read()  # the open reader still sees the whole old file
    reader.close()
    parsed = samples(second)
    assert parsed[("gpucert_run_finished_timestamp_seconds", ())] == 1795767934.0
    assert parsed[("gpucert_run_duration_seconds", ())] == 287.0


# ---- junitxml: the plugin's item.user_properties, as pytest really writes them ---------------

TWO_METRICS = '''
import pathlib
import pytest

@pytest.mark.hardware
def test_pair(gpucert):
    # 6 samples: the fewest whose median has a 95 % interval (noise.py), so delta_ci_pct is written
    gpucert.record("tflops", 100.0, unit="TFLOP/s", samples=[100.0] * 6, direction="higher")
    if pathlib.Path(__file__).with_name("second.txt").exists():  # absent from the baseline run
        gpucert.record("latency_ms", 2.5, unit="ms", samples=[2.5] * 5, direction="lower")

@pytest.mark.hardware
def test_crash(gpucert):
    gpucert.record("tflops", 7.0, unit="TFLOP/s", samples=[7.0] * 5, direction="higher")
    gpucert.record_error("power_w", "NVML gone", unit="W")
    raise RuntimeError("engine died")
'''


def test_junitxml_has_every_metric_and_verdict_on_its_testcase(pytester):
    pytester.makepyfile(test_two=TWO_METRICS)
    pytester.makefile(".yaml", thresholds="schema_version: 1\ndefaults: {rel_tol: 0.05, warn_rel: 0.02, min_samples: 3}\n")
    common = ("-p", "no:cacheprovider", "--profile", "toy-node")
    first = pytester.runpytest(*common, "--report-dir", str(pytester.path / "r0"), "--update-baselines", "-k", "pair")
    assert first.ret == 0

    pytester.path.joinpath("second.txt").write_text("")
    result = pytester.runpytest(*common, "--report-dir", str(pytester.path / "r1"), "--junitxml", "out.xml")
    result.assert_outcomes(passed=1, failed=1)
    assert "incompatible with junit_family" not in result.stdout.str()

    cases = {c.get("name"): c for c in ET.parse(pytester.path / "out.xml").getroot().iter("testcase")}
    props = {name: [(p.get("name"), p.get("value")) for p in case.iter("property")] for name, case in cases.items()}
    assert props["test_pair"] == [
        ("gpucert:pair::tflops", "100.0"), ("gpucert:pair::tflops:unit", "TFLOP/s"),
        ("gpucert:pair::tflops:verdict", "pass"), ("gpucert:pair::tflops:baseline", "100.0"),
        ("gpucert:pair::tflops:delta_pct", "0.0"), ("gpucert:pair::tflops:delta_ci_pct", "0.000,0.000"),
        ("gpucert:pair::latency_ms", "2.5"), ("gpucert:pair::latency_ms:unit", "ms"),
        ("gpucert:pair::latency_ms:verdict", "new"),
    ]
    # a check that raised keeps what it measured before, with its verdict; a measurement that
    # failed has no value property (a reader parses values as numbers), only its verdict
    assert props["test_crash"] == [("gpucert:crash::tflops", "7.0"), ("gpucert:crash::tflops:unit", "TFLOP/s"),
                                   ("gpucert:crash::tflops:verdict", "new"),
                                   ("gpucert:crash::power_w:unit", "W"), ("gpucert:crash::power_w:verdict", "fail")]
    assert cases["test_crash"].find("failure") is not None
    # the run's own verdict, profile and version on the suite
    suite = ET.parse(pytester.path / "out.xml").getroot().find("testsuite")
    run = {p.get("name"): p.get("value") for p in suite.find("properties").iter("property")}
    assert run["gpucert:run:verdict"] == "fail" and run["gpucert:run:profile"] == "toy-node"
    assert run["gpucert:run:status"] == "complete" and run["gpucert:run:gpucert_version"]

    # the same run's metrics.json as the plugin writes it today, through the textfile
    data = json.loads((pytester.path / "r1" / "metrics.json").read_text())
    parsed = samples(prometheus.write(pytester.path / "r1", data))
    for m in (m for c in data["checks"] for m in c["metrics"] if m["value"] is not None):
        labels = (("check_id", m["key"].rsplit("::", 1)[0]), ("metric", m["metric"]), ("unit", m["unit"]))
        assert parsed[("gpucert_metric_value", labels)] == m["value"]
        for name, bound in zip(("low", "high"), m.get("delta_ci_pct") or ()):  # once judge.py writes it
            assert parsed[(f"gpucert_metric_delta_ci_{name}_percent", labels)] == bound
