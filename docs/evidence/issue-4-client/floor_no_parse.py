"""The floor under the client's per-chunk CPU: http_stream's StreamingClient on uvloop with a body
callback that only counts (no SSE split, no JSON, no records). python floor_no_parse.py STREAMS PORT"""
import asyncio
import sys
import time

import uvloop

from gpucert.serving.http_stream import StreamingClient

STREAMS, PORT, SECONDS = int(sys.argv[1]), int(sys.argv[2]), 12.0
BODY = b'{"model":"m","prompt":[1,2,3],"max_tokens":128,"stream":true,"ignore_eos":true,"return_token_ids":true}'
reads = 0


def on_body(data, arrived):
    global reads
    reads += 1


async def stream(client, end):
    while time.monotonic() < end:
        await client.post(f"http://127.0.0.1:{PORT}/v1/completions", BODY, {}, on_body)


async def main():
    async with StreamingClient() as client:
        end = time.monotonic() + SECONDS
        t0, c0 = time.monotonic(), time.process_time()
        await asyncio.gather(*(stream(client, end) for _ in range(STREAMS)))
        wall, cpu = time.monotonic() - t0, time.process_time() - c0
    print(f"{'floor (no parsing)':<22} {STREAMS:>6} streams: {reads / wall:>8,.0f} reads/s, client CPU {cpu / wall:4.0%}, "
          f"{1e6 * cpu / reads:5.1f} µs CPU per read")


uvloop.run(main())
