"""The load generator's streaming HTTP client against real sockets on 127.0.0.1: a raw asyncio
server that answers the ways servers do — chunked SSE (vLLM, uvicorn), a body ended by closing
(HTTP/1.0 style), an error status with a body, a reset half-way, a server gone."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gpucert.serving.http_stream import StreamingClient


def chunked(*pieces: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


class RawServer:
    """Answers each request on a connection with `answer(request_number)` (bytes to send, and
    whether to close after); counts connections and requests."""

    def __init__(self, answer):
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                self.requests.append(head + await reader.readexactly(length))
                parts, close = self.answer(len(self.requests))
                for part in parts:
                    if part is None:  # a reset: no goodbye
                        writer.transport.abort()
                        return
                    writer.write(part)
                    await writer.drain()
                    await asyncio.sleep(0.01)
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1/completions"
        return self

    async def __aexit__(self, *exc):
        self.server.close()


SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def collect():
    got = []
    return got, lambda data, arrived: got.append((data, arrived))


def test_chunked_stream_arrives_piece_by_piece_and_the_connection_is_reused():
    async def run():
        events = [b'data: {"n": %d}\n\n' % i for i in range(3)] + [b"data: [DONE]\n\n"]
        answer = lambda n: ([SSE_HEAD, chunked(*events)[:-5], b"0\r\n\r\n"], False)
        async with RawServer(answer) as server, StreamingClient() as client:
            for _ in range(3):  # one stream's requests one after another
                got, on_body = collect()
                status, error = await client.post(server.url, b'{"x": 1}', {"X-Request-Id": "r-1"}, on_body)
                assert status == 200 and error == b""
                assert b"".join(data for data, _ in got) == b"".join(events)
                assert all(arrived > 0 for _, arrived in got)
            assert server.connections == 1 and len(server.requests) == 3  # kept alive
            request = server.requests[0]
            assert request.startswith(b"POST /v1/completions HTTP/1.1\r\n")
            assert b"X-Request-Id: r-1\r\n" in request and request.endswith(b'{"x": 1}')
            assert request.count(b"Content-Type") == 1
    asyncio.run(run())


def test_a_connection_idle_too_long_is_not_reused():
    """Servers close idle connections on their own clock (uvicorn: 5 s): one idle longer than
    `reuse_within_s` is closed here and a fresh one opened, not raced against the server's close."""
    async def run():
        answer = lambda n: ([SSE_HEAD, chunked(b"data: [DONE]\n\n")], False)
        async with RawServer(answer) as server, StreamingClient(reuse_within_s=0.2) as client:
            await client.post(server.url, b"{}", {}, collect()[1])
            await client.post(server.url, b"{}", {}, collect()[1])  # right after: reused
            await asyncio.sleep(0.3)
            await client.post(server.url, b"{}", {}, collect()[1])  # idle too long: a new one
            assert server.connections == 2 and len(server.requests) == 3
    asyncio.run(run())


def test_a_body_ended_by_closing_is_complete_and_the_connection_not_reused():
    async def run():
        answer = lambda n: ([b"HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n",
                             b"data: {}\n\n", b"data: [DONE]\n\n"], True)
        async with RawServer(answer) as server, StreamingClient() as client:
            for _ in range(2):
                got, on_body = collect()
                assert (await client.post(server.url, b"{}", {}, on_body))[0] == 200
                assert b"".join(d for d, _ in got) == b"data: {}\n\ndata: [DONE]\n\n"
            assert server.connections == 2
    asyncio.run(run())


def test_an_error_status_returns_its_body_and_the_stream_sink_is_not_called():
    async def run():
        body = b'{"error": "overloaded"}'
        answer = lambda n: ([b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: %d\r\n\r\n" % len(body), body], False)
        async with RawServer(answer) as server, StreamingClient() as client:
            got, on_body = collect()
            assert await client.post(server.url, b"{}", {}, on_body) == (503, body)
            assert got == []
    asyncio.run(run())


def test_a_reset_half_way_raises_and_a_fresh_connection_follows():
    async def run():
        answer = lambda n: ([SSE_HEAD, b"10\r\ndata: {\"a\": 1}\n\n\r\n", None] if n == 1
                            else [SSE_HEAD, chunked(b"data: [DONE]\n\n")], False)
        async with RawServer(answer) as server, StreamingClient() as client:
            got, on_body = collect()
            with pytest.raises(OSError):
                await client.post(server.url, b"{}", {}, on_body)
            assert got and got[0][0] == b'data: {"a": 1}\n\n'  # what came before the reset
            assert (await client.post(server.url, b"{}", {}, collect()[1]))[0] == 200
            assert server.connections == 2
    asyncio.run(run())


def test_an_error_raised_by_the_sink_stops_the_read_and_reaches_the_caller():
    async def run():
        answer = lambda n: ([SSE_HEAD, chunked(b"data: {}\n\n", b"data: {}\n\n")], False)

        def on_body(data, arrived):
            raise ValueError("bad payload")
        async with RawServer(answer) as server, StreamingClient() as client:
            with pytest.raises(ValueError, match="bad payload"):
                await client.post(server.url, b"{}", {}, on_body)
    asyncio.run(run())


def test_a_server_that_is_not_there_is_a_clear_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def run():
        async with StreamingClient() as client:
            with pytest.raises(ConnectionError, match=f"cannot connect to 127.0.0.1:{port}"):
                await client.post(f"http://127.0.0.1:{port}/v1/completions", b"{}", {}, collect()[1])
    asyncio.run(run())
