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
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

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
# one SSE event of an OpenAI stream is a few hundred bytes (a few kB with logprobs)
MAX_EVENT_BYTES = 8 * 2**20
# usage counts past these are not counts but a broken server (ABSURD_FACTOR: × the max_tokens asked)
ABSURD_TOKENS = 10_000_000
ABSURD_FACTOR = 10
# a run's default deadline (default_deadline_s): start-up, then per wave of requests a TTFT
# allowance and a per-token bound
DEADLINE_START_S = 60.0
DEADLINE_TTFT_S = 60.0
DEADLINE_PER_TOKEN_S = 0.5
DEADLINE_ERROR = "deadline"
# a request is not sent with less than this left before the deadline: it could not complete, and
# the timers that end the requests in flight at the deadline fire up to 1 ms early (uvloop), so
# the requests waiting behind them would otherwise be sent into the last instant and fail as
# "in flight" or "not sent" by chance
DEADLINE_SLACK_S = 0.010
# a schedule's sends (a rate, a replay) wake this early and yield to the loop until their time
SCHEDULE_SPIN_S = 0.002


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
    # the whole run (warm-up and measured) ends this many seconds after it starts: requests in
    # flight then fail, unsent ones are recorded as not sent. None: default_deadline_s of the load
    deadline_s: float | None = None
    # a trace replay: each prompt is sent at its own `send_at` (workloads.trace), whether or not
    # the ones before it have ended; a concurrency, if given, caps the requests in flight
    replay: bool = False

    def __post_init__(self):
        if self.endpoint not in ENDPOINT_PATHS:
            raise ValueError(f"unknown endpoint {self.endpoint!r}; valid: "
                             f"{', '.join(ENDPOINT_PATHS)}")
        if self.replay and self.request_rate is not None:
            raise ValueError("a trace replay sends at the trace's times, not at a request rate")
        if self.concurrency is None and self.request_rate is None and not self.replay:
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
        if self.deadline_s is not None and not self.deadline_s > 0:
            raise ValueError("the run's deadline must be > 0 s")

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
            # a conversation's turn brings its messages (history and the new one); else one message
            body["messages"] = prompt.prompt if _is_messages(prompt.prompt) else [
                {"role": "user", "content": prompt.prompt}]
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


def _is_messages(prompt) -> bool:
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict)


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
        if len(self._buffer) > MAX_EVENT_BYTES:  # a server that never ends its event would fill memory
            raise BadPayload(f"an SSE event past {MAX_EVENT_BYTES // 2**20} MiB without its end")
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


class BadPayload(ValueError):
    """A well-formed SSE event whose payload is not what an OpenAI-compatible stream sends: not
    JSON, or JSON of another shape (a scalar, `choices` not a list, `token_ids` not integers,
    a usage count that is no count)."""


def _json(raw: bytes):
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise BadPayload(f"not JSON: {err}") from None


def _brief(value) -> str:
    """A server's value in an error text, cut short (the text reaches the card)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def usage_count(usage: dict, key: str, asked: int | None) -> int | None:
    """A token count from `usage`, or None when absent. Anything that is no count — a bool, a
    string, a fraction, a negative number, more than ABSURD_TOKENS or ABSURD_FACTOR × the
    max_tokens asked — raises BadPayload: a server that reports it is broken, and the request is
    a measured failure with that reason (METRICS.md, "Token counts")."""
    value = usage.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadPayload(f"usage.{key} is not a number: {_brief(value)}")
    limit = ABSURD_TOKENS if asked is None else min(ABSURD_TOKENS, ABSURD_FACTOR * asked)
    if not 0 <= value <= limit:  # NaN fails this too
        raise BadPayload(f"usage.{key} {_brief(value)} is not a plausible count (0 … {limit})")
    if isinstance(value, float):
        raise BadPayload(f"usage.{key} is not an integer: {_brief(value)}")
    return value


@dataclass
class _StreamCount:
    """What a request's stream showed beyond its record: the token ids it carried."""

    ids: int = 0
    saw_ids: bool = False  # some chunk carried a token_ids list: the streamed count is exact
    # a conversation's turn keeps the answer for its next turn's history: "ids" (token ids) or
    # "text" (the streamed text), into `kept`
    keep: str | None = None
    kept: list = field(default_factory=list)


def _apply_event(record: RequestRecord, payload, arrived: float, chat: bool, count: _StreamCount) -> None:
    """Fold one SSE payload into the record, checking its shape as it goes (BadPayload names
    what was wrong). TTFT counts the first *content* (text or token ids): vLLM's role-only
    first chat chunk is not a token."""
    if not isinstance(payload, dict):
        raise BadPayload(f"expected a JSON object, got {type(payload).__name__} {_brief(payload)}")
    error = payload.get("error")
    if error is not None:
        raise StreamError(str(error.get("message", error)) if isinstance(error, dict) else str(error))
    usage = payload.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise BadPayload(f"usage is {type(usage).__name__}, not an object")
        claimed = usage_count(usage, "completion_tokens", record.requested_output_tokens)
        if claimed is not None:
            record.claimed_output_tokens = claimed
        prompt_tokens = usage_count(usage, "prompt_tokens", None)
        if prompt_tokens is not None:
            record.prompt_tokens = prompt_tokens
    choices = payload.get("choices")
    if choices is None:
        return
    if not isinstance(choices, list):
        raise BadPayload(f"choices is {type(choices).__name__}, not a list")
    for choice in choices:
        if not isinstance(choice, dict):
            raise BadPayload(f"a choice is {type(choice).__name__} {_brief(choice)}, not an object")
        if chat:
            delta = choice.get("delta")
            if delta is not None and not isinstance(delta, dict):
                raise BadPayload(f"delta is {type(delta).__name__}, not an object")
            text = (delta or {}).get("content")
        else:
            text = choice.get("text")
        if text is not None and not isinstance(text, str):
            raise BadPayload(f"the streamed text is {type(text).__name__}, not a string")
        token_ids = choice.get("token_ids")
        if token_ids is not None:
            if not isinstance(token_ids, list) or not all(type(t) is int for t in token_ids):
                raise BadPayload(f"token_ids is not a list of integers: {_brief(token_ids)}")
            count.saw_ids = True
        if not text and not token_ids:
            continue
        tokens = max(1, len(token_ids or ()))
        if record.first_token_at is None:
            record.first_token_at = arrived
            record.first_chunk_tokens = tokens
        # k token ids → k arrivals at this chunk's time; without ids a chunk counts as one
        # arrival (ITL then is per chunk)
        record.token_times.extend([arrived] * tokens)
        record.content_chunks += 1
        count.ids += len(token_ids or ())
        if count.keep == "ids":
            count.kept.extend(token_ids or ())
        elif count.keep == "text" and text:
            count.kept.append(text)


def settle_token_count(record: RequestRecord, count: _StreamCount, exact: bool) -> None:
    """The served output tokens of a completed stream and whether to trust them (METRICS.md,
    "Token counts"). Streamed token ids are the exact count; usage that disagrees is flagged and
    never counted. Without ids, every content chunk carried at least one new token, so usage is
    taken when it is at least the chunks streamed and at most what was asked; otherwise it is
    flagged and the chunks (a lower bound) count. `exact` (ignore_eos): the count must equal
    max_tokens; else it must not exceed it."""
    claimed, chunks, asked = record.claimed_output_tokens, record.content_chunks, record.requested_output_tokens
    problems = []
    if count.saw_ids:
        record.output_tokens = count.ids
        # usage and ids agree: either is the source; the ids are what was checked
        record.output_tokens_source = "usage" if claimed == count.ids else "token_ids"
        if claimed is not None and claimed != count.ids:
            problems.append(f"usage claims {claimed} tokens, {count.ids} token ids streamed")
    elif claimed is not None:
        if claimed < chunks:
            problems.append(f"usage claims {claimed} tokens, fewer than the {chunks} content chunks streamed")
        elif asked is not None and claimed > asked:
            problems.append(f"usage claims {claimed} tokens, more than the {asked} asked "
                            f"({chunks} content chunks streamed)")
        record.output_tokens, record.output_tokens_source = (chunks, "chunks") if problems else (claimed, "usage")
    if record.output_tokens is None:
        problems.append("no token count: the server sent neither usage nor token ids")
    elif not problems and asked is not None and (record.output_tokens != asked if exact
                                                 else record.output_tokens > asked):
        problems.append(f"{record.output_tokens} tokens ({record.output_tokens_source}), asked {asked}")
    record.token_count_mismatch = "; ".join(problems) or None


async def send_request(client: StreamingClient, config: LoadConfig, headers: dict,
                       body: bytes, record: RequestRecord, deadline: float | None = None,
                       answer: list | None = None, answer_kind: str = "text") -> RequestRecord:
    """Send one streaming request and fill `record`; errors end up in the record, not raised.
    The body's pieces are parsed as they arrive, in the read's own callback (http_stream.py).
    `deadline` (time.monotonic()): the run's end; the request fails there if still in flight,
    and is not sent at all past it. `answer`: a list that receives the streamed answer, as
    `answer_kind` "ids" (token ids) or "text" (a conversation's next turn sends it back)."""
    chat = config.endpoint == "chat"
    parser = SSEParser()
    count = _StreamCount() if answer is None else _StreamCount(keep=answer_kind, kept=answer)
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
            _apply_event(record, _json(raw), arrived, chat, count)

    timeout, by_deadline = config.request_timeout_s, False
    if deadline is not None:
        left = deadline - time.monotonic()
        if left <= DEADLINE_SLACK_S:
            record.error = not_sent_error(config)
            return record
        timeout, by_deadline = min(timeout, left), left < timeout
    record.sent_at = time.monotonic()
    try:
        status, error_body = await asyncio.wait_for(client.post(config.url, body, headers, on_body), timeout)
        record.http_status = status
        if status != 200:
            text = error_body.decode("utf-8", "replace")[:ERROR_TEXT_LIMIT]
            record.error = f"HTTP {status}: {text}"
            return record
        if not done:
            for raw in parser.close():
                if raw.strip() != b"[DONE]":
                    _apply_event(record, _json(raw), time.monotonic(), chat, count)
        if record.first_token_at is None:
            record.error = "stream ended without content"
        else:
            settle_token_count(record, count, exact=config.ignore_eos)
            record.status = "ok"
    except StreamError as err:
        record.error = f"stream error: {err}"[:ERROR_TEXT_LIMIT]
    except BadPayload as err:
        record.error = f"bad SSE payload: {err}"[:ERROR_TEXT_LIMIT]
    except asyncio.TimeoutError:
        record.error = (f"{DEADLINE_ERROR}: the run's {config_deadline_text(config)} ended it in flight"
                        if by_deadline else f"timeout after {config.request_timeout_s:g} s")
    except (OSError, httptools.HttpParserError) as err:  # refused, reset, closed early, bad HTTP
        record.error = f"{type(err).__name__}: {err}"[:ERROR_TEXT_LIMIT]
    finally:
        record.ended_at = time.monotonic()
    return record


def config_deadline_text(config: LoadConfig) -> str:
    return f"{config.deadline_s:g} s deadline" if config.deadline_s is not None else "deadline"


def not_sent_error(config: LoadConfig) -> str:
    return f"{DEADLINE_ERROR}: not sent, the run's {config_deadline_text(config)} had passed"


def default_deadline_s(config: LoadConfig, max_output_tokens: int | None,
                       replay_span_s: float = 0.0) -> float:
    """A run's deadline from its load, when none is given (README "Inference checks", METRICS.md
    "Deadlines"): DEADLINE_START_S, plus the time the load takes to send (its duration, or its
    requests at its rate, or a replay's schedule — `replay_span_s`, its last send time:
    replay_offsets — or its ramp-up), plus for every wave of requests — the requests one
    concurrency's worth of streams carries one after another — DEADLINE_TTFT_S and
    DEADLINE_PER_TOKEN_S per output token of the longest output asked. Generous against any
    server that answers (5-10× vLLM's slowest TPOT at thousands of streams), finite against one
    that never does."""
    tokens = max_output_tokens or 1
    requests, warmup = config.num_requests, config.warmup_requests
    cap = config.concurrency

    def waves(count: int | None) -> int:
        if count is None:  # duration-bound: the streams in flight when it ends finish after it
            return 1
        return math.ceil(count / cap) if cap else 1

    if config.replay:
        sending = replay_span_s if config.duration_s is None else min(replay_span_s, config.duration_s)
    elif config.request_rate is None:
        sending = (config.duration_s or 0.0) + config.ramp_up_s
    elif config.duration_s is not None:
        sending = config.duration_s
    else:
        sending = requests / config.request_rate if math.isfinite(config.request_rate) else 0.0
    warmup_waves = waves(warmup) if warmup else 0
    return DEADLINE_START_S + sending + (warmup_waves + waves(requests)) * (DEADLINE_TTFT_S + tokens * DEADLINE_PER_TOKEN_S)


def run_deadline_s(config: LoadConfig, prompts: list[Prompt]) -> float:
    """The run's deadline: the one given, or default_deadline_s of its load and prompts."""
    if config.deadline_s is not None:
        return config.deadline_s
    span = float(replay_offsets(prompts, config.num_requests)[-1]) if config.replay else 0.0
    return default_deadline_s(config, max((p.output_tokens or 0) for p in prompts), span)


def replay_offsets(prompts: list[Prompt], count: int | None) -> np.ndarray:
    """A replay's send offsets (s from its start): prompt i at its own send time, in the prompts'
    order; `count` past the prompts' end goes round the schedule again after its last send.
    Array arithmetic, not a loop: the deadline and the schedule each ask for it."""
    if any(p.send_at is None for p in prompts):
        raise ValueError("a replay needs prompts with send times (dataset trace)")
    count = len(prompts) if count is None else count
    send_at = np.asarray([p.send_at for p in prompts], dtype=float)
    i = np.arange(count)
    return send_at[i % len(prompts)] + (i // len(prompts)) * send_at[-1]


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


class Stop(Protocol):
    """What LoadGenerator's `stop` needs: threading.Event and multiprocessing's Event have it."""

    def is_set(self) -> bool: ...


class LoadGenerator:
    def __init__(self, config: LoadConfig, prompts: list[Prompt], stop: Stop | None = None):
        """`stop`: an Event (threading's, or multiprocessing's across client processes): once it is
        set no further measured request is sent and those in flight finish — a fixed-concurrency
        load that lasts until its caller is done with it (a profile window), its duration only
        the bound should the caller never set it."""
        if not prompts:
            raise ValueError("no prompts")
        if stop is not None and (config.concurrency is None or config.request_rate is not None or config.replay
                                 or any(p.conversation is not None for p in prompts)):
            raise ValueError("a stop applies to a fixed-concurrency load of single requests")
        if config.endpoint == "chat" and any(not isinstance(p.prompt, str) for p in prompts):
            raise ValueError("token-id prompts need the completions endpoint")
        self.conversational = any(p.conversation is not None for p in prompts)
        if self.conversational and config.endpoint == "completions" and not config.return_token_ids \
                and any(isinstance(p.prompt, list) for p in prompts):
            raise ValueError("token-id conversations need the answers' token ids (return_token_ids) for their history")
        if self.conversational and (config.request_rate is not None or config.replay or config.concurrency is None):
            raise ValueError("a multi-turn load runs at a concurrency (conversations in flight), not a rate or a replay")
        self.config = config
        self.prompts = prompts
        self.stop = stop
        self.headers = config.headers()  # fails early when the key variable is missing
        self._next_id = 0
        # unique per run and per worker process: vLLM refuses a request id already in flight
        self._id_prefix = f"gpucert-{os.getpid()}-{secrets.token_hex(4)}"
        self._bodies: list[bytes] | None = None  # every prompt's body, encoded before a schedule starts

    def _record(self, scheduled_at: float, warmup: bool, slot: int | None = None,
                prompt: Prompt | None = None) -> tuple[RequestRecord, bytes]:
        """The next request; its prompt `prompt` (a conversation's turn with its history), the
        `slot`-th (a replay's schedule slot) or, by default, the next in turn."""
        request_id, self._next_id = self._next_id, self._next_id + 1
        if prompt is None:
            index = (request_id if slot is None else slot) % len(self.prompts)
            prompt = self.prompts[index]
            body = self._bodies[index] if self._bodies is not None else self.config.body(prompt)
        else:
            body = self.config.body(prompt)
        record = RequestRecord(request_id=request_id, scheduled_at=scheduled_at,
                               prompt_tokens=prompt.prompt_tokens, warmup=warmup,
                               requested_output_tokens=prompt.output_tokens,
                               x_request_id=f"{self._id_prefix}-{request_id}",
                               conversation=None if warmup else prompt.conversation,
                               turn=None if warmup or prompt.conversation is None else prompt.turn)
        return record, body

    async def run(self) -> RunRecords:
        cfg = self.config
        deadline_s = run_deadline_s(cfg, self.prompts)
        self._deadline = time.monotonic() + deadline_s
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
                if self.conversational:
                    records += await self._conversations(session)
                elif cfg.replay:
                    records += await self._replay(session)
                elif cfg.request_rate is not None:
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
        passed = any(r.error and r.error.startswith(DEADLINE_ERROR) for r in records)
        return RunRecords(records=records, started_monotonic=started, started_wall=started_wall,
                          loop_lag_s=probe.samples, cpu_fraction=cpu, deadline_s=deadline_s,
                          deadline_passed=passed)

    def _unsent(self, count: int, warmup: bool) -> list[RequestRecord]:
        """Requests the deadline left unsent: failed records, so the counts stay honest."""
        records = []
        for _ in range(count):
            record, _ = self._record(time.monotonic(), warmup)
            record.error = not_sent_error(self.config)
            records.append(record)
        return records

    async def _concurrent(self, session, count: int | None, duration_s: float | None,
                          workers: int, warmup: bool, ramp_up_s: float = 0.0) -> list[RequestRecord]:
        """`workers` loops, each sending its next request as soon as its last one ends; loop i
        starts i × ramp_up_s / workers after the first. None is sent past the run's deadline."""
        deadline = None if duration_s is None else time.monotonic() + duration_s
        issued, done = 0, []

        async def worker(index: int):
            nonlocal issued
            if ramp_up_s:
                await asyncio.sleep(index * ramp_up_s / workers)
            while (count is None or issued < count) and (
                    deadline is None or time.monotonic() < deadline) and (
                    time.monotonic() < self._deadline - DEADLINE_SLACK_S) and (
                    warmup or self.stop is None or not self.stop.is_set()):
                issued += 1
                record, body = self._record(time.monotonic(), warmup)
                done.append(await send_request(session, self.config, self.headers, body, record,
                                               deadline=self._deadline))

        await asyncio.gather(*(worker(i) for i in range(workers)))
        if count is not None and issued < count:
            done += self._unsent(count - issued, warmup)
        return done

    async def _conversations(self, session) -> list[RequestRecord]:
        """`concurrency` conversations at a time, each turn after the answer to the one before
        (and its think time), sent with the conversation's whole history: its earlier messages
        and the server's real answers. A failed turn ends its conversation: its later turns are
        recorded failed, not sent (their history would be wrong)."""
        cfg = self.config
        waiting: deque[list[Prompt]] = deque()
        for prompt in self.prompts:
            if prompt.conversation is None:
                raise ValueError("a multi-turn load needs every prompt in a conversation (dataset multiturn)")
            if not waiting or waiting[-1][0].conversation != prompt.conversation:
                waiting.append([])
            waiting[-1].append(prompt)
        limit = cfg.num_requests if cfg.num_requests is not None else len(self.prompts)
        issued, done = 0, []

        async def worker() -> None:
            nonlocal issued
            while waiting and issued < limit and time.monotonic() < self._deadline - DEADLINE_SLACK_S:
                history: list | str | None = None
                turns = sorted(waiting.popleft(), key=lambda p: p.turn)
                for index, turn in enumerate(turns):
                    if issued >= limit:
                        return
                    if index and turn.think_s:  # from the previous answer's end
                        await sleep_until(done[-1].ended_at + turn.think_s)
                    issued += 1
                    full, kind = with_history(history, turn, cfg.endpoint)
                    record, body = self._record(time.monotonic(), warmup=False, prompt=full)
                    answer: list = []
                    done.append(await send_request(session, cfg, self.headers, body, record,
                                                   deadline=self._deadline, answer=answer, answer_kind=kind))
                    if not done[-1].ok:
                        left = turns[index + 1:][:limit - issued]
                        issued += len(left)
                        done.extend(self._broken(left, done[-1]))
                        break
                    history = after_answer(full.prompt, answer, kind, cfg.endpoint)

        await asyncio.gather(*(worker() for _ in range(cfg.concurrency)))
        if issued < limit:
            done += self._unsent(limit - issued, warmup=False)
        return done

    def _broken(self, turns: list[Prompt], failed: RequestRecord) -> list[RequestRecord]:
        records = []
        for turn in turns:
            record, _ = self._record(time.monotonic(), warmup=False, prompt=turn)
            record.error = (f"not sent: turn {failed.turn} of its conversation failed "
                            f"({(failed.error or '')[:120]})")
            records.append(record)
        return records

    async def _at_rate(self, session) -> list[RequestRecord]:
        """Send on the arrival schedule (absolute times, so one late send does not delay the
        rest); a concurrency, if given, caps the requests in flight as vLLM's max-concurrency."""
        cfg = self.config
        count = cfg.num_requests
        if count is None:  # duration-bound: enough arrivals to outlast it
            expected = cfg.duration_s * (cfg.request_rate if math.isfinite(cfg.request_rate)
                                         else 1000.0)
            count = int(expected * 2 + 100)
        return await self._on_schedule(session, arrival_offsets(count, cfg.request_rate, cfg.burstiness, cfg.seed))

    async def _replay(self, session) -> list[RequestRecord]:
        """Each prompt at its own send time (a trace's), in the prompts' order."""
        return await self._on_schedule(session, replay_offsets(self.prompts, self.config.num_requests),
                                       prompt_by_slot=True)

    async def _on_schedule(self, session, offsets: np.ndarray, prompt_by_slot: bool = False) -> list[RequestRecord]:
        """Send at `offsets` (s after now; absolute times, so one late send does not delay the
        rest); a concurrency, if given, caps the requests in flight as vLLM's max-concurrency."""
        cfg = self.config
        gate = asyncio.Semaphore(cfg.concurrency) if cfg.concurrency else None
        # a burst's sends follow one another in this loop: encoding a body at its send (~0.1 ms for
        # 1,024 token ids) would make each later request of the burst that much later
        self._bodies = [cfg.body(prompt) for prompt in self.prompts]
        start, tasks = time.monotonic(), []

        async def one(record: RequestRecord, body: bytes) -> RequestRecord:
            if gate is None:
                return await send_request(session, cfg, self.headers, body, record, deadline=self._deadline)
            async with gate:
                return await send_request(session, cfg, self.headers, body, record, deadline=self._deadline)

        for offset in offsets:
            if cfg.duration_s is not None and offset >= cfg.duration_s:
                break
            scheduled = start + float(offset)
            if scheduled >= self._deadline:
                break
            await sleep_until(scheduled)
            slot = len(tasks) if prompt_by_slot else None
            tasks.append(asyncio.create_task(one(*self._record(scheduled, warmup=False, slot=slot))))
        records = list(await asyncio.gather(*tasks))
        if cfg.num_requests is not None and len(records) < cfg.num_requests:
            records += self._unsent(cfg.num_requests - len(records), warmup=False)
        return records


async def sleep_until(deadline: float) -> None:
    """Until time.monotonic() reaches `deadline`: uvloop's timers have 1 ms granularity (they fire
    up to 1 ms early, or late), so sleep to SCHEDULE_SPIN_S before it, then yield to the loop
    until it comes."""
    delay = deadline - time.monotonic() - SCHEDULE_SPIN_S
    if delay > 0:
        await asyncio.sleep(delay)
    while time.monotonic() < deadline:
        await asyncio.sleep(0)


def with_history(history, turn: Prompt, endpoint: str) -> tuple[Prompt, str]:
    """The turn as sent — its conversation's history, then its new message — and how its answer
    is kept: chat, a list of messages (answers as text); completions, token ids after token ids
    (the answers' ids) or text after text."""
    if endpoint == "chat":
        messages = [*(history or []), {"role": "user", "content": turn.prompt}]
        return replace(turn, prompt=messages, prompt_tokens=None), "text"
    if isinstance(turn.prompt, list):
        ids = [*(history or []), *turn.prompt]
        return replace(turn, prompt=ids, prompt_tokens=len(ids)), "ids"
    text = f"{history} {turn.prompt}" if history else turn.prompt
    return replace(turn, prompt=text, prompt_tokens=None), "text"


def after_answer(sent, answer: list, kind: str, endpoint: str):
    """The history after a turn: what was sent and the server's answer."""
    if endpoint == "chat":
        return [*sent, {"role": "assistant", "content": "".join(answer)}]
    return [*sent, *answer] if kind == "ids" else sent + "".join(answer)


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


def run_load(config: LoadConfig, prompts: list[Prompt], stop: Stop | None = None) -> RunRecords:
    """Run a load in a fresh event loop (the CLI and the checks; async callers use
    `LoadGenerator(...).run()` inside `frozen_heap()`); `stop` as LoadGenerator's."""
    with frozen_heap():
        return run_in_new_loop(LoadGenerator(config, prompts, stop).run())
