"""Streaming load generator for OpenAI-compatible servers (/v1/completions, /v1/chat/completions).

One asyncio loop, one streaming HTTP client (`http_stream.StreamingClient`: each chunk parsed in
the socket read's own callback, connections kept alive). Modes: fixed concurrency (N workers), or a
request rate with gamma inter-arrivals (shape = burstiness, 1 = Poisson; `inf` = all at once),
optionally capped by a concurrency; bounded by a request count and/or a duration. Warm-up
requests run first and are marked so the summary leaves them out. While it runs, a probe
measures event-loop oversleep, so a slow client is never taken for a slow server.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

import httptools
import numpy as np

from gpucert import redaction
from gpucert.serving.records import RequestRecord, RunRecords
from .datasets import Prompt  # text or token ids, with the output length to request
from .http_stream import StreamingClient

ENDPOINT_PATHS = {"completions": "/completions", "chat": "/chat/completions"}
LAG_PROBE_INTERVAL_S = 0.010
MIN_CPU_WALL_S = 0.5
ERROR_TEXT_LIMIT = 300


@dataclass
class LoadConfig:
    base_url: str  # e.g. http://127.0.0.1:8000/v1
    model: str
    endpoint: Literal["completions", "chat"] = "completions"
    concurrency: int | None = None
    request_rate: float | None = None  # requests/s; math.inf sends all at once
    burstiness: float = 1.0  # gamma shape of inter-arrivals
    # fixed concurrency: the measured streams start evenly over this many seconds instead of in
    # one instant (a burst of thousands of connections queues at the server and stalls the
    # client's own loop; a ramp measures the steady state)
    ramp_up_s: float = 0.0
    num_requests: int | None = None
    duration_s: float | None = None
    warmup_requests: int = 0
    seed: int = 0
    ignore_eos: bool = True  # vLLM: generate exactly max_tokens
    return_token_ids: bool = False  # vLLM: stream token ids with each chunk
    include_usage: bool = True
    extra_body: dict = field(default_factory=dict)
    api_key_env: str | None = None  # name of the variable holding the key, never the key
    request_timeout_s: float = 600.0
    connect_timeout_s: float = 10.0

    def __post_init__(self):
        if self.endpoint not in ENDPOINT_PATHS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; valid: "
                             f"{', '.join(ENDPOINT_PATHS)}")
        if self.concurrency is None and self.request_rate is None:
            raise ValueError("give a concurrency or a request rate")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.request_rate is not None and not self.request_rate > 0:
            raise ValueError("request rate must be > 0 (or inf)")
        if self.burstiness <= 0:
            raise ValueError("burstiness must be > 0")
        if not self.ramp_up_s >= 0:
            raise ValueError("ramp-up must be >= 0 s")
        if self.ramp_up_s and self.request_rate is not None:
            raise ValueError("a ramp-up applies to a fixed concurrency, not to a request rate")
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("bound the run by a request count and/or a duration")
        if self.num_requests is not None and self.num_requests < 1:
            raise ValueError("num_requests must be >= 1")
        if self.warmup_requests < 0:
            raise ValueError("warmup_requests must be >= 0")

    @property
    def url(self) -> str:
        """Where requests go: the base URL's path plus the endpoint's, its query kept, its
        user:password left out (they travel in the Authorization header)."""
        parts = urllib.parse.urlsplit(self.base_url)
        return redaction.without_credentials(urllib.parse.urlunsplit(
            parts._replace(path=parts.path.rstrip("/") + ENDPOINT_PATHS[self.endpoint], fragment="")))

    def headers(self) -> dict[str, str]:
        """The key (or the URL's user:password) is registered as a secret when it is read, so a
        server echoing it back in an error is redacted wherever that error is written."""
        headers = {"Content-Type": "application/json"}
        redaction.register_url(self.base_url)
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise ValueError(f"environment variable {self.api_key_env} is not set")
            redaction.register(key)
            headers["Authorization"] = f"Bearer {key}"
        elif redaction.basic_credentials(self.base_url):
            headers["Authorization"] = f"Basic {redaction.basic_credentials(self.base_url)}"
        return headers

    def body(self, prompt: Prompt) -> bytes:
        body: dict = {"model": self.model, "max_tokens": prompt.output_tokens, "stream": True}
        if self.endpoint == "chat":
            body["messages"] = [{"role": "user", "content": prompt.prompt}]
        else:
            body["prompt"] = prompt.prompt
        if self.include_usage:
            body["stream_options"] = {"include_usage": True}
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.return_token_ids:
            body["return_token_ids"] = True
        body.update(self.extra_body)
        return json.dumps(body).encode()


class SSEParser:
    """Splits a byte stream into server-sent-event `data` payloads, as bytes (json.loads takes
    them as they are). Handles \\r\\n, comments, multi-line data and events split across reads;
    the usual event — one `data: ` line — takes a fast path (this runs once per streamed chunk)."""

    def __init__(self):
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
        *events, self._buffer = (self._buffer + data if self._buffer else data).split(b"\n\n")
        payloads = []
        for event in events:
            if event.startswith(b"data: ") and b"\n" not in event:
                payloads.append(event[6:])
            else:
                payload = self._payload(event)
                if payload is not None:
                    payloads.append(payload)
        return payloads

    def close(self) -> list[bytes]:
        """A stream may end without a blank line after its last event (a plain close)."""
        rest, self._buffer = self._buffer, b""
        payload = self._payload(rest) if rest.strip() else None
        return [payload] if payload is not None else []

    @staticmethod
    def _payload(event: bytes) -> bytes | None:
        lines = [line[5:].removeprefix(b" ") for line in event.split(b"\n")
                 if line.startswith(b"data:")]
        return b"\n".join(lines) if lines else None


class StreamError(Exception):
    """The server reported an error inside an otherwise successful stream."""


def _apply_event(record: RequestRecord, payload: dict, arrived: float, chat: bool,
                 streamed_ids: list[int]) -> None:
    """Fold one SSE payload into the record. TTFT counts the first *content* (text or token
    ids): vLLM's role-only first chat chunk is not a token."""
    if "error" in payload:
        error = payload["error"]
        raise StreamError(error.get("message", str(error)) if isinstance(error, dict)
                          else str(error))
    if payload.get("usage"):
        usage = payload["usage"]
        if usage.get("completion_tokens") is not None:
            record.output_tokens = int(usage["completion_tokens"])
            record.output_tokens_source = "usage"
        if usage.get("prompt_tokens") is not None:
            record.prompt_tokens = int(usage["prompt_tokens"])
    for choice in payload.get("choices") or ():
        text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
        token_ids = choice.get("token_ids") or []
        if not text and not token_ids:
            continue
        if record.first_token_at is None:
            record.first_token_at = arrived
        # k token ids → k arrivals at this chunk's time; without ids a chunk counts as one
        # arrival (ITL then is per chunk; output tokens still come from usage)
        record.token_times.extend([arrived] * max(1, len(token_ids)))
        streamed_ids.extend(token_ids)


async def send_request(client: StreamingClient, config: LoadConfig, headers: dict,
                       body: bytes, record: RequestRecord) -> RequestRecord:
    """Send one streaming request and fill `record`; errors end up in the record, not raised.
    The body's pieces are parsed as they arrive, in the read's own callback (http_stream.py)."""
    chat = config.endpoint == "chat"
    parser, streamed_ids = SSEParser(), []
    done = False
    if record.x_request_id:
        headers = {**headers, "X-Request-Id": record.x_request_id}

    def on_body(data: bytes, arrived: float) -> None:
        nonlocal done
        if done:
            return
        for raw in parser.feed(data):  # one read: its events arrived together
            if raw.strip() == b"[DONE]":
                done = True
                return
            _apply_event(record, json.loads(raw), arrived, chat, streamed_ids)

    record.sent_at = time.monotonic()
    try:
        status, error_body = await asyncio.wait_for(client.post(config.url, body, headers, on_body),
                                                    config.request_timeout_s)
        record.http_status = status
        if status != 200:
            text = error_body.decode("utf-8", "replace")[:ERROR_TEXT_LIMIT]
            record.error = f"HTTP {status}: {text}"
            return record
        if not done:
            for raw in parser.close():
                if raw.strip() != b"[DONE]":
                    _apply_event(record, json.loads(raw), time.monotonic(), chat, streamed_ids)
        if record.output_tokens is None and streamed_ids:
            record.output_tokens, record.output_tokens_source = len(streamed_ids), "token_ids"
        if record.first_token_at is None:
            record.error = "stream ended without content"
        else:
            record.status = "ok"
    except StreamError as err:
        record.error = f"stream error: {err}"[:ERROR_TEXT_LIMIT]
    except json.JSONDecodeError as err:
        record.error = f"bad SSE payload: {err}"
    except asyncio.TimeoutError:
        record.error = f"timeout after {config.request_timeout_s:g} s"
    except (OSError, httptools.HttpParserError) as err:  # refused, reset, closed early, bad HTTP
        record.error = f"{type(err).__name__}: {err}"[:ERROR_TEXT_LIMIT]
    finally:
        record.ended_at = time.monotonic()
    return record


def arrival_offsets(count: int, rate: float, burstiness: float, seed: int) -> np.ndarray:
    """Send offsets (s from start) of `count` requests: gamma inter-arrivals with mean 1/rate
    and shape `burstiness` (1 = Poisson), as vLLM bench serve; all zero for rate inf."""
    if math.isinf(rate):
        return np.zeros(count)
    gaps = np.random.default_rng(seed).gamma(burstiness, 1.0 / (rate * burstiness), count)
    return np.cumsum(gaps) - gaps[0]  # the first request goes at once


class _LagProbe:
    """Sleeps LAG_PROBE_INTERVAL_S over and over and records the oversleep: how long a ready
    callback waits for the loop. A busy client shows here before it shows in the results."""

    def __init__(self):
        self.samples: list[float] = []

    async def run(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(LAG_PROBE_INTERVAL_S)
            self.samples.append(max(0.0, time.monotonic() - before - LAG_PROBE_INTERVAL_S))


class LoadGenerator:
    def __init__(self, config: LoadConfig, prompts: list[Prompt]):
        if not prompts:
            raise ValueError("no prompts")
        if config.endpoint == "chat" and any(not isinstance(p.prompt, str) for p in prompts):
            raise ValueError("token-id prompts need the completions endpoint")
        self.config = config
        self.prompts = prompts
        self.headers = config.headers()  # fails early when the key variable is missing
        self._next_id = 0
        # unique per run and per worker process: vLLM refuses a request id already in flight
        self._id_prefix = f"gpucert-{os.getpid()}-{secrets.token_hex(4)}"

    def _record(self, scheduled_at: float, warmup: bool) -> tuple[RequestRecord, bytes]:
        request_id, self._next_id = self._next_id, self._next_id + 1
        prompt = self.prompts[request_id % len(self.prompts)]
        record = RequestRecord(request_id=request_id, scheduled_at=scheduled_at,
                               prompt_tokens=prompt.prompt_tokens, warmup=warmup,
                               requested_output_tokens=prompt.output_tokens,
                               x_request_id=f"{self._id_prefix}-{request_id}")
        return record, self.config.body(prompt)

    async def run(self) -> RunRecords:
        cfg = self.config
        # no pool limit: the mode decides how many requests are in flight
        async with StreamingClient(connect_timeout_s=cfg.connect_timeout_s) as session:
            records: list[RequestRecord] = []
            if cfg.warmup_requests:
                records += await self._concurrent(session, cfg.warmup_requests, None,
                                                  min(cfg.warmup_requests,
                                                      cfg.concurrency or cfg.warmup_requests),
                                                  warmup=True)
            probe = _LagProbe()
            probe_task = asyncio.create_task(probe.run())
            started, started_wall, cpu_before = time.monotonic(), time.time(), time.process_time()
            try:
                if cfg.request_rate is not None:
                    records += await self._at_rate(session)
                else:
                    records += await self._concurrent(session, cfg.num_requests, cfg.duration_s,
                                                      cfg.concurrency, warmup=False,
                                                      ramp_up_s=cfg.ramp_up_s)
            finally:
                probe_task.cancel()
            wall = time.monotonic() - started
            # too short a run gives a meaningless CPU fraction (start-up dominates it)
            cpu = (time.process_time() - cpu_before) / wall if wall >= MIN_CPU_WALL_S else None
        return RunRecords(records=records, started_monotonic=started, started_wall=started_wall,
                          loop_lag_s=probe.samples, cpu_fraction=cpu)

    async def _concurrent(self, session, count: int | None, duration_s: float | None,
                          workers: int, warmup: bool, ramp_up_s: float = 0.0) -> list[RequestRecord]:
        """`workers` loops, each sending its next request as soon as its last one ends; loop i
        starts i × ramp_up_s / workers after the first."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        issued, done = 0, []

        async def worker(index: int):
            nonlocal issued
            if ramp_up_s:
                await asyncio.sleep(index * ramp_up_s / workers)
            while (count is None or issued < count) and (
                    deadline is None or time.monotonic() < deadline):
                issued += 1
                record, body = self._record(time.monotonic(), warmup)
                done.append(await send_request(session, self.config, self.headers, body, record))

        await asyncio.gather(*(worker(i) for i in range(workers)))
        return done

    async def _at_rate(self, session) -> list[RequestRecord]:
        """Send on the arrival schedule (absolute times, so one late send does not delay the
        rest); a concurrency, if given, caps the requests in flight as vLLM's max-concurrency."""
        cfg = self.config
        count = cfg.num_requests
        if count is None:  # duration-bound: enough arrivals to outlast it
            expected = cfg.duration_s * (cfg.request_rate if math.isfinite(cfg.request_rate)
                                         else 1000.0)
            count = int(expected * 2 + 100)
        offsets = arrival_offsets(count, cfg.request_rate, cfg.burstiness, cfg.seed)
        gate = asyncio.Semaphore(cfg.concurrency) if cfg.concurrency else None
        start, tasks = time.monotonic(), []

        async def one(record: RequestRecord, body: bytes) -> RequestRecord:
            if gate is None:
                return await send_request(session, cfg, self.headers, body, record)
            async with gate:
                return await send_request(session, cfg, self.headers, body, record)

        for offset in offsets:
            if cfg.duration_s is not None and offset >= cfg.duration_s:
                break
            scheduled = start + float(offset)
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            while time.monotonic() < scheduled:  # uvloop's timers may fire up to 1 ms early
                await asyncio.sleep(0)
            tasks.append(asyncio.create_task(one(*self._record(scheduled, warmup=False))))
        return list(await asyncio.gather(*tasks))


@contextlib.contextmanager
def frozen_heap():
    """Keep the garbage collector off the objects that exist before the run. A process that has
    imported torch (the plugin's snapshot does) holds millions of them; a full collection during a
    burst of streams then stalls the event loop for 100+ ms, and the client would measure itself
    (seen: TTFT p50 at 256 streams against the emulator went from ~70 to 140-270 ms). vLLM's
    `bench serve` freezes the heap for the same reason."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (a dependency on Linux; vLLM's own server runs on it), else
    asyncio's. Per streamed chunk, asyncio's selector loop and its socket reads cost more than
    the client's own parsing (profiled: ~75 % of the client's CPU at 500 streams); uvloop takes a
    large part of that, so one client process holds more streams before its loop lags."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_in_new_loop(coro):
    """asyncio.run() on new_event_loop() — also on Python 3.10, which has no asyncio.Runner."""
    loop = new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def run_load(config: LoadConfig, prompts: list[Prompt]) -> RunRecords:
    """Run a load in a fresh event loop (the CLI and the checks; async callers use
    `LoadGenerator(...).run()` inside `frozen_heap()`)."""
    with frozen_heap():
        return run_in_new_loop(LoadGenerator(config, prompts).run())
