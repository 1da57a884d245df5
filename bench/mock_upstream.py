"""A loopback OpenAI-compatible upstream for the benchmark (aiohttp).

    python bench/mock_upstream.py --port 18100 [--uvloop] [--chunks 10]

One process serves every mode; the mode is the URL prefix, so each proxy under test is
simply pointed at a different base URL:

    /lat0/v1/chat/completions    the whole answer at once
    /lat20/v1/chat/completions   the whole answer after 20 ms (any /lat<N>/ works)
    /cad10/v1/chat/completions   a model generating: with "stream": true the first chunk
                                 goes out at once, then one chunk every 10 ms (any /cad<N>/)
    /<mode>/v1/models            the model list (health probes)

Like a real model server, a mode takes the same total time streamed or not: a streamed
/lat<N>/ answer sends all its chunks after N ms; a non-streamed /cad<N>/ answer comes after
(chunks - 1) * N ms. (This matters: llm-manager streams from local servers even for unary
calls, so that a cancelled call stops the upstream's generation.)

A stream is ``--chunks`` content chunks (the first with the role, as LM Studio and llama.cpp
do), a finish chunk carrying ``usage``, then ``data: [DONE]``. The body is parsed as JSON on
every call, as a real server would. Replies are always the same 20 words, so every proxy's
answer can be checked for the exact text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from aiohttp import web

REPLY_TEXT = "Hello from the benchmark mock upstream. This reply has a fixed size and content, twenty words long, every single time."
USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}
CREATED = int(time.time())


def _completion(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": REPLY_TEXT}, "finish_reason": "stop", "logprobs": None}
            ],
            "usage": USAGE,
        }
    ).encode()


def _chunk(model: str, delta: dict[str, object], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    body: dict[str, object] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def stream_pieces(chunks: int) -> list[str]:
    """REPLY_TEXT cut into ``chunks`` pieces (what a streaming client must reassemble)."""
    words = REPLY_TEXT.split(" ")
    chunks = max(1, min(chunks, len(words)))
    bounds = [round(i * len(words) / chunks) for i in range(chunks + 1)]
    pieces = [" ".join(words[bounds[i] : bounds[i + 1]]) for i in range(chunks)]
    return [piece + (" " if i < len(pieces) - 1 else "") for i, piece in enumerate(pieces)]


class Mock:
    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pieces = stream_pieces(chunks)
        self._completions: dict[str, bytes] = {}
        self.calls = 0

    def _timing(self, request: web.Request, stream: bool) -> tuple[float, float]:
        """(seconds before the first byte, seconds between chunks) for this mode."""
        mode = request.match_info["mode"]
        value = int(mode[3:]) / 1000
        if mode.startswith("lat"):
            return value, 0.0
        return (0.0, value) if stream else ((len(self.pieces) - 1) * value, 0.0)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"error": {"message": "body is not JSON", "type": "invalid_request_error"}}, status=400)
        model = str(body.get("model") or "mock-model")
        stream = bool(body.get("stream"))
        latency, interval = self._timing(request, stream)
        if latency:
            await asyncio.sleep(latency)
        if not stream:
            payload = self._completions.get(model)
            if payload is None:
                payload = self._completions.setdefault(model, _completion(model))
            return web.Response(body=payload, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for index, piece in enumerate(self.pieces):
            if index and interval:
                await asyncio.sleep(interval)
            delta = {"role": "assistant", "content": piece} if index == 0 else {"content": piece}
            await response.write(_chunk(model, delta))
        await response.write(_chunk(model, {}, finish="stop", usage=USAGE))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "bench"}]})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": self.calls})


def build_app(chunks: int) -> web.Application:
    mock = Mock(chunks)
    app = web.Application()
    app.router.add_post("/{mode:(?:lat|cad)[0-9]+}/v1/chat/completions", mock.chat)
    app.router.add_get("/{mode:(?:lat|cad)[0-9]+}/v1/models", mock.models)
    app.router.add_get("/stats", mock.stats)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=10, help="content chunks per stream")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (keeps the mock from being the bottleneck)")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "::1", "localhost"):
        parser.error("the mock listens on loopback only")
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        build_app(args.chunks),
        host=args.host,
        port=args.port,
        access_log=None,
        print=lambda *_: print(f"mock upstream on http://{args.host}:{args.port}", flush=True),
        backlog=4096,
    )


if __name__ == "__main__":
    main()
