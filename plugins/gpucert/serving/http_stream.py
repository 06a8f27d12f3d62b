"""The load generator's streaming HTTP/1.1 client: an asyncio Protocol with httptools' parser.

Why not aiohttp here (it stays for everything else): every streamed chunk went through aiohttp's
response StreamReader — a future resolved and a task woken per TCP read — and that machinery was
~3/4 of the client's CPU per chunk. One client process then topped out near 50k chunks/s at a full
core with its event loop lagging hundreds of ms (docs/evidence/issue-4-client). Here the loop calls
`data_received` directly, httptools (llhttp, the C parser uvicorn uses) undoes the chunked encoding
and hands the body to the caller's `on_body(data, arrived)` in the same call: no future or task per
chunk. A request is one `await` (headers) and one more (the end of the body).

Connections are kept alive and reused per (scheme, host, port), as aiohttp's pool did; plain HTTP
and HTTPS (the `ssl` module's default context).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import urllib.parse
from collections.abc import Callable

import httptools

ERROR_BODY_LIMIT = 2000  # bytes of a non-200 answer kept for the error text


class ConnectionClosed(ConnectionError):
    """The server closed the connection before the answer was complete."""


class _Response(asyncio.Protocol):
    """One connection; one request/response at a time on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._begin(None)

    def _begin(self, on_body: Callable[[bytes, float], None] | None) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.on_body_cb = on_body
        self.status: int | None = None
        self.framed = False  # Content-Length or chunked: else the body ends when the server closes
        self.error_body = bytearray()
        self.headers_done = self.loop.create_future()
        self.message_done = self.loop.create_future()
        self.arrived = 0.0
        self.failure: BaseException | None = None

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.arrived = time.monotonic()  # one read: its bytes arrived together
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # not asked for; treat as a broken answer
            self._fail(ConnectionClosed("unexpected protocol upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(exc if self.failure is None else self.failure)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if exc is None and self.status is not None and not self.framed and not self.message_done.done():
            self.message_done.set_result(False)  # a body without length ends with the connection
            return
        self._fail(exc or ConnectionClosed("server closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if not self.headers_done.done():
            self.headers_done.set_result(self.status)

    def on_body(self, body: bytes) -> None:
        if self.status != 200 or self.on_body_cb is None:
            if len(self.error_body) < ERROR_BODY_LIMIT:
                self.error_body += body[:ERROR_BODY_LIMIT - len(self.error_body)]
            return
        try:
            self.on_body_cb(body, self.arrived)
        except Exception as exc:  # the caller's parse failed: the parser stops, post() raises it
            self.failure = exc
            raise

    def on_message_complete(self) -> None:
        if not self.message_done.done():
            self.message_done.set_result(self.parser.should_keep_alive())

    def _fail(self, exc: BaseException) -> None:
        for future in (self.headers_done, self.message_done):
            if not future.done():
                future.set_exception(exc)
                future.exception()  # retrieved: no "never retrieved" warning for the one not awaited
        if self.transport is not None:
            self.transport.abort()


class StreamingClient:
    """`await client.post(url, body, headers, on_body)` → (status, error body). Use as an async
    context manager (closes the kept-alive connections)."""

    def __init__(self, connect_timeout_s: float = 30.0, reuse_within_s: float = 2.0):
        self.connect_timeout_s = connect_timeout_s
        # an idle connection is reused only this soon after its last answer: servers close idle
        # ones on their own clock (uvicorn, under vLLM, after 5 s), and a request sent just as the
        # server closes would fail as if the server had
        self.reuse_within_s = reuse_within_s
        self._idle: dict[tuple[str, str, int], list[tuple[float, _Response]]] = {}
        self._open: set[_Response] = set()
        self._ssl: ssl.SSLContext | None = None

    async def __aenter__(self) -> StreamingClient:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for conn in list(self._open):
            if conn.transport is not None:
                conn.transport.close()
        self._open.clear()
        self._idle.clear()

    async def _connection(self, key: tuple[str, str, int]) -> _Response:
        idle = self._idle.get(key)
        while idle:
            since, conn = idle.pop()
            fresh = time.monotonic() - since <= self.reuse_within_s
            if fresh and not conn.closed and conn.transport is not None and not conn.transport.is_closing():
                return conn
            self._discard(conn)
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        if scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Response(loop), host, port,
                                       ssl=self._ssl if scheme == "https" else None),
                self.connect_timeout_s)
        except asyncio.TimeoutError:
            raise ConnectionError(f"cannot connect to {host}:{port}: no answer in {self.connect_timeout_s:g} s") from None
        except OSError as exc:
            raise ConnectionError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        self._open.add(conn)
        return conn

    async def post(self, url: str, body: bytes, headers: dict[str, str],
                   on_body: Callable[[bytes, float], None]) -> tuple[int, bytes]:
        """POST `body`; each piece of a 200 answer's body goes to `on_body(data, arrived)` as it
        comes (arrived: time.monotonic() of the read). Returns (status, the first bytes of a
        non-200 body). Raises ConnectionError / OSError / httptools.HttpParserError, or what
        `on_body` raised."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme or "http"
        host = parts.hostname or "127.0.0.1"
        port = parts.port or (443 if scheme == "https" else 80)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (scheme, host, port)
        conn = await self._connection(key)
        conn._begin(on_body)
        given = {name.lower() for name in headers}
        head = [f"POST {path} HTTP/1.1", f"Host: {parts.netloc}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in (("Content-Type", "application/json"),
                                                        ("Accept", "text/event-stream")) if name.lower() not in given]
        head += [f"{name}: {value}" for name, value in headers.items()]
        conn.transport.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        try:
            status = await conn.headers_done
            keep_alive = await conn.message_done
        except BaseException:
            self._discard(conn)
            raise
        if conn.failure is not None:
            self._discard(conn)
            raise conn.failure
        if keep_alive and not conn.closed:
            self._idle.setdefault(key, []).append((time.monotonic(), conn))
        else:
            self._discard(conn)
        return status, bytes(conn.error_body)

    def _discard(self, conn: _Response) -> None:
        self._open.discard(conn)
        if conn.transport is not None:
            conn.transport.abort()
