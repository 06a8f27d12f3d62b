"""An OpenAI-compatible streaming server whose token timing is known exactly: the oracle the
load generator is tested against, and a stand-in server for trying the client by hand.

Every chunk of a request is sent at an absolute deadline measured from the moment its service
started (on `time.monotonic()`, not `loop.time()`: uvloop caches that per iteration in whole ms),
never after accumulated sleeps, so a late wake-up for one chunk does not shift the chunks after it:
    chunk i (tokens i·k … i·k+k−1) at  start + TTFT + i·ITL  (+ stall, from token `stall_after`)
Without a scheduler (the default) every request is in service from the moment its handler started.

The scheduler (`max_running` and/or `kv_blocks` set): a model of vLLM V1's, deterministic given
the arrival times, so a self-test knows the server's capacity exactly. It is the truth the
studies' tests compare against:

- A request arrives when its handler starts (the `start` of GET /emulator/timings) and queues
  FIFO (`vllm:num_requests_waiting`). It is admitted, at the head of the queue only, when fewer
  than `max_running` requests are in service (vLLM's max_num_seqs) and, with a KV cache, when
  the blocks its next token needs are free. Its service starts at that instant: its chunks then
  follow the schedule above from the service start (TTFT: its prefill), so a wait shows in its
  TTFT and nowhere else.
- KV cache (`kv_blocks` × `block_size` tokens): one block is kept back, as vLLM V1's block pool
  keeps its null block, so `kv_blocks − 1` are handed out. A request with P prompt tokens holds
  ceil((P + j) / block_size) blocks while it emits token j (0-based): the prompt and every token
  before the one being emitted — vLLM writes a token's KV one step after sampling it, so the last
  token is never stored and a request's peak is ceil((P + O − 1) / block_size) for O output
  tokens. Admission allocates the blocks for the next token (ceil((P + g) / block_size) for a
  request that has generated g); a chunk's tokens allocate theirs when it is sent.
- Preemption (vLLM V1's recompute policy): when a chunk's tokens need a block and none is free,
  the most recently admitted request in service is preempted — possibly the one that needed the
  block, which then sends nothing — until the block fits. A preempted request frees all its
  blocks, goes back to the FRONT of the queue (several preempted at one instant keep their
  admission order) and counts in `vllm:num_preemptions_total`; readmitted, its prompt includes
  what it generated (P + g tokens to prefill again: TTFT after readmission) and it resumes at its
  next token — its client sees a pause. A preemption itself admits nobody (vLLM skips the
  waiting queue in a step that preempted): admissions happen at arrivals and when a request
  finishes or leaves.
- Ordering: the model runs on the nominal times (arrivals and chunk deadlines), never on the
  moments the handlers happen to wake: whoever looks (a handler at its deadline, /metrics)
  first applies every event due by now in time order; chunks due at the same instant in
  admission order (as vLLM schedules its running requests). A busy box makes the sends late,
  not the schedule different.
- `max_model_len`: a request whose prompt + max_tokens exceeds it is answered HTTP 400 with
  vLLM's error (`context_length_error`). With a KV cache it may not exceed the cache's usable
  tokens ((kv_blocks − 1) × block_size; vLLM refuses to start when one request of max_model_len
  cannot fit) and defaults to them, so no admitted request can wait forever for blocks.

Prompt tokens: a token-id prompt counts exactly; text counts as whitespace words (no tokenizer).

Prefix cache (`prefix_cache`, emulator_prefix.py): vLLM's automatic prefix caching as its counters
see it (`vllm:prefix_cache_queries` / `_hits` on /metrics), and with `prefill_ms_per_token` the
TTFT a hit saves.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import multiprocessing
import os
import json
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from .emulator_prefix import PrefixCache
from .emulator_profile import StepProfiler, profiler_delay, profiler_dir, profiler_kind

DEFAULT_OUTPUT_TOKENS = 16
LISTEN_BACKLOG = 4096  # aiohttp's 128 drops SYNs of a 256-stream burst: +1 s TTFT retransmits
# epoll waits in whole milliseconds rounded up (selectors.EpollSelector), so a plain sleep wakes
# 0–1 ms late; the last SPIN_WINDOW_S before a deadline is spent yielding to the loop instead.
SPIN_WINDOW_S = 0.0012
FAKE_TOKEN_BASE = 1000  # emitted token ids are FAKE_TOKEN_BASE + position % 1000

# vLLM's `vllm:cache_config_info` labels (its CacheConfig, every field as str()) for an emulated
# KV cache of 4,096 blocks × 16 tokens; `engine` is added per engine. The two capacity labels
# (kv_cache_size_tokens, kv_cache_max_concurrency at 4,096 tokens a request) as newer vLLM
# releases publish them; an older one lacks them (drop them from EmulatorConfig.cache_config).
EMULATED_CACHE_CONFIG = {
    "_block_size_resolved": "True", "block_size": "16", "cache_dtype": "auto",
    "calculate_kv_scales": "False", "enable_prefix_caching": "True", "gpu_memory_utilization": "0.92",
    "is_attention_free": "False", "kv_cache_max_concurrency": "16.0", "kv_cache_memory_bytes": "None",
    "kv_cache_size_tokens": "65536", "kv_offloading_backend": "native", "kv_offloading_size": "None",
    "kv_sharing_fast_prefill": "False", "mamba_block_size": "None", "mamba_cache_dtype": "auto",
    "mamba_ssm_cache_dtype": "auto", "num_cpu_blocks": "None", "num_gpu_blocks": "4096",
    "num_gpu_blocks_override": "None", "prefix_caching_hash_algo": "sha256", "sliding_window": "None",
    "user_specified_block_size": "False",
}


def _label_value(value: str) -> str:
    """A label value as the Prometheus text format escapes it."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


@dataclass
class EmulatorConfig:
    ttft_ms: float = 50.0
    itl_ms: float = 10.0  # between chunks
    tokens_per_chunk: int = 1
    error_rate: float = 0.0  # fraction of requests answered with HTTP 500
    stall_after: int | None = None  # pause before emitting this token index (0-based)
    stall_ms: float = 0.0
    seed: int = 0
    model: str = "gpucert-emulator"
    send_done: bool = True  # False: end streams with a plain close, no `data: [DONE]`
    send_usage: bool = True  # False: ignore stream_options.include_usage (a server without usage)
    # the process dies (exit status 70, no goodbye) when this many requests have arrived: a server
    # that crashes mid-run, for the lifecycle self-tests
    exit_after: int | None = None
    # keep, per X-Request-Id, the handler's start and the moment just before each content chunk
    # was handed to the socket (GET /emulator/timings): what the server really did, against which
    # the client's own timestamps are checked, whatever the box's load made of the configured schedule
    record_timings: bool = False
    # the labels of `vllm:cache_config_info` on /metrics (EMULATED_CACHE_CONFIG; vLLM's format);
    # None: no such line, as from a vLLM that does not publish it
    cache_config: dict[str, str] | None = field(default_factory=lambda: dict(EMULATED_CACHE_CONFIG))
    # the scheduler (module docstring), all off by default: every request in service at once.
    # max_running: at most this many requests in service (vLLM's max_num_seqs), the rest queue
    max_running: int | None = None
    # a KV cache of kv_blocks × block_size tokens that requests fill as they generate, preempted
    # when it is full; it sets cache_config's num_gpu_blocks, block_size and capacity labels
    kv_blocks: int | None = None
    block_size: int = 16
    # prompt + max_tokens above this: HTTP 400 with vLLM's error (with kv_blocks: the cache's
    # usable tokens when not given)
    max_model_len: int | None = None
    # vLLM's --profiler-config (JSON): with {"profiler": "torch", "torch_profiler_dir": DIR} the
    # emulator answers POST /start_profile and /stop_profile as vLLM does, writing a real PyTorch
    # profiler trace of its steps (one every itl_ms) to DIR (emulator_profile.py)
    profiler_config: str | None = None
    # per step, how long the emulated GPU waits on the host (the step's scheduling) in the trace
    host_gap_ms: float = 0.0
    # vLLM's automatic prefix caching (emulator_prefix.py), counted on /metrics; each prompt token
    # the cache does not hold adds prefill_ms_per_token to the request's TTFT (without the
    # scheduler), so a hit shows in TTFT as it does on a GPU
    prefix_cache: bool = False
    prefill_ms_per_token: float = 0.0
    prefix_cache_blocks: int | None = None  # capacity in blocks (None: no eviction)

    def __post_init__(self):
        if self.tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be >= 1")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if self.ttft_ms < 0 or self.itl_ms < 0 or self.stall_ms < 0:
            raise ValueError("ttft_ms, itl_ms and stall_ms must be >= 0")
        for name in ("max_running", "max_model_len"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.block_size < 1:
            raise ValueError("block_size must be >= 1")
        if self.kv_blocks is not None:
            if self.kv_blocks < 2:
                raise ValueError("kv_blocks must be >= 2 (one is kept back, as vLLM's null block)")
            usable = (self.kv_blocks - 1) * self.block_size
            if self.max_model_len is not None and self.max_model_len > usable:
                raise ValueError(f"max_model_len {self.max_model_len} does not fit the KV cache's {usable} usable "
                                 f"tokens ((kv_blocks {self.kv_blocks} − 1) × block_size {self.block_size}); "
                                 "vLLM refuses to start so")
        if self.cache_config is not None:
            self.cache_config = self._consistent_cache_config(dict(self.cache_config))
        if self.host_gap_ms < 0:
            raise ValueError("host_gap_ms must be >= 0")
        if self.prefill_ms_per_token < 0:
            raise ValueError("prefill_ms_per_token must be >= 0")
        if self.prefill_ms_per_token and self.scheduled:
            raise ValueError("prefill_ms_per_token applies without the scheduler (--max-running, --kv-blocks)")
        if self.prefix_cache_blocks is not None and self.prefix_cache_blocks < 1:
            raise ValueError("prefix_cache_blocks must be >= 1")
        if self.prefix_cache and self.cache_config is not None:  # it says so as vLLM does
            self.cache_config["enable_prefix_caching"] = "True"
        if self.profiler_config:
            try:
                trace_dir = profiler_dir(self.profiler_config)
            except ValueError:
                raise ValueError(f"profiler_config: not JSON: {self.profiler_config!r}") from None
            if trace_dir is not None and (self.itl_ms <= 0 or self.host_gap_ms >= self.itl_ms):
                raise ValueError("a profiling emulator steps every itl_ms: needs itl_ms > host_gap_ms >= 0")

    @property
    def scheduled(self) -> bool:
        """Whether requests go through the scheduler (module docstring)."""
        return self.max_running is not None or self.kv_blocks is not None

    @property
    def context_limit(self) -> int | None:
        """The most prompt + output tokens a request may ask for (None: any)."""
        if self.max_model_len is not None:
            return self.max_model_len
        return None if self.kv_blocks is None else (self.kv_blocks - 1) * self.block_size

    def _consistent_cache_config(self, labels: dict[str, str]) -> dict[str, str]:
        """cache_config_info's KV labels as vLLM derives them: num_gpu_blocks and block_size from
        the emulated cache; max concurrency = num_gpu_blocks / ceil(max_model_len / block_size) and
        kv_cache_size_tokens = int(max concurrency × max_model_len), vLLM's get_kv_cache_capacity
        for a model of one full-attention KV group (= num_gpu_blocks × block_size when max_model_len
        is a multiple of the block size). Labels the caller left out stay out."""
        if self.kv_blocks is not None:
            labels.update(num_gpu_blocks=str(self.kv_blocks), block_size=str(self.block_size))
        limit = self.context_limit
        try:
            blocks, block_size = int(labels["num_gpu_blocks"]), int(labels["block_size"])
        except (KeyError, ValueError):
            return labels
        if limit is not None and blocks > 0 and block_size > 0:
            concurrency = blocks / math.ceil(limit / block_size)
            for name, value in (("kv_cache_max_concurrency", str(concurrency)),
                                ("kv_cache_size_tokens", str(int(concurrency * limit)))):
                if name in labels:
                    labels[name] = value
        return labels

    def chunk_offsets_s(self, output_tokens: int, prefill_tokens: int = 0) -> list[tuple[float, int, int]]:
        """(offset from request start in s, first token index, token count) of every chunk;
        `prefill_tokens` (those the prefix cache did not hold) add prefill_ms_per_token each."""
        chunks, k = [], self.tokens_per_chunk
        prefill_ms = prefill_tokens * self.prefill_ms_per_token
        for i, first in enumerate(range(0, output_tokens, k)):
            offset_ms = self.ttft_ms + prefill_ms + i * self.itl_ms
            if self.stall_after is not None and first >= self.stall_after:
                offset_ms += self.stall_ms
            chunks.append((offset_ms / 1000.0, first, min(k, output_tokens - first)))
        return chunks

    def segment_offset_s(self, chunks: list[tuple[float, int, int]], i: int, first: int) -> float:
        """Offset of chunk i from the start of a service segment whose first chunk is `first`
        (0 for a request never preempted: then chunk_offsets_s's offset): its TTFT, ITL per chunk
        since, and the stall when its chunk falls in this segment."""
        offset_ms = self.ttft_ms + (i - first) * self.itl_ms
        if self.stall_after is not None and chunks[i][1] >= self.stall_after:
            stalled = next(n for n, chunk in enumerate(chunks) if chunk[1] >= self.stall_after)
            if first <= stalled:
                offset_ms += self.stall_ms
        return offset_ms / 1000.0


def context_length_error(max_model_len: int, prompt_tokens: int, output_tokens: int) -> dict:
    """vLLM's answer (HTTP 400) to a request longer than max_model_len: its error JSON and the
    wording of its token-length check (vLLM 0.2x's renderer, VLLMValidationError with parameter
    input_tokens; older releases said "However, you requested N tokens (P in the messages, O in
    the completion)"), the counts exact here (vLLM says "at least" where it truncated the
    tokenization)."""
    message = (f"This model's maximum context length is {max_model_len} tokens. However, you requested "
               f"{output_tokens} output tokens and your prompt contains {prompt_tokens} input tokens, for a "
               f"total of {prompt_tokens + output_tokens} tokens. Please reduce the length of the input prompt "
               f"or the number of requested output tokens. (parameter=input_tokens, value={prompt_tokens})")
    return {"error": {"message": message, "type": "BadRequestError", "param": "input_tokens", "code": 400}}


WAITING, RUNNING, FINISHED, GONE = "waiting", "running", "finished", "gone"

# vLLM's buckets for vllm:inter_token_latency_seconds (0.26)
ITL_BUCKETS_S = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
                 40.0, 80.0)


class EngineItl:
    """`vllm:inter_token_latency_seconds` as vLLM keeps it: one observation per output after a
    request's first, the time since its previous one on the engine's clock (here the nominal
    times the outputs were due: what the emulated engine did, not when a busy handler wrote them)."""

    def __init__(self):
        self.total_s, self.count = 0.0, 0
        self.buckets = [0] * len(ITL_BUCKETS_S)

    def observe(self, seconds: float) -> None:
        self.total_s += seconds
        self.count += 1
        for i, edge in enumerate(ITL_BUCKETS_S):
            if seconds <= edge:
                self.buckets[i] += 1

    def exposition(self, labels: str) -> list[str]:
        """Its lines as prometheus_client writes a histogram (cumulative buckets, +Inf, count, sum)."""
        name = "vllm:inter_token_latency_seconds"
        lines = [f"# HELP {name} Histogram of inter-token latency in seconds.", f"# TYPE {name} histogram"]
        for edge, n in zip(ITL_BUCKETS_S, self.buckets):
            lines.append(f'{name}_bucket{{{labels},le="{edge}"}} {float(n)}')
        lines += [f'{name}_bucket{{{labels},le="+Inf"}} {float(self.count)}',
                  f"{name}_count{{{labels}}} {float(self.count)}", f"{name}_sum{{{labels}}} {self.total_s!r}"]
        return lines


@dataclass(eq=False)
class Sequence:
    """One request in the scheduler: what it asked for, where it is, and the nominal times of
    what happened to it (`arrival`, each admission, each preemption, `finished`)."""

    prompt_tokens: int
    chunks: list[tuple[float, int, int]]  # EmulatorConfig.chunk_offsets_s of its output
    arrival: float
    state: str = WAITING
    emitted: int = 0  # chunks sent (in the model: the handler writes them as it gets to them)
    held: int = 0  # KV blocks
    segment_start: float = 0.0  # the current service segment: its start and first chunk
    segment_first: int = 0
    order: int = 0  # admission order (of the current admission)
    admitted: list[float] = field(default_factory=list)
    preempted: list[float] = field(default_factory=list)
    finished: float | None = None
    wake: Callable[[], None] | None = None  # called when admitted (the handler awaits it)
    pushed: int = 0  # its live entry in the scheduler's event heap (older entries are stale)
    last_at: float | None = None  # the nominal time of its last chunk (its next inter-token latency starts there)


class Scheduler:
    """The scheduler of the module docstring, on nominal times: pure bookkeeping, no I/O, so the
    self-tests can run it on their own arrival times to know what the server will do."""

    def __init__(self, config: EmulatorConfig, itl: EngineItl | None = None):
        self.config = config
        self.itl = itl or EngineItl()
        self.now = -math.inf
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []  # in admission order
        self.free_blocks = None if config.kv_blocks is None else config.kv_blocks - 1
        self.preemptions = 0
        self._events: list[tuple[float, int, int, Sequence]] = []  # (deadline, order, push, seq)
        self._admissions = 0
        self._pushes = 0

    # -- what a request needs
    def _blocks_before(self, seq: Sequence, token: int) -> int:
        """Blocks `seq` holds while it emits token index `token` (module docstring)."""
        return math.ceil((seq.prompt_tokens + token) / self.config.block_size)

    def deadline(self, seq: Sequence) -> float:
        """When the next chunk of `seq` (running) is due."""
        return seq.segment_start + self.config.segment_offset_s(seq.chunks, seq.emitted, seq.segment_first)

    @property
    def used_blocks(self) -> int:
        return 0 if self.free_blocks is None else self.config.kv_blocks - 1 - self.free_blocks

    @property
    def kv_usage(self) -> float:
        """vLLM's kv_cache_usage_perc: the handed-out share of the usable blocks, 0 … 1."""
        return 0.0 if self.config.kv_blocks is None else self.used_blocks / (self.config.kv_blocks - 1)

    # -- events
    def arrive(self, at: float, prompt_tokens: int, chunks: list[tuple[float, int, int]]) -> Sequence:
        """A request arrives at `at` (or at the model's present, if it has moved past `at`)."""
        self.advance(at)
        seq = Sequence(prompt_tokens=prompt_tokens, chunks=chunks, arrival=max(at, self.now))
        self.now = seq.arrival
        self.waiting.append(seq)
        self._admit(seq.arrival)
        return seq

    def leave(self, seq: Sequence, at: float) -> None:
        """The request is gone before it finished (its client went away): free what it held."""
        self.advance(at)
        if seq.state == RUNNING:
            self.running.remove(seq)
            self._free(seq)
            seq.state = GONE
            self._admit(self.now)
        elif seq.state == WAITING:
            self.waiting.remove(seq)
            seq.state = GONE

    def advance(self, now: float) -> None:
        """Apply every chunk due by `now`, in deadline order (ties in admission order)."""
        while self._events and self._events[0][0] <= now:
            deadline, _, push, seq = heapq.heappop(self._events)
            if seq.state != RUNNING or push != seq.pushed:
                continue  # preempted or gone since this was due
            self.now = max(self.now, deadline)
            self._emit(seq, deadline)
        self.now = max(self.now, now)

    def _emit(self, seq: Sequence, at: float) -> None:
        _, first, count = seq.chunks[seq.emitted]
        if self.free_blocks is not None:
            need = self._blocks_before(seq, first + count - 1) - seq.held
            while need > self.free_blocks:
                victim = self.running[-1]  # the most recently admitted
                self._preempt(victim, at)
                if victim is seq:
                    return
            self.free_blocks -= max(need, 0)
            seq.held += max(need, 0)
        if seq.emitted:  # its first chunk is the first token: no inter-token latency (vLLM's rule)
            self.itl.observe(at - seq.last_at)
        seq.last_at = at
        seq.emitted += 1
        if seq.emitted == len(seq.chunks):
            self.running.remove(seq)
            self._free(seq)
            seq.state, seq.finished = FINISHED, at
            self._admit(at)
        else:
            self._schedule(seq)

    def _preempt(self, seq: Sequence, at: float) -> None:
        self.running.remove(seq)
        self._free(seq)
        seq.state = WAITING
        seq.preempted.append(at)
        self.preemptions += 1
        # vLLM prepends it: victims go from the most recently admitted down, so those preempted
        # at one instant keep their admission order at the head of the queue
        self.waiting.appendleft(seq)

    def _free(self, seq: Sequence) -> None:
        if self.free_blocks is not None:
            self.free_blocks += seq.held
        seq.held = 0

    def _admit(self, at: float) -> None:
        """Admit from the head of the queue while it fits."""
        limit = self.config.max_running
        while self.waiting and (limit is None or len(self.running) < limit):
            seq = self.waiting[0]
            need = 0
            if self.free_blocks is not None:
                need = self._blocks_before(seq, seq.chunks[seq.emitted][1])
                if need > self.free_blocks:
                    return
                self.free_blocks -= need
            self.waiting.popleft()
            seq.held = need
            seq.state = RUNNING
            self._admissions += 1
            seq.order = self._admissions
            seq.segment_start, seq.segment_first = at, seq.emitted
            seq.admitted.append(at)
            self.running.append(seq)
            self._schedule(seq)
            if seq.wake is not None:
                seq.wake()

    def _schedule(self, seq: Sequence) -> None:
        self._pushes += 1
        seq.pushed = self._pushes  # the one live entry of `seq`: older ones are skipped
        heapq.heappush(self._events, (self.deadline(seq), seq.order, self._pushes, seq))


async def sleep_until(deadline: float) -> None:
    """Wake at `deadline` (time.monotonic() clock) within the loop's scheduling jitter, not up to
    the 1 ms timer rounding (asyncio's epoll waits in whole ms; uvloop's timers run on a clock
    cached in whole ms and fire up to 1 ms early): sleep coarsely, then yield until it passes."""
    coarse = deadline - SPIN_WINDOW_S - time.monotonic()
    if coarse > 0:
        await asyncio.sleep(coarse)
    while time.monotonic() < deadline:
        await asyncio.sleep(0)


def _prompt_units(body: dict, chat: bool) -> list:
    """The prompt as the emulator counts it: token ids, else whitespace words (no tokenizer); a
    chat's messages one after another, so a conversation's history is a prefix of its next turn."""
    if chat:
        return [w for m in body.get("messages", []) for w in str(m.get("content", "")).split()]
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return prompt
    return str(prompt).split()


def _sse(payload) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class Emulator:
    def __init__(self, config: EmulatorConfig):
        self.config = config
        self._errors = random.Random(config.seed)  # seeded: the failed count is reproducible
        self.requests_seen = 0
        self.running = 0  # requests between arrival and their last byte: vLLM's "running" gauge
        self.timings: dict[str, dict] = {}
        self.itl = EngineItl()
        self.scheduler = Scheduler(config, self.itl) if config.scheduled else None
        self.prefix_cache = PrefixCache(config.block_size, config.prefix_cache_blocks) if config.prefix_cache else None
        trace_dir = profiler_dir(config.profiler_config)
        self.profiler = None if trace_dir is None else StepProfiler(
            trace_dir, config.itl_ms / 1e3, config.host_gap_ms / 1e3, lambda: self.running,
            profiler_delay(config.profiler_config))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        if self.config.record_timings:
            app.router.add_get("/emulator/timings", self._timings)
        if profiler_kind(self.config.profiler_config):  # vLLM adds the routes only with a profiler configured
            app.router.add_post("/start_profile", self._start_profile)
            app.router.add_post("/stop_profile", self._stop_profile)
        return app

    async def _start_profile(self, request: web.Request) -> web.Response:
        if self.profiler is not None:
            self.profiler.start()
        return web.Response(status=200)

    async def _stop_profile(self, request: web.Request) -> web.Response:
        if self.profiler is not None:
            await self.profiler.stop()
        return web.Response(status=200)

    async def _timings(self, request: web.Request) -> web.Response:
        return web.json_response(self.timings)

    def gauges(self) -> dict[str, float]:
        """What /metrics publishes of the scheduler, as of now: without one, the streams being
        served (no queue, no preemption)."""
        if self.scheduler is None:
            return {"vllm:num_requests_running": self.running, "vllm:num_requests_waiting": 0,
                    "vllm:num_preemptions_total": 0}
        sched = self.scheduler
        sched.advance(time.monotonic())
        values = {"vllm:num_requests_running": len(sched.running), "vllm:num_requests_waiting": len(sched.waiting),
                  "vllm:num_preemptions_total": sched.preemptions}
        if self.config.kv_blocks is not None:
            values["vllm:kv_cache_usage_perc"] = sched.kv_usage
        return values

    def counters(self) -> dict[str, float]:
        """The prefix cache's counters, as vLLM publishes them: with prefix caching off both stay
        at 0 (vLLM 0.26.0 on an H100, session 17)."""
        if self.prefix_cache is None:
            return {"vllm:prefix_cache_queries_total": 0, "vllm:prefix_cache_hits_total": 0}
        return {"vllm:prefix_cache_queries_total": self.prefix_cache.queries,
                "vllm:prefix_cache_hits_total": self.prefix_cache.hits}

    async def _metrics(self, request: web.Request) -> web.Response:
        """vLLM's Prometheus names for what an emulator has: the requests in service and queued,
        the preemptions, the KV cache's usage (a fraction, 1 = full, as vLLM's
        `vllm:kv_cache_usage_perc`; only with a KV cache), the inter-token latency histogram
        (EngineItl) and, as vLLM publishes its CacheConfig,
        `vllm:cache_config_info`: an info gauge of value 1 whose labels, sorted by name as vLLM's
        multiprocess collector writes them, are the cache config's fields and the engine."""
        labels = f'engine="0",model_name="{_label_value(self.config.model)}"'
        lines = []
        for name, value in {**self.gauges(), **self.counters()}.items():
            kind = "counter" if name.endswith("_total") else "gauge"
            lines += [f"# TYPE {name} {kind}", f"{name}{{{labels}}} {float(value)}"]  # as prometheus_client writes
        lines += self.itl.exposition(labels)  # after gauges(): the scheduler has counted the chunks due by now
        if self.config.cache_config is not None:
            info = sorted({**self.config.cache_config, "engine": "0"}.items())
            lines += ["# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig",
                      "# TYPE vllm:cache_config_info gauge",
                      "vllm:cache_config_info{" + ",".join(f'{k}="{_label_value(str(v))}"' for k, v in info)
                      + "} 1.0"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _health(self, request: web.Request) -> web.Response:
        # which process answered: with --processes N, shows the kernel spreading connections
        return web.Response(text="", headers={"X-Emulator-Pid": str(os.getpid())})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.config.model, "object": "model", "owned_by": "gpucert"}]})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=False)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, chat=True)

    async def _generate(self, request: web.Request, chat: bool) -> web.StreamResponse:
        self.running += 1
        try:
            return await self._respond(request, chat)
        finally:
            self.running -= 1

    async def _respond(self, request: web.Request, chat: bool) -> web.StreamResponse:
        start = time.monotonic()  # every deadline of this request is an offset from here (or its admission)
        body = await request.json()
        self.requests_seen += 1
        if self.config.exit_after is not None and self.requests_seen > self.config.exit_after:
            os._exit(70)  # a crash: no response, no cleanup, connections reset
        if self._errors.random() < self.config.error_rate:
            return web.json_response({"error": {"message": "emulated server error",
                                                "type": "InternalServerError"}}, status=500)
        output_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens")
                            or DEFAULT_OUTPUT_TOKENS)
        units = _prompt_units(body, chat)
        prompt_tokens = len(units)
        limit = self.config.context_limit
        if limit is not None and prompt_tokens + output_tokens > limit:
            return web.json_response(context_length_error(limit, prompt_tokens, output_tokens), status=400)
        want_ids = bool(body.get("return_token_ids"))
        want_usage = self.config.send_usage and bool(
            (body.get("stream_options") or {}).get("include_usage"))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                 "total_tokens": prompt_tokens + output_tokens}
        cached, computed = 0, []
        if self.prefix_cache is not None:
            cached, computed = self.prefix_cache.lookup(units)
        chunks = self.config.chunk_offsets_s(output_tokens, prefill_tokens=prompt_tokens - cached)
        request_id = request.headers.get("X-Request-Id", f"emu-{self.requests_seen}")
        served = _Served(self, start, prompt_tokens, chunks)
        if self.config.record_timings:
            served.record["cached_tokens"] = cached
        try:
            if not body.get("stream"):
                await served.until(len(chunks))
                self._cache(computed)
                return web.json_response(self._whole(chat, output_tokens, usage))

            response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                   "Cache-Control": "no-cache"})
            await response.prepare(request)
            base = {"id": f"emu-{self.requests_seen}", "created": int(time.time()),
                    "model": self.config.model,
                    "object": "chat.completion.chunk" if chat else "text_completion"}
            if chat:  # vLLM's first chat chunk carries only the role: it is not the first token
                await response.write(_sse({**base, "choices": [
                    {"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
            writes: list[float] = []
            if self.config.record_timings:
                served.record.update(start=start, writes=writes)
                self.timings[request_id] = served.record
            for n, (_, first, count) in enumerate(chunks):
                await served.until(n + 1)
                if n == 0:  # the prefill is done: its blocks are cached from now on
                    self._cache(computed)
                text = "".join(f" t{first + j}" for j in range(count))
                choice: dict = {"index": 0, "finish_reason": "length" if n == len(chunks) - 1 else None}
                if chat:
                    choice["delta"] = {"content": text}
                else:
                    choice["text"] = text
                if want_ids:
                    choice["token_ids"] = [FAKE_TOKEN_BASE + (first + j) % 1000 for j in range(count)]
                # stamped just before the chunk goes to the socket: a lower bound on its send, so no
                # correct client can have read it earlier. A stamp after the write lands after the
                # client's read whenever this process is preempted in between (seen under a CPU hog:
                # client arrivals 18 ms "before" such a stamp)
                writes.append(time.monotonic())
                await response.write(_sse({**base, "choices": [choice]}))
            # decode filled blocks too: vLLM caches a block once its KV is computed, and the KV of
            # every answer token but the last one (sampled, never fed back) is
            self._cache_answer(units, output_tokens, want_ids and not chat)
            if want_usage:
                await response.write(_sse({**base, "choices": [], "usage": usage}))
            if self.config.send_done:
                await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        finally:
            served.leave()

    def _cache(self, keys: list[int]) -> None:
        if self.prefix_cache is not None:
            self.prefix_cache.insert(keys)

    def _cache_answer(self, units: list, output_tokens: int, ids: bool) -> None:
        """The prompt and the answer but its last token, as the client will send them back in a
        conversation's next turn: the token ids streamed, or the words of the streamed text."""
        if self.prefix_cache is not None and output_tokens > 1:
            answer = ([FAKE_TOKEN_BASE + j % 1000 for j in range(output_tokens - 1)] if ids
                      else [f"t{j}" for j in range(output_tokens - 1)])
            self.prefix_cache.insert(self.prefix_cache.keys([*units, *answer]))

    def _whole(self, chat: bool, output_tokens: int, usage: dict) -> dict:
        text = "".join(f" t{i}" for i in range(output_tokens))
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}} if chat
                  else {"index": 0, "text": text})
        return {"id": "emu", "model": self.config.model, "choices": [
            {**choice, "finish_reason": "length"}], "usage": usage}


class _Served:
    """One request's way through the server: `until(n)` returns when its first n chunks are due
    to be sent. Without a scheduler, chunk i is due at start + its offset; with one, the
    scheduler decides (admission, preemption) and the request waits its turn."""

    def __init__(self, emulator: Emulator, start: float, prompt_tokens: int, chunks: list):
        self.start, self.chunks = start, chunks
        self.scheduler = emulator.scheduler
        # its GET /emulator/timings entry: with a scheduler, its decisions on nominal times
        # (arrival, each admission and preemption, finished)
        self.record: dict = {}
        self.itl, self.observed = emulator.itl, 1  # chunks whose inter-token latency is counted (the first has none)
        self.seq = None
        if self.scheduler is not None:
            self._admitted = asyncio.Event()
            self.seq = self.scheduler.arrive(start, prompt_tokens, chunks)
            self.seq.wake = self._admitted.set
            self.record = {"arrival": self.seq.arrival, "admitted": self.seq.admitted,
                           "preempted": self.seq.preempted}

    async def until(self, n: int) -> None:
        if self.seq is None:
            await sleep_until(self.start + self.chunks[n - 1][0])
            for i in range(self.observed, n):  # the scheduler counts its own
                self.itl.observe(self.chunks[i][0] - self.chunks[i - 1][0])
            self.observed = max(self.observed, n)
            return
        seq, sched = self.seq, self.scheduler
        while seq.emitted < n:
            if seq.state == WAITING:
                self._admitted.clear()
                await self._admitted.wait()
                continue
            await sleep_until(sched.deadline(seq))
            sched.advance(time.monotonic())

    def leave(self) -> None:
        if self.seq is not None:
            self.scheduler.leave(self.seq, time.monotonic())
            self.record["finished"] = self.seq.finished


class EmulatorServer:
    """The emulator in the caller's event loop on `host`:`port` (0 = a free port), e.g. for
    self-tests: `async with EmulatorServer(config) as server: server.base_url`."""

    def __init__(self, config: EmulatorConfig, host: str = "127.0.0.1", port: int = 0):
        self.emulator = Emulator(config)
        self.host, self.port = host, port
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def __aenter__(self) -> EmulatorServer:
        self._runner = web.AppRunner(self.emulator.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=LISTEN_BACKLOG)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port the OS picked
        return self

    async def __aexit__(self, *exc) -> None:
        await self._runner.cleanup()


def _serve_one(config: EmulatorConfig, host: str, port: int, reuse_port: bool) -> None:
    from .loadgen import new_event_loop  # uvloop where installed: the emulator keeps up longer
    web.run_app(Emulator(config).app(), host=host, port=port, access_log=None, reuse_port=reuse_port,
                backlog=LISTEN_BACKLOG, print=lambda *_: None, loop=new_event_loop())


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 8000, processes: int = 1) -> None:
    """Run until interrupted (the `gpucert emulator` command). `processes` > 1 runs that many
    servers on the same port (SO_REUSEPORT: the kernel spreads connections over them), so the
    emulator is not the limit when one client machine drives thousands of zero-ITL streams.
    Each process keeps its own error/exit-after counts."""
    if processes <= 1:
        _serve_one(config, host, port, reuse_port=False)
        return
    # daemonic: when this process leaves run_app (SIGINT/SIGTERM), the others are terminated
    others = [multiprocessing.Process(target=_serve_one, args=(config, host, port, True), daemon=True)
              for _ in range(processes - 1)]
    for proc in others:
        proc.start()
    _serve_one(config, host, port, reuse_port=True)
