"""A wire-faithful fake of OpenAI's Chat Completions API on loopback.

Routes: ``POST /v1/chat/completions`` (plain and ``stream: true``) and ``GET /v1/models``.
Bodies come from ``tests/fixtures/openai/`` (formats documented in OpenAI's API reference);
scenarios rewrite only the text and usage of those recorded shapes. Also serves as a local
OpenAI-compatible server (LM Studio, llama.cpp server) when built without a key.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
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



@dataclass(frozen=True)
class _Answer:
    text: str
    counts: TokenCounts

PROVIDER = "openai"
REQUEST_ID = "req_7c2f3d1e9b8a4f60a1d2c3b4e5f60718"


def _usage(counts: TokenCounts) -> dict[str, Any]:
    usage: dict[str, Any] = copy.deepcopy(fixture_json(PROVIDER, "chat_completion.json")["usage"])
    usage.update(prompt_tokens=counts.prompt, completion_tokens=counts.completion, total_tokens=counts.prompt + counts.completion)
    usage["prompt_tokens_details"]["cached_tokens"] = counts.cached
    return usage


def _stream_template() -> dict[str, Any]:
    first = fixture_text(PROVIDER, "chat_completion_stream.sse").split("\n\n")[0]
    template: dict[str, Any] = json.loads(first.removeprefix("data: "))
    return template


def _data_line(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def chunk_events(pieces: list[str], counts: TokenCounts | None, *, model: str | None = None) -> list[bytes]:
    """The chunk sequence OpenAI streams with ``include_usage``: a role chunk, one chunk per
    piece, a finish chunk, then (if ``counts``) the usage chunk with empty ``choices``."""
    template = _stream_template()
    if model:
        template["model"] = model

    def chunk(delta: dict[str, Any] | None, finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
        payload = dict(template)
        payload["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        payload["usage"] = usage
        return _data_line(payload)

    events = [chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chunk({"content": piece}) for piece in pieces]
    events.append(chunk({}, "stop"))
    if counts is not None:
        events.append(chunk(None, usage=_usage(counts)))
    return events


def error_body(name: str, *, message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = fixture_json(PROVIDER, name)
    if message is not None:
        body["error"]["message"] = message
    return body


class FakeOpenAI(FakeHTTPServer):
    """Checks ``Authorization: Bearer <api_key>`` when built with a key (a local server has none)."""

    def __init__(self, *, api_key: str | None = None, echo_key_in_errors: bool = False) -> None:
        super().__init__()
        self.api_key = api_key
        # The real API echoes a masked key in its 401 message; echoing it whole is the
        # harsher test of the service's redaction.
        self.echo_key_in_errors = echo_key_in_errors

    @property
    def generation_requests(self) -> list[Any]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_get("/v1/models", self._models)

    def _headers(self) -> dict[str, str]:
        return {"x-request-id": REQUEST_ID, "openai-processing-ms": "212", "openai-version": "2020-10-01"}

    def _rejected_key(self, request: web.Request) -> PlannedReply | None:
        if self.api_key is None:
            return None
        presented = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if presented == self.api_key:
            return None
        shown = presented if self.echo_key_in_errors else presented[:8] + "*" * 20 + presented[-4:]
        message = f"Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."
        return json_reply(401, error_body("error_invalid_api_key.json", message=message), self._headers())

    async def _models(self, request: web.Request) -> web.StreamResponse:
        await self.capture(request)
        reply = self._rejected_key(request) or raw_json_reply(200, fixture_text(PROVIDER, "models.json"), self._headers())
        return await self.send(request, reply)

    async def _chat_completions(self, request: web.Request) -> web.StreamResponse:
        captured = await self.capture(request)
        reply = self._rejected_key(request) or self.next_planned()
        body = captured.body if isinstance(captured.body, dict) else {}
        if isinstance(reply, _Answer):  # the same answer, in the shape the request asked for
            reply = self._stream_reply([reply.text], reply.counts) if body.get("stream") else self._json_answer(reply.text, reply.counts)
        if reply is None and not (isinstance(body.get("model"), str) and isinstance(body.get("messages"), list) and body["messages"]):
            reply = json_reply(
                400,
                {"error": {"message": "you must provide a model and non-empty messages", "type": "invalid_request_error", "param": None, "code": None}},
            )
        if reply is None:  # the recorded replies, verbatim
            if body.get("stream"):
                reply = event_stream_reply(recorded_events(fixture_text(PROVIDER, "chat_completion_stream.sse")), headers=self._headers())
            else:
                reply = raw_json_reply(200, fixture_text(PROVIDER, "chat_completion.json"), self._headers())
        return await self.send(request, reply)

    # --- scenarios: each plans the reply to the next generation request -----------------

    def reply_text(self, text: str, counts: TokenCounts) -> None:
        """The next request gets ``text``: as a chat.completion object, or streamed when it
        asks for a stream (local providers read complete answers from streams)."""
        self.plan(_Answer(text, counts))  # type: ignore[arg-type]

    def _json_answer(self, text: str, counts: TokenCounts) -> PlannedReply:
        body = fixture_json(PROVIDER, "chat_completion.json")
        body["choices"][0]["message"]["content"] = text
        body["usage"] = _usage(counts)
        return json_reply(200, body, self._headers())

    def _stream_reply(self, pieces: list[str], counts: TokenCounts, *, split_utf8: bool = False) -> PlannedReply:
        events = (*chunk_events(pieces, counts), b"data: [DONE]\n\n")
        chunks = split_inside_multibyte_characters(b"".join(events)) if split_utf8 else events
        return event_stream_reply(chunks, headers=self._headers())

    def stream_text(self, pieces: list[str], counts: TokenCounts, *, split_utf8: bool = False) -> None:
        self.plan(self._stream_reply(pieces, counts, split_utf8=split_utf8))

    def fail_auth(self) -> None:
        self.plan(json_reply(401, error_body("error_invalid_api_key.json"), self._headers()))

    def rate_limit(self, *, retry_after_header: str, retry_after_value: str) -> None:
        headers = {
            **self._headers(),
            retry_after_header: retry_after_value,
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "120ms",
        }
        self.plan(json_reply(429, error_body("error_rate_limit.json"), headers))

    def server_error(self, status: int = 500) -> None:
        self.plan(json_reply(status, error_body("error_server_error.json"), self._headers()))

    def context_too_large(self) -> None:
        self.plan(json_reply(400, error_body("error_context_length_exceeded.json"), self._headers()))

    def cut_stream(self, pieces: list[str]) -> None:
        """Some chunks, then the connection drops (no finish, no usage, no ``[DONE]``)."""
        events = chunk_events(pieces, None)[:-1]  # without the finish chunk
        self.plan(event_stream_reply(tuple(events), ending=Ending.CUT, headers=self._headers()))

    def error_mid_stream(self, pieces: list[str]) -> None:
        """Some chunks, then an ``error`` object as OpenAI sends it inside a stream."""
        events = chunk_events(pieces, None)[:-1]
        error_event = fixture_text(PROVIDER, "stream_error_event.sse").encode()
        self.plan(event_stream_reply((*events, error_event), headers=self._headers()))

    def stall_stream(self, pieces: list[str]) -> None:
        events = chunk_events(pieces, None)[:-1]
        self.plan(event_stream_reply(tuple(events), ending=Ending.STALL, headers=self._headers()))
