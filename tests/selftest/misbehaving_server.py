"""A real HTTP/1.1 server on 127.0.0.1 that answers a streaming completion the way a test
scripts it — a JSON scalar mid-stream, usage that lies, two chunks in one TCP write, headers
and then silence — for the load generator's fault self-tests.

A script is `respond(body) -> list` of steps, run in order on the connection: bytes are one
TCP write each (what a read on the other side can see together), a float is a pause in
seconds, STALL holds the connection open without another byte until the server stops.
`sse(...)`, `chunk(...)` and `stream(...)` build the usual pieces. GET answers 404 (the plugin's
monitor probes /metrics); the server runs its own asyncio loop on a thread, so a test, the
plugin under pytester or a CLI subprocess can all talk to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable

STALL = object()
HEADERS = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n")


def chunk(data: bytes) -> bytes:
    """One piece of a chunked body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


END = chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"


def sse(payload) -> bytes:
    """One SSE event of `payload` (JSON-encoded unless already bytes)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return b"data: " + data + b"\n\n"


def text_chunk(index: int, ids: bool = True) -> dict:
    """A /v1/completions chunk carrying one token (its id too when `ids`)."""
    choice = {"index": 0, "text": f" t{index}", "finish_reason": None}
    if ids:
        choice["token_ids"] = [1000 + index]
    return {"id": "cmpl-x", "object": "text_completion", "model": "m", "choices": [choice]}


def usage(completion_tokens, prompt_tokens=4) -> dict:
    return {"id": "cmpl-x", "object": "text_completion", "model": "m", "choices": [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": None}}


def stream(tokens: int, *, ids: bool = True, claimed=None, gap_s: float = 0.002) -> list:
    """A well-behaved stream of `tokens` one-token chunks, then usage (claiming `claimed`, default
    the truth) and [DONE]."""
    steps: list = [HEADERS]
    for i in range(tokens):
        steps += [chunk(sse(text_chunk(i, ids))), gap_s]
    steps += [chunk(sse(usage(tokens if claimed is None else claimed))), END]
    return steps


class MisbehavingServer:
    """`with MisbehavingServer(respond) as server: server.v1_url …`; `server.requests` lists the
    JSON bodies it was sent."""

    def __init__(self, respond: Callable[[dict], list]):
        self.respond = respond
        self.requests: list[dict] = []
        self.port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="misbehaving-server", daemon=True)
        self._stop: asyncio.Event | None = None

    @property
    def v1_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> MisbehavingServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the misbehaving server did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        handlers: set[asyncio.Task] = set()

        async def accepted(reader, writer):
            handlers.add(asyncio.current_task())
            try:
                await self._handle(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass  # the client gave up: that is the test's business
            except asyncio.CancelledError:
                pass  # the server is stopping (a stalled answer ends here)
            finally:
                handlers.discard(asyncio.current_task())
                writer.close()

        server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        server.close()
        for task in list(handlers):  # a stalled handler waits forever otherwise
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)

    async def _handle(self, reader, writer) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ")[0]
            length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                           if line.lower().startswith("content-length:")), 0)
            body = await reader.readexactly(length) if length else b""
            if method != "POST":
                writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            request = json.loads(body)
            self.requests.append(request)
            for step in self.respond(request):
                if step is STALL:
                    await asyncio.Event().wait()  # until the server stops (cancelled)
                elif isinstance(step, float):
                    await asyncio.sleep(step)
                else:
                    writer.write(step)
                    await writer.drain()
            return  # every script ends its answer with Connection: close


@contextlib.contextmanager
def serving(respond: Callable[[dict], list]):
    with MisbehavingServer(respond) as server:
        yield server
