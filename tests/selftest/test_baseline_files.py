"""Baseline files planted with values that are not finite measurements, or of the wrong shape:
the run stops before it measures with one line `ERROR: gpucert: …` and exit 4. Such a baseline is
never judged against — before this, a NaN or inf baseline value made every comparison pass."""

import json

import pytest

from .test_plugin import baseline_file, suite  # noqa: F401 - the pytester session fixture


def _entry(**fields):
    return {"value": 100.0, "unit": "TFLOP/s", "direction": "higher", "spread": 0.0, "samples": 5, **fields}


def _doc(metrics):
    return {"schema_version": 1, "profile": "toy-node", "family": "toy", "metrics": metrics, "artifacts": {}}


KEY = "toy[size=1024]::tflops"


def _planted(case, what, text, message):
    return pytest.param(text, message, id=case, marks=pytest.mark.fault(
        "baselines", f"baseline file planted with {what}",
        "refused when loaded: one line `ERROR: gpucert: …`, exit 4, nothing judged or passed"))


def _with(**fields):
    return json.dumps(_doc({KEY: _entry(**fields)}))


CASES = [
    _planted("nan", "value NaN", _with(value=float("nan")), "NaN is not a number JSON allows"),
    _planted("infinity", "value Infinity", _with(value=float("inf")), "Infinity is not a number JSON allows"),
    _planted("minus-infinity", "value -Infinity", _with(value=float("-inf")), "-Infinity is not a number JSON allows"),
    _planted("string", 'value "12" (a string)', _with(value="12"), f"metric '{KEY}': value '12' is not a finite number"),
    _planted("list", "value [1]", _with(value=[1]), f"metric '{KEY}': value [1] is not a finite number"),
    _planted("null-value", "value null", _with(value=None), "value None is not a finite number"),
    _planted("bool", "value true", _with(value=True), "value True is not a finite number"),
    _planted("huge", "value 1e999 (overflows to inf)", _with().replace("100.0", "1e999", 1), "value inf is not a finite number"),
    _planted("null-metrics", "`metrics: null`", json.dumps(_doc(None)), "'metrics' must be an object keyed by metric, got null"),
    _planted("metrics-list", "`metrics` a list", json.dumps(_doc([_entry()])), "'metrics' must be an object keyed by metric, got a list"),
    _planted("no-metrics", "no `metrics` at all", json.dumps({k: v for k, v in _doc({}).items() if k != "metrics"}), "no 'metrics' object"),
    _planted("top-list", "a list at the top", json.dumps([_doc({})]), "expected a JSON object at the top level, got a list"),
    _planted("entry-string", "an entry that is a string", json.dumps(_doc({KEY: "100"})), "expected an object, got a string"),
    _planted("ci-garbage", 'ci "wide"', _with(ci="wide"), "ci 'wide' is not [low, high] of two finite numbers"),
    _planted("ci-one-bound", "ci [99]", _with(ci=[99]), "ci [99] is not [low, high]"),
    _planted("ci-string-bounds", 'ci ["99", "101"]', _with(ci=["99", "101"]), "is not [low, high] of two finite numbers"),
    _planted("ci-outside", "ci [1, 2] not holding the value 100", _with(ci=[1, 2]), "ci [1, 2] does not contain the value 100.0"),
    _planted("ci-reversed", "ci [101, 99] (reversed)", _with(ci=[101, 99]), "ci [101, 99] does not contain the value 100.0"),
    _planted("spread-negative", "spread -3", _with(spread=-3), "spread -3 is not a finite number >= 0"),
    _planted("spread-string", 'spread "big"', _with(spread="big"), "spread 'big' is not a finite number >= 0"),
    _planted("samples-string", 'samples "5"', _with(samples="5"), "samples '5' is not a whole number >= 0"),
    _planted("duplicate-key", "the same metric key twice", '{"schema_version": 1, "profile": "toy-node", "family": "toy", '
             f'"metrics": {{"{KEY}": {{"value": 1}}, "{KEY}": {{"value": 100}}}}}}', "given twice in one object"),
]


@pytest.mark.parametrize("text, message", CASES)
def test_a_planted_baseline_is_refused_with_one_line(suite, text, message):
    baseline_file(suite).parent.mkdir(parents=True)
    baseline_file(suite).write_text(text)
    result = suite(100)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str()[-2000:]
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ERROR: gpucert: ") and "toy.json" in errors[0], errors
    assert message in errors[0]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    assert result.metrics is None  # nothing was measured, judged or reported as passed


@pytest.mark.fault("baselines", "a baseline file with a Latin-1 byte (not UTF-8)",
                   "one line `ERROR: gpucert: …` naming the file, exit 4")
def test_a_non_utf8_baseline_is_one_line(suite):
    baseline_file(suite).parent.mkdir(parents=True)
    text = json.dumps(_doc({KEY: _entry(note="caf\u00e9")}), ensure_ascii=False)
    baseline_file(suite).write_bytes(text.encode("latin-1"))
    result = suite(100)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: gpucert: *toy.json: cannot read baseline (*utf-8* codec can't decode byte 0xe9*"])
    assert "Traceback" not in result.stderr.str()


def test_a_sound_baseline_with_fields_of_a_newer_version_still_loads(suite):
    baseline_file(suite).parent.mkdir(parents=True)
    baseline_file(suite).write_text(_with(ci=[99.5, 100.5], between_runs={"n": 3}))
    result = suite(100)
    assert result.ret == 0, result.stderr.str()
    assert {m["verdict"] for c in result.metrics["checks"] for m in c["metrics"]} == {"pass", "new"}
