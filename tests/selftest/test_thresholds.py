"""thresholds.yaml: rule matching and merging, validation with one-line errors naming the place."""

import datetime as dt
from pathlib import Path

import pytest

from gpucert.thresholds import ThresholdsError, load, parse

REPO = Path(__file__).resolve().parents[2]


def test_shipped_file_is_valid():
    th = load(REPO / "thresholds.yaml")
    rule = th.rule_for("stack", "drift_critical", {})
    assert rule.direction == "lower" and rule.drift and rule.max == 0 and rule.min_samples == 1
    assert th.rule_for("stack", "health_critical", {}).max == 0


def test_rules_merge_in_file_order_and_match_params():
    th = parse({
        "defaults": {"rel_tol": 0.05},
        "rules": [
            {"check": "gemm", "direction": "higher", "rel_tol": 0.04, "warn_rel": 0.01},
            {"check": "gemm", "metric": "tflops", "params": {"dtype": "fp8"}, "rel_tol": 0.08},
            {"check": "nccl*", "metric": "busbw_*", "min": 300},
        ],
    })
    assert th.rule_for("gemm", "tflops", {"dtype": "bf16"}).rel_tol == 0.04
    fp8 = th.rule_for("gemm", "tflops", {"dtype": "fp8"})
    assert (fp8.rel_tol, fp8.direction, fp8.warn_rel) == (0.08, "higher", 0.01)
    assert th.rule_for("nccl_sweep", "busbw_gbps", {}).min == 300
    assert th.rule_for("other", "x", {}).rel_tol == 0.05 and th.rule_for("other", "x", {}).direction is None


@pytest.mark.parametrize("data, message", [
    ({"rules": [{"check": "a", "rel_tol": "abc"}]}, "rules[0].rel_tol: expected a number, got 'abc'"),
    ({"rules": [{"check": "a", "tolerance": 1}]}, "rules[0]: unknown key 'tolerance'"),
    ({"rules": [{"direction": "up"}]}, "rules[0].direction: expected one of higher, lower, got 'up'"),
    ({"rules": [{"rel_tol": -0.1}]}, "rules[0].rel_tol: expected a number >= 0"),
    ({"rules": [{"rel_tol": 0.01, "warn_rel": 0.05}]}, "warn_rel 0.05 is wider than rel_tol 0.01"),
    ({"rules": [{"min_samples": 0}]}, "rules[0].min_samples: expected an integer >= 1"),
    ({"rules": [{"drift": "yes"}]}, "rules[0].drift: expected true or false, got 'yes'"),
    ({"defaults": {"check": "x"}}, "defaults: unknown key 'check'"),
    ({"rulez": []}, "unknown key 'rulez'"),
    ({"schema_version": 9}, "schema_version 9 is not supported"),
    ({"quarantine": [{"check": "a", "expires": "2027-01-01"}]}, "quarantine[0]: missing 'reason'"),
    ({"quarantine": [{"check": "a", "reason": "r", "expires": "soon"}]}, "quarantine[0].expires: expected a date"),
    ([1, 2], "expected a mapping at the top level"),
])
def test_invalid_files_name_the_place(data, message):
    with pytest.raises(ThresholdsError) as err:
        parse(data, "t.yaml")
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("rules:\n  - check: a\n    rel_tol: [1\n")
    with pytest.raises(ThresholdsError, match=r"t.yaml: line \d+"):
        load(bad)


def test_missing_file(tmp_path):
    with pytest.raises(ThresholdsError, match="cannot read"):
        load(tmp_path / "nope.yaml")


def test_params_match_as_globs():
    th = parse({"rules": [{"check": "nccl", "params": {"size": "*KiB"}, "rel_tol": 0.5},
                          {"check": "nccl", "params": {"size": "*[0-9]B"}, "rel_tol": 0.4}]})
    assert th.rule_for("nccl", "busbw_gbps", {"size": "32KiB"}).rel_tol == 0.5
    assert th.rule_for("nccl", "busbw_gbps", {"size": "128B"}).rel_tol == 0.4
    assert th.rule_for("nccl", "busbw_gbps", {"size": "2MiB"}).rel_tol == 0.05
    assert th.rule_for("nccl", "busbw_gbps", {}).rel_tol == 0.05  # a missing parameter never matches


def test_quarantine_matching_and_expiry():
    th = parse({"quarantine": [{"check": "nccl", "metric": "busbw_gbps", "params": {"op": "alltoall"},
                                "reason": "vendor bug 12", "expires": dt.date(2026, 12, 31)}]})
    q = th.quarantine_for("nccl", "busbw_gbps", {"op": "alltoall", "bytes": 8})
    assert q is not None and q.reason == "vendor bug 12"
    assert th.quarantine_for("nccl", "busbw_gbps", {"op": "all_reduce"}) is None
    assert q.active(dt.date(2026, 12, 31)) and not q.active(dt.date(2027, 1, 1))
