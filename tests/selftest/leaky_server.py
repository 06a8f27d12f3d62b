"""An OpenAI-compatible streaming server on 127.0.0.1 that leaks the credentials it is sent: the
self-tests' fault for gpucert's redaction (test_secrets.py). It checks them as a real keyed
server does (a Bearer key, a URL's user:password as Basic auth, or an `api_key` query value)
and then echoes what it received back where a careless server would.

    python leaky_server.py --port P --mode MODE   (the expected credential in LEAKY_EXPECT)

Modes:
- `401`: every completion is refused with 401 and a JSON error quoting the Authorization header
  and the request's query (as some gateways do);
- `stream`: the text of every chunk quotes the credential, and the last event is an error object
  without a `message` (the client quotes the whole object);
- `midstream`: two tokens, then an error event quoting the credential, then the stream ends;
- `models`: GET /v1/models names the model after the credential (id and owned_by); completions
  serve normally (gpucert keeps the model's name with the configuration);
- `html500`: 500 with an HTML page quoting the credential HTML-escaped and URL-encoded.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import urllib.parse

from aiohttp import web

MODES = ("401", "stream", "midstream", "models", "html500")


def _credential(request: web.Request) -> str:
    return request.headers.get("Authorization", "") + " " + request.query_string


def _authorized(request: web.Request) -> bool:
    expected = os.environ["LEAKY_EXPECT"]
    return expected in (request.headers.get("Authorization", ""), request.query.get("api_key", ""))


def _chunk(payload: dict) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def build_app(mode: str) -> web.Application:
    model_name = os.environ["LEAKY_EXPECT"] if mode == "models" else "leaky-model"

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(request: web.Request) -> web.Response:
        if not _authorized(request):
            return web.json_response({"error": {"message": f"bad credential {_credential(request)}"}}, status=401)
        return web.json_response({"object": "list", "data": [
            {"id": model_name, "object": "model", "owned_by": _credential(request)}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        echoed = _credential(request)
        if mode == "401" or not _authorized(request):
            return web.json_response({"error": {"message": f"Incorrect API key provided: {echoed}",
                                                "type": "invalid_request_error"}}, status=401)
        if mode == "html500":
            page = (f"<html><body><p>upstream refused {html.escape(echoed)}</p>"
                    f"<a href='/retry?auth={urllib.parse.quote(echoed, safe='')}'>retry</a></body></html>")
            return web.Response(text=page, status=500, content_type="text/html")
        prompt = body.get("prompt")
        prompt_tokens = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
        tokens = int(body.get("max_tokens") or 8)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(tokens):
            if mode == "midstream" and i == 2:
                await response.write(_chunk({"error": {"message": f"credential {echoed} revoked mid-stream",
                                                       "code": 401}}))
                await response.write_eof()
                return response
            if mode == "stream" and i == tokens - 1:
                await response.write(_chunk({"error": {"detail": f"stream for {echoed} cut", "code": 500}}))
                await response.write_eof()
                return response
            text = f" {echoed}" if mode == "stream" else " tok"
            await response.write(_chunk({"id": "x", "object": "text_completion", "model": model_name,
                                         "choices": [{"index": 0, "text": text}]}))
        await response.write(_chunk({"choices": [], "usage": {"prompt_tokens": prompt_tokens,
                                                               "completion_tokens": tokens}}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    args = parser.parse_args()
    web.run_app(build_app(args.mode), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
