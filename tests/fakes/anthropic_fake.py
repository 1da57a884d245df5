"""A wire-faithful fake of Anthropic's Messages API on loopback.

Routes: ``POST /v1/messages`` (plain and ``stream: true``) and ``GET /v1/models``. Like the
real API it requires the key (``x-api-key``, or ``Authorization: Bearer`` as newer SDKs send
it) and ``anthropic-version``, and rejects a body without ``max_tokens``. Bodies come from ``tests/fixtures/anthropic/`` (formats documented in
Anthropic's API reference); scenarios rewrite only the text and usage of those shapes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, ClassVar

from aiohttp import web

from .http_fake import (
    Ending,
    FakeHTTPServer,
    PlannedReply,
    RetryHint,
    TokenCounts,
    event_stream_reply,
    fixture_json,
    fixture_text,
    json_reply,
    plan_shaped,
    raw_json_reply,
    recorded_events,
    resolve_shaped,
    retry_after_header,
    split_evenly,
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


# --- tool use and structured output ----------------------------------------------------------

# One tool_use block to script: (id, tool name, input). A dict is the input object; a string
# is streamed verbatim as the input JSON (so a test can script input that does not parse).
ToolUseSpec = tuple[str, str, dict[str, Any] | str]

_TOOL_USE = "message_tool_use.json"
_TOOL_USE_STREAM = "message_tool_use_stream.sse"
_PING = b'event: ping\ndata: {"type": "ping"}\n\n'
# The usage of message.json, for structured-output scenarios planned without counts.
JSON_DEFAULT_COUNTS = TokenCounts(prompt=12, completion=12)


def _input_json(tool_input: dict[str, Any] | str) -> str:
    # Spaced as the API streams it: {"a": 2, "b": 3}.
    return tool_input if isinstance(tool_input, str) else json.dumps(tool_input, ensure_ascii=False)


def _first_payloads(name: str) -> dict[str, Any]:
    payloads: dict[str, Any] = {}
    for block in fixture_text(PROVIDER, name).split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            payloads.setdefault(lines["event"], json.loads(lines["data"]))
    return payloads


def tool_use_message(
    calls: Sequence[ToolUseSpec], counts: TokenCounts | None = None, *, text: str | None = None, stop_reason: str = "tool_use"
) -> dict[str, Any]:
    """A ``message`` in the recorded shape of ``message_tool_use.json``: an optional text block,
    then one ``{"type": "tool_use", "id", "name", "input": {...}}`` block per call, and
    ``stop_reason: "tool_use"``. ``counts`` None keeps the fixture's usage."""
    body: dict[str, Any] = fixture_json(PROVIDER, _TOOL_USE)
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    for call_id, name, tool_input in calls:
        content.append({"type": "tool_use", "id": call_id, "name": name, "input": json.loads(tool_input) if isinstance(tool_input, str) else tool_input})
    body["content"] = content
    body["stop_reason"] = stop_reason
    if counts is not None:
        body["usage"] = _usage(counts)
    return body


def tool_use_stream_events(
    calls: Sequence[ToolUseSpec],
    counts: TokenCounts | None = None,
    *,
    text: str | None = None,
    fragments: int = 3,
    stop_reason: str = "tool_use",
    complete: bool = True,
) -> list[bytes]:
    """The documented event sequence for tool use: ``message_start``; an optional text block;
    per call ``content_block_start`` with ``{"type": "tool_use", "id", "name", "input": {}}``,
    ``content_block_delta`` events with ``input_json_delta`` (first ``partial_json: ""``, then
    ``fragments`` pieces of the input JSON cut anywhere), ``content_block_stop``; then
    ``message_delta`` (``stop_reason: "tool_use"``, cumulative usage) and ``message_stop``.
    ``complete=False`` ends after the last fragment (for cut and stalled streams)."""
    start = _first_payloads(_TOOL_USE_STREAM)["message_start"]
    usage = _usage(counts) if counts is not None else fixture_json(PROVIDER, _TOOL_USE)["usage"]
    start["message"]["usage"] = {**usage, "output_tokens": 1}
    events = [_event("message_start", start)]
    index = 0
    if text:
        events += [_event("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}), _PING]
        for piece in split_evenly(text, fragments):
            events.append(_event("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}))
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        index = 1
    for number, (call_id, name, tool_input) in enumerate(calls):
        block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
        events.append(_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}))
        if not text and number == 0:
            events.append(_PING)
        for piece in ["", *split_evenly(_input_json(tool_input), fragments)]:
            delta = {"type": "input_json_delta", "partial_json": piece}
            events.append(_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        if not complete and number == len(calls) - 1:
            return events
        events.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    if not complete:
        return events
    cumulative = {key: usage[key] for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")}
    events.append(_event("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": cumulative}))
    events.append(_event("message_stop", {"type": "message_stop"}))
    return events


def _blocks(message: Any) -> list[Any]:
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, list) else []


def _tool_use_ids(message: Any) -> list[Any]:
    if not isinstance(message, dict) or message.get("role") != "assistant":
        return []
    return [block.get("id") for block in _blocks(message) if isinstance(block, dict) and block.get("type") == "tool_use"]


def tool_block_problem(body: dict[str, Any]) -> str | None:
    """The Messages API's checks on tool blocks, with the wording of its real 400 replies:
    every ``tool_use`` needs a ``tool_result`` in the very next (user) message, every
    ``tool_result`` must answer a ``tool_use`` of the message just before, and a ``tool_use``
    ``input`` must be an object."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        if message.get("role") == "assistant":
            for position, block in enumerate(_blocks(message)):
                if isinstance(block, dict) and block.get("type") == "tool_use" and not isinstance(block.get("input"), dict):
                    return f"messages.{index}.content.{position}.tool_use.input: Input should be a valid dictionary"
            ids = _tool_use_ids(message)
            if ids and index + 1 < len(messages):
                following = messages[index + 1]
                answered = {
                    block.get("tool_use_id")
                    for block in _blocks(following)
                    if isinstance(block, dict) and block.get("type") == "tool_result" and following.get("role") == "user"
                }
                missing = [str(call_id) for call_id in ids if call_id not in answered]
                if missing:
                    return (
                        f"messages.{index}: `tool_use` ids were found without `tool_result` blocks immediately after: {', '.join(missing)}. "
                        "Each `tool_use` block must have a corresponding `tool_result` block in the next message."
                    )
        elif message.get("role") == "user":
            previous_ids = _tool_use_ids(messages[index - 1]) if index else []
            for position, block in enumerate(_blocks(message)):
                if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("tool_use_id") not in previous_ids:
                    return (
                        f"messages.{index}.content.{position}: unexpected `tool_use_id` found in `tool_result` blocks: {block.get('tool_use_id')}. "
                        "Each `tool_result` block must have a corresponding `tool_use` block in the previous message."
                    )
    return None


class FakeAnthropic(FakeHTTPServer):
    # Anthropic documents retry-after (seconds); retry-after-ms is offered too because its
    # SDK (generated like OpenAI's) reads it first, and so does the service for every provider.
    RETRY_HINTS: ClassVar[tuple[RetryHint, ...]] = (RetryHint.RETRY_AFTER_MS, RetryHint.RETRY_AFTER)

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
            problem = self._validation_problem(body) or tool_block_problem(body)
            if problem:
                invalid = error_body("error_prompt_too_long.json", message=problem)
                reply = json_reply(400, invalid, self._headers())
        reply = resolve_shaped(reply or self.next_planned(), body)
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

    def rate_limit(self, retry_after_s: float, how: RetryHint = RetryHint.RETRY_AFTER) -> None:
        """429 ``rate_limit_error`` with the wait in a header (``how``) and the
        ``anthropic-ratelimit-*`` headers."""
        if how not in self.RETRY_HINTS:
            raise ValueError(f"the Anthropic API sends no {how.value}")
        headers = {**self._headers(), **retry_after_header(how, retry_after_s), "anthropic-ratelimit-requests-remaining": "0"}
        self.plan(json_reply(429, error_body("error_rate_limit.json"), headers))

    def server_error(self, status: int = 500, *, message: str | None = None) -> None:
        """``status`` with the recorded ``overloaded_error`` (529) or ``api_error`` body
        (``message`` replacing its text)."""
        name = "error_overloaded.json" if status == 529 else "error_api_error.json"
        self.plan(json_reply(status, error_body(name, message=message), self._headers()))

    def context_too_large(self, input_tokens: int = 208_310, limit: int = 200_000) -> None:
        """400 ``invalid_request_error`` "prompt is too long: N tokens > M maximum" (the
        defaults are the recorded counts)."""
        message = f"prompt is too long: {input_tokens} tokens > {limit} maximum"
        self.plan(json_reply(400, error_body("error_prompt_too_long.json", message=message), self._headers()))

    def cut_stream(self, pieces: list[str]) -> None:
        """Some events, then the connection drops (no ``message_delta``/``message_stop``)."""
        self.plan(event_stream_reply(tuple(stream_events(pieces, None)), ending=Ending.CUT, headers=self._headers()))

    def error_mid_stream(self, pieces: list[str], *, message: str | None = None) -> None:
        """Some events, then an ``error`` event as the documentation shows it (``message``
        replacing its text)."""
        error_event = fixture_text(PROVIDER, "stream_error_overloaded.sse").encode()
        if message is not None:
            payload = json.loads(error_event.decode().split("data: ", 1)[1])
            payload["error"]["message"] = message
            error_event = _event("error", payload)
        self.plan(event_stream_reply((*stream_events(pieces, None), error_event), headers=self._headers()))

    def stall_stream(self, pieces: list[str]) -> None:
        self.plan(event_stream_reply(tuple(stream_events(pieces, None)), ending=Ending.STALL, headers=self._headers()))

    # --- tool use and structured output --------------------------------------------------

    def _tool_use_stream(
        self,
        calls: Sequence[ToolUseSpec] | None,
        counts: TokenCounts | None,
        *,
        text: str | None,
        fragments: int,
        stop_reason: str,
        split_utf8: bool = False,
        ending: Ending = Ending.COMPLETE,
    ) -> PlannedReply:
        complete = ending is Ending.COMPLETE
        if calls is None:  # the recorded stream (without its last block stop, message_delta, message_stop if cut)
            events = list(recorded_events(fixture_text(PROVIDER, _TOOL_USE_STREAM)))
            events = events if complete else events[:-3]
        else:
            events = tool_use_stream_events(calls, counts, text=text, fragments=fragments, stop_reason=stop_reason, complete=complete)
        chunks = split_inside_multibyte_characters(b"".join(events)) if split_utf8 else tuple(events)
        return event_stream_reply(chunks, ending=ending, headers=self._headers())

    def reply_tool_use(
        self,
        calls: Sequence[ToolUseSpec] | None = None,
        counts: TokenCounts | None = None,
        *,
        text: str | None = None,
        fragments: int = 3,
        stop_reason: str = "tool_use",
    ) -> None:
        """The next request gets these tool_use blocks (after ``text`` if given), in the shape
        it asks for: a ``message`` or, for ``stream: true``, events with each input in
        ``fragments`` ``input_json_delta`` pieces. Without ``calls``: the recorded fixtures
        verbatim (``message_tool_use.json`` / ``message_tool_use_stream.sse``, the same text
        and two tool_use blocks). ``counts`` None keeps the fixture's usage."""

        def build(body: dict[str, Any]) -> PlannedReply:
            if body.get("stream"):
                return self._tool_use_stream(calls, counts, text=text, fragments=fragments, stop_reason=stop_reason)
            if calls is None:
                return raw_json_reply(200, fixture_text(PROVIDER, _TOOL_USE), self._headers())
            return json_reply(200, tool_use_message(calls, counts, text=text, stop_reason=stop_reason), self._headers())

        plan_shaped(self, build)

    def stream_tool_use(
        self,
        calls: Sequence[ToolUseSpec] | None = None,
        counts: TokenCounts | None = None,
        *,
        text: str | None = None,
        fragments: int = 3,
        stop_reason: str = "tool_use",
        split_utf8: bool = False,
        ending: Ending = Ending.COMPLETE,
    ) -> None:
        """The next request gets a tool-use event stream (whatever it asked for). Without
        ``calls``: ``message_tool_use_stream.sse`` verbatim. ``ending`` CUT or STALL stops
        after the last ``input_json_delta`` (no block stop, ``message_delta`` or ``message_stop``)."""
        self.plan(
            self._tool_use_stream(calls, counts, text=text, fragments=fragments, stop_reason=stop_reason, split_utf8=split_utf8, ending=ending)
        )

    def reply_json(self, text: str, counts: TokenCounts | None = None, *, fragments: int = 8) -> None:
        """A structured-output answer (``output_config.format`` json_schema): the JSON document
        ``text`` as the message's one text block, ``stop_reason: "end_turn"``; streamed in
        ``fragments`` text deltas when the request asks for a stream."""
        counts = counts or JSON_DEFAULT_COUNTS

        def build(body: dict[str, Any]) -> PlannedReply:
            if body.get("stream"):
                return event_stream_reply(tuple(stream_events(split_evenly(text, fragments), counts)), headers=self._headers())
            message = fixture_json(PROVIDER, "message.json")
            message["content"][0]["text"] = text
            message["usage"] = _usage(counts)
            return json_reply(200, message, self._headers())

        plan_shaped(self, build)

    def stream_json(self, pieces: list[str], counts: TokenCounts | None = None, *, split_utf8: bool = False) -> None:
        """A structured-output answer streamed as these text deltas."""
        self.stream_text(pieces, counts or JSON_DEFAULT_COUNTS, split_utf8=split_utf8)
