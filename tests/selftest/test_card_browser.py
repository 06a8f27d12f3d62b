"""The report card in a real browser: headless Chromium (Debian's `chromium`) opens report.html and
must see no console error, no exception, no failed load, and no script of the card's own strings run.
Without Chromium the tests skip, except under CI (which installs it: .ci/run), where they fail."""

import copy
import os
from pathlib import Path

import pytest

from gpucert.report import card

from . import browser, device_runs

HOSTILE = '<script>alert(1)</script><img src="x" onerror="alert(2)">'


def need_chromium() -> str:
    """The binary; without one the test skips, or fails under CI (a test failure, not a setup error)."""
    try:
        return browser.find_chromium()
    except browser.BrowserUnavailable as e:
        missing = str(e)
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the card's browser test (.ci/run installs chromium): {missing}", pytrace=False)
    pytest.skip(missing)


def device_run() -> dict:
    """metrics.json of a real 2× H100 serving-check run: serving table, monitor timelines, failures."""
    return device_runs.load(device_runs.SERVING_CHECK)


def open_card(data: dict, tmp_path: Path, chromium: str) -> dict:
    out = tmp_path / "report.html"
    out.write_text(card.render(data))
    return browser.inspect_page(out, chromium=chromium)


def assert_clean(page: dict) -> None:
    for kind in ("console_errors", "exceptions", "log_errors", "failed_loads", "dialogs"):
        assert page[kind] == [], f"{kind} on {page['url']}: {page[kind]}"


def test_a_device_runs_card_renders_without_errors(tmp_path):
    data = device_run()
    page = open_card(data, tmp_path, need_chromium())
    assert_clean(page)
    assert data["verdict"] == "fail"
    assert "FAIL" in page["title"] and "fail" in page["h1"].lower()
    assert page["script_count"] == 0  # a self-contained card: no scripts at all
    assert page["svg_count"] > 0  # the serving curves and the monitor timelines
    assert page["scroll_height"] > 2000 and page["text_length"] > 5000  # the whole card laid out
    assert "serving_baseline[concurrency=1024]" in page["text"]


@pytest.mark.parametrize("run", ["SERVING_CHECK", "CERTIFY", "STUDY_BATCHING", "STUDY_KV", "STUDY_SLO_MISSES",
                                 "STUDY_TUNED_SERVED", "STUDY_PRECISION_SERVED", "STUDY_GRID"])
def test_a_device_runs_card_fits_a_laptop_screen(tmp_path, run):
    """No sideways scrolling at 1,300 px: session 27's study cards ran 93-465 px past the window,
    a long interval method (the SLO search's) kept on one line and long check ids squeezing the
    reasons into a column of a few words a line."""
    page = open_card(device_runs.load(getattr(device_runs, run)), tmp_path, need_chromium())
    assert (page["overflow_x"], page["wide_tables"]) == (0, []), (page["overflow_x"], page["wide_tables"])


def test_the_batching_tables_change_column_fits_a_laptop_screen(tmp_path):
    """Session 31's grid with `batching.repeats: 3` — each later point's change against the first
    with its interval and method, and the candidate caveat: the wider table still fits 1,300 px."""
    page = open_card(device_runs.load(device_runs.STUDY_GRID), tmp_path, need_chromium())
    assert "change vs seqs1024-tokens8192 (95% interval)" in page["text"], page["text"][:2000]
    assert "a candidate until the tuned study reruns both on fresh engine starts" in page["text"]
    assert (page["overflow_x"], page["wide_tables"]) == (0, []), (page["overflow_x"], page["wide_tables"])


def test_html_in_the_cards_strings_is_shown_not_run(tmp_path):
    data = device_run()
    data["notes"] = [*data.get("notes", []), f"note {HOSTILE}"]
    # a check that errored without a metric: its message goes on the card as is
    errored = copy.deepcopy(data["checks"][0])
    errored.update(check="stack", check_id="stack", family="stack", nodeid="tests/test_stack.py::test_stack",
                   outcome="error", verdict="fail", metrics=[], message=f"message {HOSTILE}")
    data["checks"].append(errored)
    failing = next(m for c in data["checks"] for m in c["metrics"] if m.get("verdict") == "fail")
    failing["reason"] = f"reason {HOSTILE}"

    page = open_card(data, tmp_path, need_chromium())
    assert_clean(page)  # no alert dialog, and no <img src="x"> tried
    assert page["script_count"] == 0
    for prefix in ("note", "message", "reason"):
        assert f"{prefix} {HOSTILE}" in page["text"]  # the literal text, as the reader sees it


def test_the_checker_sees_a_broken_pages_errors(tmp_path):
    """The other side: a page with a throwing script, a console error, a missing image and an alert
    must come back with each of them, or the clean results above prove nothing."""
    page_path = tmp_path / "broken.html"
    page_path.write_text('<!DOCTYPE html><html><head><title>broken</title></head><body><h1>Broken</h1>'
                         '<script>console.error("logged", 42)</script>'
                         '<img src="missing.png">'
                         '<script>throw new Error("x")</script>'
                         '<script>alert("hi")</script>'
                         '<svg width="10" height="10"></svg>'
                         '<table><tr><th>wide</th><td style="white-space: nowrap">' + 'x' * 400 + '</td></tr></table>'
                         '</body></html>')
    page = browser.inspect_page(page_path, chromium=need_chromium())
    assert [e for e in page["exceptions"] if "Error: x" in e]
    assert page["console_errors"] == [{"type": "error", "text": "logged 42"}]
    assert page["failed_loads"] == [{"url": (tmp_path / "missing.png").as_uri(), "error": "net::ERR_FILE_NOT_FOUND"}]
    assert [e for e in page["log_errors"] if e["url"].endswith("missing.png")]
    assert page["dialogs"] == [{"type": "alert", "message": "hi"}]
    assert (page["title"], page["h1"], page["svg_count"], page["script_count"]) == ("broken", "Broken", 1, 3)
    assert page["overflow_x"] > 0 and page["wide_tables"] == ["wide"]  # 400 x's on one line pass 1,300 px


def test_no_chromium_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("GPUCERT_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(browser.BrowserUnavailable, match="no-such-chromium.*GPUCERT_CHROMIUM"):
        browser.find_chromium()
    with pytest.raises(browser.BrowserUnavailable, match="apt-get install chromium"):
        browser.inspect_page(tmp_path / "report.html", chromium=tmp_path / "elsewhere")
