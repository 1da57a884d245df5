"""A wire-faithful fake of Anthropic's Messages API on loopback.

Routes: ``POST /v1/messages`` (plain and ``stream: true``) and ``GET /v1/models``. Like the
real API it requires the key (``x-api-key``, or ``Authorization: Bearer`` as newer SDKs send
it) and ``anthropic-version``, and rejects a body without ``max_tokens``. Bodies come from ``tests/fixtures/anthropic/`` (formats documented in
Anthropic's API reference); scenarios rewrite only the text and usage of those shapes.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .http_fake import (
    Ending,
    FakeHTTPServer,
    PlannedReply,
    TokenCounts,
    event_stream_reply,
    fixture_json,
    fixture_text,
    json_reply,
    raw_json_reply,
    recorded_events,
    split_inside_multibyte_characters,
)

PROVIDER = "anthropic"
REQUEST_ID = "req_011CUaX9qZ4wJm8sLn5RcFtB"


def _usage(counts: TokenCounts) -> dict[str, Any]:
    """Anthropic's convention: ``input_tokens`` excludes cache reads and cache writes."""
    usage: dict[str, Any] = fixture_json(PROVIDER, "message.json")["usage"]
    usage.update(
        input_tokens=counts.prompt - counts.cached - counts.cache_write,
        cache_read_input_tokens=counts.cached,
        cache_creation_input_tokens=counts.cache_write,
        output_tokens=counts.completion,
    )
    usage["cache_creation"]["ephemeral_5m_input_tokens"] = counts.cache_write
    return usage


def _event(name: str, payload: Any) -> bytes:
    return f"event: {name}\ndata: ".encode() + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def _recorded_payloads() -> dict[str, Any]:
    """The first payload of each event type in the recorded stream, as templates."""
    payloads: dict[str, Any] = {}
    for block in fixture_text(PROVIDER, "message_stream.sse").split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            payloads.setdefault(lines["event"], json.loads(lines["data"]))
    return payloads


def stream_events(pieces: list[str], counts: TokenCounts | None) -> list[bytes]:
    """The documented event sequence for one text block: ``message_start``,
    ``content_block_start``, ``ping``, one ``content_block_delta`` per piece,
    ``content_block_stop``, ``message_delta`` (stop reason, usage), ``message_stop``.
    Without ``counts`` it ends after the deltas (for cut and failing streams)."""
    recorded = _recorded_payloads()
    start = recorded["message_start"]
    if counts is not None:
        start["message"]["usage"] = {**_usage(counts), "output_tokens": 1}
    events = [
        _event("message_start", start),
        _event("content_block_start", recorded["content_block_start"]),
        b'event: ping\ndata: {"type": "ping"}\n\n',
    ]
    for piece in pieces:
        events.append(_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}))
    if counts is None:
        return events
    message_delta = recorded["message_delta"]
    message_delta["usage"] = {"output_tokens": counts.completion}
    events += [
        _event("content_block_stop", recorded["content_block_stop"]),
        _event("message_delta", message_delta),
        _event("message_stop", recorded["message_stop"]),
    ]
    return events


def error_body(name: str, *, message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = fixture_json(PROVIDER, name)
    if message is not None:
        body["error"]["message"] = message
    return body


class FakeAnthropic(FakeHTTPServer):
    def __init__(self, *, api_key: str, echo_key_in_errors: bool = False) -> None:
        super().__init__()
        self.api_key = api_key
        # The real API never echoes the key; echoing it tests the service's redaction.
        self.echo_key_in_errors = echo_key_in_errors

    @property
    def generation_requests(self) -> list[Any]:
        return [r for r in self.requests if r.path == "/v1/messages"]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)

    def _headers(self) -> dict[str, str]:
        return {
            "request-id": REQUEST_ID,
            "anthropic-organization-id": "5c1f3a7e-2b9d-4e08-9a61-7d3c2f8b4e10",
            "anthropic-ratelimit-requests-limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
        }

    def _rejected_request(self, request: web.Request) -> PlannedReply | None:
        # The documented header is x-api-key; newer official SDKs send the same key as
        # "Authorization: Bearer", which the API accepts too.
        presented = request.headers.get("x-api-key") or request.headers.get("Authorization", "").removeprefix("Bearer ")
        if presented != self.api_key:
            message = "invalid x-api-key" + (f": {presented}" if self.echo_key_in_errors else "")
            return json_reply(401, error_body("error_authentication.json", message=message), self._headers())
        if not request.headers.get("anthropic-version"):
            body = error_body("error_authentication.json", message="anthropic-version: header is required")
            body["error"]["type"] = "invalid_request_error"
            return json_reply(400, body, self._headers())
        return None

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self.capture(request)
        reply = self._rejected_request(request) or raw_json_reply(200, fixture_text(PROVIDER, "models.json"), self._headers())
        return await self.send(request, reply)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        captured = await self.capture(request)
        reply = self._rejected_request(request)
        body = captured.body if isinstance(captured.body, dict) else {}
        if reply is None:
            problem = self._validation_problem(body)
            if problem:
                invalid = error_body("error_prompt_too_long.json", message=problem)
                reply = json_reply(400, invalid, self._headers())
        reply = reply or self.next_planned()
        if reply is None:  # the recorded replies, verbatim
            if body.get("stream"):
                reply = event_stream_reply(recorded_events(fixture_text(PROVIDER, "message_stream.sse")), headers=self._headers())
            else:
                reply = raw_json_reply(200, fixture_text(PROVIDER, "message.json"), self._headers())
        return await self.send(request, reply)

    @staticmethod
    def _validation_problem(body: dict[str, Any]) -> str | None:
        """The Messages API's own checks on the fields this service sends."""
        if not isinstance(body.get("max_tokens"), int):
            return "max_tokens: Field required"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "messages: at least one message is required"
        if any(m.get("role") not in ("user", "assistant") for m in messages if isinstance(m, dict)):
            return "messages: Unexpected role. Allowed roles are 'user' or 'assistant'"
        if "system" in body and not isinstance(body["system"], (str, list)):
            return "system: Input should be a valid string"
        return None

    # --- scenarios: each plans the reply to the next generation request -----------------

    def reply_text(self, text: str, counts: TokenCounts) -> None:
        body = fixture_json(PROVIDER, "message.json")
        body["content"][0]["text"] = text
        body["usage"] = _usage(counts)
        self.plan(json_reply(200, body, self._headers()))

    def stream_text(self, pieces: list[str], counts: TokenCounts, *, split_utf8: bool = False) -> None:
        events = tuple(stream_events(pieces, counts))
        chunks = split_inside_multibyte_characters(b"".join(events)) if split_utf8 else events
        self.plan(event_stream_reply(chunks, headers=self._headers()))

    def fail_auth(self) -> None:
        self.plan(json_reply(401, error_body("error_authentication.json"), self._headers()))

    def rate_limit(self, *, retry_after_header: str, retry_after_value: str) -> None:
        headers = {**self._headers(), retry_after_header: retry_after_value, "anthropic-ratelimit-requests-remaining": "0"}
        self.plan(json_reply(429, error_body("error_rate_limit.json"), headers))

    def server_error(self, status: int = 500) -> None:
        name = "error_overloaded.json" if status == 529 else "error_api_error.json"
        self.plan(json_reply(status, error_body(name), self._headers()))

    def context_too_large(self) -> None:
        self.plan(json_reply(400, error_body("error_prompt_too_long.json"), self._headers()))

    def cut_stream(self, pieces: list[str]) -> None:
        """Some events, then the connection drops (no ``message_delta``/``message_stop``)."""
        self.plan(event_stream_reply(tuple(stream_events(pieces, None)), ending=Ending.CUT, headers=self._headers()))

    def error_mid_stream(self, pieces: list[str]) -> None:
        """Some events, then an ``error`` event as the documentation shows it."""
        error_event = fixture_text(PROVIDER, "stream_error_overloaded.sse").encode()
        self.plan(event_stream_reply((*stream_events(pieces, None), error_event), headers=self._headers()))

    def stall_stream(self, pieces: list[str]) -> None:
        self.plan(event_stream_reply(tuple(stream_events(pieces, None)), ending=Ending.STALL, headers=self._headers()))
