"""Open a page in a real headless Chromium and report what a reader's browser would complain about:
console errors, uncaught exceptions, failed loads, dialogs, plus a few facts about the rendered
page. The self-tests' browser driver (test_card_browser.py proves report.html renders cleanly), kept
beside them rather than in the installed package, which never opens a browser; speaks the DevTools
protocol over aiohttp's websocket client (no selenium, no playwright)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from gpucert import process_group

FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    # without these Chromium phones home (QUIC, component updates, sync, field trials); on a
    # closed network every attempt is another error line and a slower start
    "--disable-quic", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # containers often give /dev/shm 64 MiB, which crashes renderers; /tmp is as good here
    "--disable-dev-shm-usage",
    # port 0: Chromium picks a free port and writes it to <user-data-dir>/DevToolsActivePort
    "--remote-debugging-port=0",
)

# what a page evaluates to after its load event
_FACTS_JS = """({
  title: document.title,
  h1: (document.querySelector('h1') || {}).innerText || null,
  svg_count: document.querySelectorAll('svg').length,
  script_count: document.scripts.length,
  scroll_height: document.body ? document.body.scrollHeight : 0,
  text: document.body ? document.body.innerText : '',
  // how far the page runs past the window's right edge, and which tables do (by their first
  // header cell): a card read on a laptop screen must not need sideways scrolling
  overflow_x: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  wide_tables: Array.from(document.querySelectorAll('table'))
    .filter(t => t.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
    .map(t => ((t.querySelector('th, td') || {}).innerText || '').trim()),
})"""


class BrowserUnavailable(RuntimeError):
    """No Chromium binary was found (install Debian's `chromium` package, or set GPUCERT_CHROMIUM)."""


class BrowserError(RuntimeError):
    """Chromium was found but the page could not be inspected (did not start, timed out, navigation failed)."""


def find_chromium(chromium: str | os.PathLike | None = None) -> str:
    """The Chromium binary: the argument, else $GPUCERT_CHROMIUM, else `chromium` or
    `chromium-browser` on PATH."""
    candidates = [str(chromium)] if chromium else (
        [os.environ["GPUCERT_CHROMIUM"]] if os.environ.get("GPUCERT_CHROMIUM") else ["chromium", "chromium-browser"])
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserUnavailable(
        f"no Chromium found (looked for {', '.join(candidates)}): install Debian's `chromium` package "
        "(apt-get install chromium) or set GPUCERT_CHROMIUM to the binary")


def inspect_page(path_or_url: str | os.PathLike, *, chromium: str | os.PathLike | None = None,
                 timeout_s: float = 30, settle_s: float = 0.2, width: int = 1300) -> dict[str, Any]:
    """Load a file (or URL) in a fresh headless Chromium and return what it saw:

    console_errors [{type, text}], exceptions [text], log_errors [{source, text, url}],
    failed_loads [{url, error}], dialogs [{type, message}] (alert/confirm/prompt, dismissed),
    and the page's title, h1, svg_count, script_count, scroll_height, text (body innerText),
    text_length, overflow_x (px past the window's right edge) and wide_tables (the first header
    cell of each table that runs past it), plus url and browser (version string).

    `width`: the window's width in CSS px (a laptop screen's by default).

    `settle_s`: how long to keep listening after the load event (late timers, errors).
    Chromium is killed and its profile removed on every path out, timeouts included.
    Must not be called from inside a running event loop (it runs its own)."""
    binary = find_chromium(chromium)
    text = str(path_or_url)
    if len(urlsplit(text).scheme) > 1:  # file://, http://, about:, data: (not C:\\)
        url = text
    else:
        path = Path(text).resolve()
        if not path.is_file():
            raise FileNotFoundError(path)
        url = path.as_uri()

    workdir = Path(tempfile.mkdtemp(prefix="gpucert-chromium-"))
    profile, log_path = workdir / "profile", workdir / "chromium.log"
    proc = None
    try:
        with open(log_path, "wb") as log:
            # its own session: Debian's /usr/bin/chromium is a shell script that starts the real
            # binary, which starts zygote and renderer processes; killpg ends them all
            proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        try:
            return asyncio.run(asyncio.wait_for(_inspect(proc, profile, url, settle_s, width), timeout_s))
        except asyncio.TimeoutError:
            raise BrowserError(f"Chromium did not finish loading {url} within {timeout_s} s"
                               f"{_log_tail(log_path)}") from None
        except (aiohttp.ClientError, OSError) as e:
            raise BrowserError(f"DevTools connection failed: {e!r}{_log_tail(log_path)}") from e
    finally:
        if proc is not None:
            process_group.kill_group(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _log_tail(log_path: Path, lines: int = 15) -> str:
    try:
        tail = log_path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\nchromium's last output lines:\n" + "\n".join(tail) if tail else ""


async def _devtools_port(proc: subprocess.Popen, profile: Path) -> int:
    marker = profile / "DevToolsActivePort"
    while True:
        if proc.poll() is not None:
            raise BrowserError(f"Chromium exited with status {proc.returncode} before DevTools came up"
                               f"{_log_tail(profile.parent / 'chromium.log')}")
        try:
            first = marker.read_text().splitlines()[0]  # line 1: port, line 2: browser ws path
            return int(first)
        except (OSError, IndexError, ValueError):  # not written yet, or half written
            await asyncio.sleep(0.05)


async def _inspect(proc: subprocess.Popen, profile: Path, url: str, settle_s: float, width: int) -> dict[str, Any]:
    port = await _devtools_port(proc, profile)
    base = f"http://127.0.0.1:{port}"
    result: dict[str, Any] = {"url": url, "console_errors": [], "exceptions": [], "log_errors": [],
                              "failed_loads": [], "dialogs": []}
    requests: dict[str, str] = {}  # requestId -> URL: Network.loadingFailed names only the id
    loaded: set[str] = set()  # loaderIds whose document fired its load event

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/json/version") as r:
            result["browser"] = (await r.json()).get("Browser")
        async with http.get(f"{base}/json/list") as r:
            pages = [t for t in await r.json() if t.get("type") == "page"]
        if not pages:
            async with http.put(f"{base}/json/new?about:blank") as r:
                pages = [await r.json()]

        async with http.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 1 << 30))

            async def send(method: str, **params) -> int:
                msg_id = next(ids)
                await ws.send_json({"id": msg_id, "method": method, "params": params})
                return msg_id

            def on_event(method: str, p: dict) -> None:
                if method == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
                    text = " ".join(str(a.get("value", a.get("description", a.get("type"))))
                                    for a in p.get("args", []))
                    result["console_errors"].append({"type": p["type"], "text": text})
                elif method == "Runtime.exceptionThrown":
                    d = p["exceptionDetails"]
                    result["exceptions"].append((d.get("exception") or {}).get("description") or d.get("text", ""))
                elif method == "Log.entryAdded" and p["entry"]["level"] == "error":
                    e = p["entry"]
                    result["log_errors"].append({"source": e.get("source"), "text": e.get("text"),
                                                 "url": e.get("url")})
                elif method == "Network.requestWillBeSent":
                    requests[p["requestId"]] = p["request"]["url"]
                elif method == "Network.loadingFailed":
                    result["failed_loads"].append({"url": requests.get(p["requestId"]),
                                                   "error": p.get("errorText")})
                elif method == "Page.lifecycleEvent" and p["name"] == "load":
                    loaded.add(p["loaderId"])

            async def receive(timeout: float | None = None) -> dict:
                msg = await ws.receive(timeout=timeout)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise BrowserError(f"DevTools connection closed ({msg.type.name})")
                data = msg.json()
                if "method" in data:
                    on_event(data["method"], data.get("params", {}))
                    if data["method"] == "Page.javascriptDialogOpening":
                        # a dialog blocks the page until answered: note it, dismiss it, go on
                        # (the reply to this command is not waited for)
                        result["dialogs"].append({"type": data["params"].get("type"),
                                                  "message": data["params"].get("message")})
                        await send("Page.handleJavaScriptDialog", accept=False)
                return data

            async def call(method: str, **params) -> dict:
                msg_id = await send(method, **params)
                while True:
                    data = await receive()
                    if data.get("id") == msg_id:
                        if "error" in data:
                            raise BrowserError(f"{method} failed: {data['error']}")
                        return data.get("result", {})

            for domain in ("Runtime", "Log", "Page", "Network"):
                await call(f"{domain}.enable")
            # Page.loadEventFired carries no navigation id, so a late load of the first about:blank
            # could pass for ours; lifecycle events name the loader, which Page.navigate returns
            await call("Page.setLifecycleEventsEnabled", enabled=True)
            await call("Emulation.setDeviceMetricsOverride", width=width, height=900, deviceScaleFactor=1,
                       mobile=False)
            nav = await call("Page.navigate", url=url)
            if nav.get("errorText"):
                raise BrowserError(f"navigation to {url} failed: {nav['errorText']}")
            while nav["loaderId"] not in loaded:
                await receive()

            # keep listening a moment: errors from timers and late loads land after the load event
            deadline = time.monotonic() + settle_s
            while (left := deadline - time.monotonic()) > 0:
                try:
                    await receive(timeout=left)
                except asyncio.TimeoutError:
                    break

            facts = await call("Runtime.evaluate", expression=_FACTS_JS, returnByValue=True)
            if "exceptionDetails" in facts:
                raise BrowserError(f"evaluating the page's facts failed: {facts['exceptionDetails']}")
            result.update(facts["result"]["value"])
            result["text_length"] = len(result["text"])
    return result
