"""The practical ceiling: a bare grpc.aio pass-through with the project's generated stubs.

    python bench/bare_server.py --port 18200 --upstream http://127.0.0.1:18100/lat0/v1 [--uvloop] [--reuseport]

Only the unavoidable work per call: decode the request (grpc), one upstream call with aiohttp
(one pooled session, like the real provider), decode the JSON/SSE reply, encode the response.
No interceptors, validation, routing, cache, telemetry or logging.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from grpc import aio

from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as pb, llm_manager_service_pb2_grpc as pb_grpc

_FINISH = {"stop": common_pb2.FINISH_REASON_STOP, "length": common_pb2.FINISH_REASON_LENGTH}
_ROLE = {common_pb2.ROLE_SYSTEM: "system", common_pb2.ROLE_ASSISTANT: "assistant"}


def _messages(request: Any) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages.extend({"role": _ROLE.get(m.role, "user"), "content": m.content} for m in request.messages)
    if request.prompt:
        messages.append({"role": "user", "content": request.prompt})
    return messages


class Bare(pb_grpc.LLMManagerServiceServicer):
    def __init__(self, upstream: str, model: str) -> None:
        self._url = upstream.rstrip("/") + "/chat/completions"
        self._model = model
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30))

    def _body(self, request: Any, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": request.preferences.model or self._model, "messages": _messages(request), "stream": stream}
        if request.preferences.HasField("max_tokens"):
            body["max_tokens"] = request.preferences.max_tokens
        return body

    async def Generate(self, request: pb.GenerateRequest, context: Any) -> pb.GenerateResponse:
        assert self._session is not None
        async with self._session.post(self._url, json=self._body(request, False)) as response:
            payload = await response.json(content_type=None)
        choice = payload["choices"][0]
        usage = payload.get("usage") or {}
        return pb.GenerateResponse(
            text=choice["message"]["content"],
            model=payload.get("model", ""),
            usage=common_pb2.Usage(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
                total_tokens=usage.get("total_tokens", 0),
            ),
            finish_reason=_FINISH.get(choice.get("finish_reason"), common_pb2.FINISH_REASON_UNSPECIFIED),
        )

    async def StreamGenerate(self, request: pb.StreamGenerateRequest, context: Any) -> AsyncIterator[pb.StreamGenerateResponse]:
        assert self._session is not None
        usage: dict[str, int] = {}
        finish = None
        model = ""
        async with self._session.post(self._url, json=self._body(request, True)) as response:
            async for line in response.content:  # SSE: one "data: {...}" line per event
                if not line.startswith(b"data: "):
                    continue
                data = line[6:].strip()
                if data == b"[DONE]":
                    break
                chunk = json.loads(data)
                model = chunk.get("model", model)
                usage = chunk.get("usage") or usage
                if chunk["choices"]:
                    choice = chunk["choices"][0]
                    finish = choice.get("finish_reason") or finish
                    text = choice["delta"].get("content")
                    if text:
                        yield pb.StreamGenerateResponse(text=text, model=model)
        yield pb.StreamGenerateResponse(
            model=model,
            usage=common_pb2.Usage(
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
                total_tokens=usage.get("total_tokens", 0),
            ),
            finish_reason=_FINISH.get(finish or "", common_pb2.FINISH_REASON_UNSPECIFIED),
        )


async def serve(args: argparse.Namespace) -> None:
    bare = Bare(args.upstream, args.model)
    await bare.start()
    server = aio.server(options=[("grpc.so_reuseport", 1 if args.reuseport else 0)])
    pb_grpc.add_LLMManagerServiceServicer_to_server(bare, server)
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    await server.start()
    print(f"bare server on 127.0.0.1:{port}", flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="OpenAI-compatible base URL ending in /v1")
    parser.add_argument("--model", default="mock-model")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--reuseport", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
