"""Serving engine: a streaming load generator for OpenAI-compatible servers and its oracle.

- `records`  one `RequestRecord` per request (send, first token, every token's arrival, usage)
- `summary`  the serving metrics of DESIGN.md (TTFT, TPOT, per-token ITL, E2E, tok/s, goodput)
- `loadgen`  asyncio streaming client (http_stream: httptools in the read callback): SSE parsing, concurrency / request-rate modes, self-check
- `emulator` an OpenAI-compatible server whose token timing is known exactly (the oracle)
- `cli`      `gpucert loadgen` and `gpucert emulator`

Datasets (`datasets`), model presets (`presets`) and the vLLM lifecycle (`vllm_*`) live in
their own modules of this package.
"""
