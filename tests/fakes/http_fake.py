"""The loopback HTTP machinery both fake LLM APIs share.

A fake answers each generation request with the next *planned reply* (or its default, a
recorded fixture replayed byte for byte) and records what it was sent. A planned reply is
a status, headers and body chunks, written one at a time with a pause so the client sees
separate reads, and ended cleanly, cut (connection dropped mid-body) or stalled (nothing
more is sent until the fake stops).
"""

from __future__ import annotations

import asyncio
import enum
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# Long enough that two writes arrive as two TCP reads on loopback, short enough for CI.
CHUNK_PAUSE_S = 0.01


def fixture_text(provider: str, name: str) -> str:
    return (FIXTURES / provider / name).read_text(encoding="utf-8")


def fixture_json(provider: str, name: str) -> Any:
    return json.loads(fixture_text(provider, name))


class Ending(enum.Enum):
    COMPLETE = "complete"
    CUT = "cut"  # the connection drops after the chunks: a truncated chunked body
    STALL = "stall"  # nothing more is sent until the fake stops


class RetryHint(enum.Enum):
    """Where a rate-limited reply says how long to wait (each fake supports the ones its API
    uses: ``RETRY_HINTS``); the contract suite asks each fake for each of its own."""

    RETRY_AFTER_MS = "retry-after-ms"  # a header, milliseconds (OpenAI, read by the official SDKs)
    RETRY_AFTER = "retry-after"  # a header, seconds (RFC 9110)
    RETRY_INFO = "RetryInfo"  # in the body: google.rpc.RetryInfo.retryDelay (Google, no header)

    @property
    def fractional(self) -> bool:
        """Whether the form can say 1.5 s (``Retry-After`` delay-seconds are whole)."""
        return self is not RetryHint.RETRY_AFTER


def retry_after_header(hint: RetryHint, seconds: float) -> dict[str, str]:
    """The header an HTTP API sends for ``hint``: ``retry-after-ms: 1500``, ``retry-after: 7``."""
    if hint is RetryHint.RETRY_AFTER_MS:
        return {hint.value: str(round(seconds * 1000))}
    if hint is RetryHint.RETRY_AFTER and float(seconds).is_integer():
        return {hint.value: str(int(seconds))}
    raise ValueError(f"no {hint.value} header says {seconds} s")


@dataclass(frozen=True)
class PlannedReply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    chunks: tuple[bytes, ...] = ()
    ending: Ending = Ending.COMPLETE

    @property
    def is_event_stream(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")


@dataclass(frozen=True)
class TokenCounts:
    """Usage to report, in the domain's terms: ``prompt`` is the whole prompt, cached
    tokens included (each fake converts to its API's own convention)."""

    prompt: int
    completion: int
    cached: int = 0
    cache_write: int = 0  # Anthropic only


@dataclass(frozen=True)
class CapturedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON, or None
    peer: tuple[str, int] | None = None  # the client's address: one per pooled connection


def split_inside_multibyte_characters(data: bytes) -> tuple[bytes, ...]:
    """``data`` cut into pieces so that every multi-byte UTF-8 character straddles two."""
    cuts = [index + 1 for index, byte in enumerate(data) if byte >= 0xC0]  # after a lead byte
    pieces, start = [], 0
    for cut in cuts:
        pieces.append(data[start:cut])
        start = cut
    pieces.append(data[start:])
    return tuple(piece for piece in pieces if piece)


def recorded_events(text: str) -> tuple[bytes, ...]:
    """A recorded event stream cut at event boundaries, one event per write."""
    return tuple(event.encode() + b"\n\n" for event in text.split("\n\n") if event.strip())


def json_reply(status: int, body: Any, headers: dict[str, str] | None = None) -> PlannedReply:
    return PlannedReply(status, {"content-type": "application/json", **(headers or {})}, (json.dumps(body).encode(),))


def raw_json_reply(status: int, body_text: str, headers: dict[str, str] | None = None) -> PlannedReply:
    return PlannedReply(status, {"content-type": "application/json", **(headers or {})}, (body_text.encode(),))


def event_stream_reply(
    chunks: tuple[bytes, ...], *, ending: Ending = Ending.COMPLETE, headers: dict[str, str] | None = None
) -> PlannedReply:
    """A ``text/event-stream`` reply written chunk by chunk."""
    return PlannedReply(
        200, {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", **(headers or {})}, chunks, ending
    )


Handler = Callable[[web.Request, Any], Awaitable[PlannedReply | None]]


class FakeHTTPServer:
    """An aiohttp app on 127.0.0.1, port chosen by the OS; subclasses add the routes."""

    def __init__(self) -> None:
        self.requests: list[CapturedRequest] = []
        self._planned: deque[PlannedReply] = deque()
        self._runner: web.AppRunner | None = None
        self._port = 0
        self._stopping = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def plan(self, *replies: PlannedReply) -> None:
        """The next generation requests get these replies, in order."""
        self._planned.extend(replies)

    def next_planned(self) -> PlannedReply | None:
        return self._planned.popleft() if self._planned else None

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def start(self) -> Self:
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self._port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def capture(self, request: web.Request) -> CapturedRequest:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        peer = request.transport.get_extra_info("peername") if request.transport else None
        captured = CapturedRequest(
            request.method, request.path, {k.lower(): v for k, v in request.headers.items()}, body, tuple(peer) if peer else None
        )
        self.requests.append(captured)
        return captured

    async def send(self, request: web.Request, reply: PlannedReply) -> web.StreamResponse:
        if not reply.is_event_stream and reply.ending is Ending.COMPLETE:
            return web.Response(status=reply.status, headers=reply.headers, body=b"".join(reply.chunks))
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        await response.prepare(request)
        for index, chunk in enumerate(reply.chunks):
            if index:
                await asyncio.sleep(CHUNK_PAUSE_S)
            await response.write(chunk)
        if reply.ending is Ending.STALL:
            await self._stopping.wait()
        if reply.ending is not Ending.COMPLETE:
            await asyncio.sleep(CHUNK_PAUSE_S)
            assert request.transport is not None
            request.transport.close()  # no terminating chunk: the body is truncated
            return response
        await response.write_eof()
        return response


# --- replies built when the request arrives (additive: tool calls, structured output) -------


@dataclass(frozen=True)
class ShapedReply:
    """A planned answer whose shape follows the request: ``build`` gets the parsed request
    body and returns the reply, so one scenario serves plain and ``stream: true`` requests."""

    build: Callable[[dict[str, Any]], PlannedReply]


def plan_shaped(server: FakeHTTPServer, build: Callable[[dict[str, Any]], PlannedReply]) -> None:
    """Queues a :class:`ShapedReply` among ``server``'s planned replies; the fake resolves it
    against the body of the request that takes it."""
    server.plan(ShapedReply(build))  # type: ignore[arg-type]


def resolve_shaped(reply: PlannedReply | None, body: dict[str, Any]) -> PlannedReply | None:
    return reply.build(body) if isinstance(reply, ShapedReply) else reply


def split_evenly(text: str, pieces: int) -> list[str]:
    """``text`` cut into ``pieces`` runs of nearly equal length (whole characters, so the cuts
    fall anywhere in a JSON document: inside strings, between a key and its colon, ...)."""
    pieces = max(1, min(pieces, len(text))) if text else 1
    size, extra = divmod(len(text), pieces)
    parts, start = [], 0
    for index in range(pieces):
        end = start + size + (1 if index < extra else 0)
        parts.append(text[start:end])
        start = end
    return parts
