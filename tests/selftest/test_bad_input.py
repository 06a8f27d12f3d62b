"""Bad input through a real pytest session: one line `ERROR: gpucert: …` on stderr and exit 4,
never INTERNALERROR or a traceback — thresholds.yaml files with impossible dates, duplicate keys,
non-UTF-8 bytes or contradictory limits; and nightly history records that are garbage are skipped
with a note, never a crash (before, a record whose metric was not an object stopped the run with
an INTERNALERROR)."""

import json

import pytest

from .test_plugin import suite  # noqa: F401 - the pytester session fixture
from .test_thresholds import BAD_FILES


def one_error_line(result):
    text = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in text and "INTERNALERROR" not in text, text[-3000:]
    errors = [line for line in result.stderr.lines if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("ERROR: gpucert: "), errors
    return errors[0]


@pytest.mark.parametrize("content, message", [
    pytest.param(content, message.replace("t.yaml", "thresholds.yaml"), id=case, marks=pytest.mark.fault(
        "bad-input", f"thresholds.yaml: {planted}", "one line `ERROR: gpucert: …` naming file, line and problem; exit 4"))
    for case, planted, content, message in BAD_FILES])
def test_a_bad_thresholds_file_is_one_line_and_exit_4(suite, content, message):
    suite.path.joinpath("thresholds.yaml").write_bytes(content)
    result = suite(100)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in one_error_line(result)


RECORD = {"started_at": "2026-11-01T00:00:00+00:00", "status": "complete", "verdict": "pass", "profile": "toy-node",
          "stack": {"digest": "d", "summary": []},
          "metrics": {"toy[size=1024]::tflops": {"value": 100.0, "verdict": "pass", "headline": True,
                                                 "check_id": "toy[size=1024]", "metric": "tflops"}}}


def _record(**metric):
    doc = json.loads(json.dumps(RECORD))
    doc["metrics"]["toy[size=1024]::tflops"].update(metric)
    return json.dumps(doc).encode()


@pytest.mark.parametrize("content, why", [
    pytest.param(json.dumps({**RECORD, "metrics": {"toy[size=1024]::tflops": "100"}}).encode(),
                 "metric 'toy[size=1024]::tflops' has no finite value", id="metric-a-string",
                 marks=pytest.mark.fault("bad-input", "a nightly history record whose metric is a string, not an object",
                                         "the record skipped with a note on the card; the run judges on (exit 0), no INTERNALERROR")),
    pytest.param(_record(value=float("nan")), "NaN is not a number JSON allows", id="value-nan",
                 marks=pytest.mark.fault("bad-input", "a nightly history record with value NaN",
                                         "the record skipped with a note (its NaN never widens the noise), exit 0")),
    pytest.param(_record(value=123.0).replace(b"123.0", b"1e999"), "has no finite value", id="value-inf",
                 marks=pytest.mark.fault("bad-input", "a nightly history record with value 1e999 (inf)",
                                         "the record skipped with a note, exit 0")),
    pytest.param(json.dumps([RECORD]).encode(), "not a gpucert history record", id="top-list",
                 marks=pytest.mark.fault("bad-input", "a nightly history record that is a JSON list",
                                         "the record skipped with a note, exit 0")),
    pytest.param(_record(note="caf\u00e9").decode().replace("\\u00e9", "\u00e9").encode("latin-1"), "can't decode byte 0xe9",
                 id="non-utf8", marks=pytest.mark.fault("bad-input", "a nightly history record with a Latin-1 byte",
                                                        "the record skipped with a note, exit 0")),
])
def test_a_garbage_history_record_is_skipped_with_a_note(suite, content, why):
    folder = suite.path / "history" / "toy-node"
    folder.mkdir(parents=True)
    folder.joinpath("20261101T000000.json").write_bytes(content)
    result = suite(100, "--history-dir", str(suite.path / "history"))
    assert result.ret == 0, result.stdout.str()[-3000:] + result.stderr.str()[-2000:]
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    notes = [n for n in result.metrics["notes"] if n.startswith("history record 20261101T000000.json skipped: ")]
    assert len(notes) == 1 and why in notes[0], result.metrics["notes"]
    assert len(list(folder.glob("*.json"))) == 2  # this run's record added beside the skipped one
