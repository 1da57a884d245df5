"""A scriptable OpenAI-compatible server on loopback for fault injection.

Each model name has a script: a list of behaviours consumed one per request (the last one
repeats). Behaviours:

- ``ok``: answer (plain or streamed, as asked) with ``FaultServer.text``
- ``status:<code>`` with optional ``retry-after=<s>``, ``code=<error code>``
- ``slow:<seconds>``: wait, then answer (a slow non-streamed reply, or a slow first chunk)
- ``stall_after:<n>``: stream n chunks, then go silent forever
- ``cut_after:<n>``: stream n chunks, then drop the connection
- ``drip:<seconds>``: stream one chunk every <seconds>, 200 chunks

The server records every request and every request whose client went away.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Seen:
    model: str
    stream: bool
    body: dict[str, Any]
    at: float
    headers: dict[str, str] = field(default_factory=dict)
    disconnected_at: float | None = None


@dataclass
class FaultServer:
    text: str = "Hello from the fault server."
    scripts: dict[str, list[str]] = field(default_factory=dict)
    requests: list[Seen] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, model: str, *behaviours: str) -> None:
        self.scripts[model] = list(behaviours)

    def calls(self, model: str) -> int:
        return sum(1 for r in self.requests if r.model == model)

    def _next(self, model: str) -> str:
        script = self.scripts.get(model, ["ok"])
        return script.pop(0) if len(script) > 1 else script[0]

    async def start(self) -> FaultServer:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        # Cancel handlers when the client disconnects, so tests can see upstream cancellation.
        self._runner = web.AppRunner(app, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in self.scripts]})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        seen = Seen(body.get("model", ""), bool(body.get("stream")), body, time.monotonic(), dict(request.headers))
        self.requests.append(seen)
        behaviour = self._next(seen.model)
        try:
            return await self._behave(request, seen, behaviour)
        except (asyncio.CancelledError, ConnectionResetError):
            seen.disconnected_at = time.monotonic()
            raise

    async def _behave(self, request: web.Request, seen: Seen, behaviour: str) -> web.StreamResponse:
        kind, _, arg = behaviour.partition(":")
        if kind == "status":
            return self._error(arg)
        if kind == "slow":
            await asyncio.sleep(float(arg))
        if not seen.stream:
            if kind in ("ok", "slow"):
                return web.json_response(self._completion(seen.model))
            raise AssertionError(f"{behaviour} needs a streamed request")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        words = self.text.split(" ")
        if kind == "drip":
            for index in range(200):
                await self._send(response, seen.model, f"w{index} ")
                await asyncio.sleep(float(arg))
        limit = int(arg) if kind in ("stall_after", "cut_after") else len(words)
        for word in words[:limit]:
            await self._send(response, seen.model, word + " ")
        if kind == "stall_after":
            await asyncio.sleep(3600)
        if kind == "cut_after":
            assert request.transport is not None
            request.transport.close()
            return response
        await self._send(response, seen.model, None, finish="stop")
        usage = {"prompt_tokens": 9, "completion_tokens": len(words), "total_tokens": 9 + len(words)}
        await response.write(f"data: {json.dumps({'model': seen.model, 'choices': [], 'usage': usage})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    async def _send(self, response: web.StreamResponse, model: str, text: str | None, finish: str | None = None) -> None:
        chunk = {"model": model, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": {} if text is None else {"content": text}, "finish_reason": finish}]}
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    def _completion(self, model: str) -> dict[str, Any]:
        words = len(self.text.split(" "))
        return {
            "id": "chatcmpl-fault", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": words, "total_tokens": 9 + words},
        }

    @staticmethod
    def _error(arg: str) -> web.Response:
        status, *options = arg.split(",")
        parsed = dict(option.split("=", 1) for option in options)
        headers = {"retry-after": parsed["retry-after"]} if "retry-after" in parsed else {}
        error = {"message": f"injected HTTP {status}", "type": "server_error", "code": parsed.get("code")}
        return web.json_response({"error": error}, status=int(status), headers=headers)
