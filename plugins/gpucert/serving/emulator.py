"""An OpenAI-compatible streaming server whose token timing is known exactly: the oracle the
load generator is tested against, and a stand-in server for trying the client by hand.

Every chunk of a request is sent at an absolute deadline measured from the moment its handler
started (on `time.monotonic()`, not `loop.time()`: uvloop caches that per iteration in whole ms),
never after accumulated sleeps, so a late wake-up for one chunk does not shift the chunks after it:
    chunk i (tokens i·k … i·k+k−1) at  start + TTFT + i·ITL  (+ stall, from token `stall_after`)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import json
import random
import time
from dataclasses import dataclass, field

from aiohttp import web

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

    def __post_init__(self):
        if self.tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be >= 1")
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError("error_rate must be within [0, 1]")
        if self.ttft_ms < 0 or self.itl_ms < 0 or self.stall_ms < 0:
            raise ValueError("ttft_ms, itl_ms and stall_ms must be >= 0")

    def chunk_offsets_s(self, output_tokens: int) -> list[tuple[float, int, int]]:
        """(offset from request start in s, first token index, token count) of every chunk."""
        chunks, k = [], self.tokens_per_chunk
        for i, first in enumerate(range(0, output_tokens, k)):
            offset_ms = self.ttft_ms + i * self.itl_ms
            if self.stall_after is not None and first >= self.stall_after:
                offset_ms += self.stall_ms
            chunks.append((offset_ms / 1000.0, first, min(k, output_tokens - first)))
        return chunks


async def sleep_until(deadline: float) -> None:
    """Wake at `deadline` (time.monotonic() clock) within the loop's scheduling jitter, not up to
    the 1 ms timer rounding (asyncio's epoll waits in whole ms; uvloop's timers run on a clock
    cached in whole ms and fire up to 1 ms early): sleep coarsely, then yield until it passes."""
    coarse = deadline - SPIN_WINDOW_S - time.monotonic()
    if coarse > 0:
        await asyncio.sleep(coarse)
    while time.monotonic() < deadline:
        await asyncio.sleep(0)


def _prompt_tokens(body: dict, chat: bool) -> int:
    """A token-id prompt counts exactly; text counts as whitespace words (no tokenizer here)."""
    if chat:
        return sum(len(str(m.get("content", "")).split()) for m in body.get("messages", []))
    prompt = body.get("prompt", "")
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return len(prompt)
    return len(str(prompt).split())


def _sse(payload) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class Emulator:
    def __init__(self, config: EmulatorConfig):
        self.config = config
        self._errors = random.Random(config.seed)  # seeded: the failed count is reproducible
        self.requests_seen = 0
        self.running = 0  # requests between arrival and their last byte: vLLM's "running" gauge
        self.timings: dict[str, dict] = {}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/metrics", self._metrics)
        if self.config.record_timings:
            app.router.add_get("/emulator/timings", self._timings)
        return app

    async def _timings(self, request: web.Request) -> web.Response:
        return web.json_response(self.timings)

    async def _metrics(self, request: web.Request) -> web.Response:
        """vLLM's Prometheus names for what an emulator has: the streams it is serving (no queue,
        no preemption) and, as vLLM publishes its CacheConfig, `vllm:cache_config_info`: an info
        gauge of value 1 whose labels, sorted by name as vLLM's multiprocess collector writes them,
        are the cache config's fields and the engine."""
        labels = f'engine="0",model_name="{_label_value(self.config.model)}"'
        lines = []
        for name, kind, value in (("vllm:num_requests_running", "gauge", self.running),
                                  ("vllm:num_requests_waiting", "gauge", 0),
                                  ("vllm:num_preemptions_total", "counter", 0)):
            lines += [f"# TYPE {name} {kind}", f"{name}{{{labels}}} {float(value)}"]  # as prometheus_client writes
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
        start = time.monotonic()  # every deadline of this request is an offset from here
        body = await request.json()
        self.requests_seen += 1
        if self.config.exit_after is not None and self.requests_seen > self.config.exit_after:
            os._exit(70)  # a crash: no response, no cleanup, connections reset
        if self._errors.random() < self.config.error_rate:
            return web.json_response({"error": {"message": "emulated server error",
                                                "type": "InternalServerError"}}, status=500)
        output_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens")
                            or DEFAULT_OUTPUT_TOKENS)
        prompt_tokens = _prompt_tokens(body, chat)
        want_ids = bool(body.get("return_token_ids"))
        want_usage = self.config.send_usage and bool(
            (body.get("stream_options") or {}).get("include_usage"))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                 "total_tokens": prompt_tokens + output_tokens}
        if not body.get("stream"):
            await sleep_until(start + self.config.chunk_offsets_s(output_tokens)[-1][0])
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
        chunks = self.config.chunk_offsets_s(output_tokens)
        writes: list[float] = []
        if self.config.record_timings:
            self.timings[request.headers.get("X-Request-Id", base["id"])] = {"start": start, "writes": writes}
        for n, (offset, first, count) in enumerate(chunks):
            await sleep_until(start + offset)
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
        if want_usage:
            await response.write(_sse({**base, "choices": [], "usage": usage}))
        if self.config.send_done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _whole(self, chat: bool, output_tokens: int, usage: dict) -> dict:
        text = "".join(f" t{i}" for i in range(output_tokens))
        choice = ({"index": 0, "message": {"role": "assistant", "content": text}} if chat
                  else {"index": 0, "text": text})
        return {"id": "emu", "model": self.config.model, "choices": [
            {**choice, "finish_reason": "length"}], "usage": usage}


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
