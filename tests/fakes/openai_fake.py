"""A wire-faithful fake of OpenAI's Chat Completions API on loopback.

Routes: ``POST /v1/chat/completions`` (plain and ``stream: true``), ``POST /v1/embeddings``
and ``GET /v1/models``. Bodies come from ``tests/fixtures/openai/`` (formats documented in
OpenAI's API reference); scenarios rewrite only the text and usage of those recorded shapes.
Embeddings are deterministic per (model, text): unit vectors seeded by a hash of both, so the
same text always gets the same vector and different texts different ones. Also serves as a local
OpenAI-compatible server (LM Studio, llama.cpp server) when built without a key.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import math
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
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


# --- tool calls and structured output --------------------------------------------------------

# One tool call to script: (id, function name, arguments). A dict is sent as compact JSON; a
# string is sent verbatim, so a test can script arguments that are not valid JSON at all.
ToolCallSpec = tuple[str, str, dict[str, Any] | str]

_TOOL_CALLS = "chat_completion_tool_calls.json"
_TOOL_CALLS_STREAM = "chat_completion_tool_calls_stream.sse"
_JSON_SCHEMA = "chat_completion_json_schema.json"
_JSON_SCHEMA_STREAM = "chat_completion_json_schema_stream.sse"
_CHUNK_HEAD = ("id", "object", "created", "model", "service_tier", "system_fingerprint")


def arguments_text(arguments: dict[str, Any] | str) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, separators=(",", ":"), ensure_ascii=False)


def tool_calls_completion(
    calls: Sequence[ToolCallSpec], counts: TokenCounts | None = None, *, text: str | None = None, finish_reason: str = "tool_calls"
) -> dict[str, Any]:
    """A ``chat.completion`` carrying ``calls``, in the recorded shape: ``message.content`` is
    null unless ``text`` is given, ``tool_calls[].{id, type: "function", function: {name,
    arguments}}`` with arguments as a JSON *string*, ``finish_reason: "tool_calls"``."""
    body: dict[str, Any] = fixture_json(PROVIDER, _TOOL_CALLS)
    choice = body["choices"][0]
    choice["message"]["content"] = text
    if calls:
        choice["message"]["tool_calls"] = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments_text(arguments)}}
            for call_id, name, arguments in calls
        ]
    else:
        del choice["message"]["tool_calls"]
    choice["finish_reason"] = finish_reason
    if counts is not None:
        body["usage"] = _usage(counts)
    return body


def tool_call_chunk_events(
    calls: Sequence[ToolCallSpec],
    counts: TokenCounts | None = None,
    *,
    text: str | None = None,
    fragments: int = 3,
    finish_reason: str = "tool_calls",
    complete: bool = True,
) -> list[bytes]:
    """The chunks OpenAI streams for tool calls, as recorded: each call's first delta carries
    ``index``, ``id``, ``type``, ``function.name`` and ``arguments: ""``; later deltas carry
    only ``index`` and an ``arguments`` fragment (``fragments`` of them, cut anywhere, inside
    JSON strings too); a call starts after the previous one is complete. With one call and no
    text the first call rides in the role chunk; with several, the role chunk
    (``content: null``) comes alone and the chunks put ``usage`` before ``choices``, as the
    recorded parallel stream does. Then the finish chunk, the usage chunk and (by the caller)
    ``[DONE]``. ``complete=False`` stops after the last fragment (for cut and stalled streams)."""
    template = json.loads(fixture_text(PROVIDER, _TOOL_CALLS_STREAM).split("\n\n")[0].removeprefix("data: "))
    head = {key: template[key] for key in _CHUNK_HEAD}
    usage_first = len(calls) > 1 and not text

    def chunk(delta: dict[str, Any], finish: str | None = None, *, order_usage_first: bool = usage_first) -> bytes:
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        payload = {**head, "usage": None, "choices": choices} if order_usage_first else {**head, "choices": choices, "usage": None}
        payload["obfuscation"] = template["obfuscation"]
        return _data_line(payload)

    per_call: list[list[dict[str, Any]]] = []
    for index, (call_id, name, arguments) in enumerate(calls):
        first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        later = [{"index": index, "function": {"arguments": piece}} for piece in split_evenly(arguments_text(arguments), fragments)]
        per_call.append([first, *later])

    events: list[bytes] = []
    if text:
        events.append(chunk({"role": "assistant", "content": "", "refusal": None}))
        events += [chunk({"content": piece}) for piece in split_evenly(text, fragments)]
    elif len(per_call) == 1:
        first, *rest = per_call[0]
        events.append(chunk({"role": "assistant", "content": None, "tool_calls": [first], "refusal": None}))
        per_call = [rest]
    else:
        events.append(chunk({"role": "assistant", "content": None}))
    for deltas in per_call:
        events += [chunk({"tool_calls": [delta]}) for delta in deltas]
    if not complete:
        return events
    events.append(chunk({}, finish_reason, order_usage_first=False))
    usage = _usage(counts) if counts is not None else fixture_json(PROVIDER, _TOOL_CALLS)["usage"]
    events.append(_data_line({**head, "choices": [], "usage": usage, "obfuscation": template["obfuscation"]}))
    return events


def json_schema_completion(text: str, counts: TokenCounts | None = None) -> dict[str, Any]:
    """A ``response_format: json_schema`` answer: an ordinary completion whose content is the
    JSON document, as a string, and ``finish_reason: "stop"``."""
    body: dict[str, Any] = fixture_json(PROVIDER, _JSON_SCHEMA)
    body["choices"][0]["message"]["content"] = text
    if counts is not None:
        body["usage"] = _usage(counts)
    return body


def _invalid_request(message: str, param: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}


def tool_message_problem(body: dict[str, Any]) -> dict[str, Any] | None:
    """The Chat Completions API's checks on a conversation with tool calls, with the wording of
    its real 400 replies: every assistant ``tool_calls`` must be answered by ``role: "tool"``
    messages right after it, each ``tool_call_id`` naming one of those calls, and
    ``function.arguments`` must be a string."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return None
    open_ids: list[Any] | None = None  # the ids of the assistant turn being answered
    unanswered: list[Any] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            continue
        if message.get("role") == "tool":
            call_id = message.get("tool_call_id")
            if open_ids is None:
                return _invalid_request(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.",
                    f"messages.[{index}].role",
                )
            if call_id not in open_ids:
                return _invalid_request(
                    f"Invalid parameter: 'tool_call_id' of '{call_id}' not found in 'tool_calls' of previous message.",
                    f"messages.[{index}].tool_call_id",
                )
            if call_id in unanswered:
                unanswered.remove(call_id)
            continue
        if unanswered:
            return _missing_tool_responses(unanswered, index)
        open_ids, unanswered = None, []
        calls = message.get("tool_calls") if message.get("role") == "assistant" else None
        if isinstance(calls, list) and calls:
            for position, call in enumerate(calls):
                arguments = call.get("function", {}).get("arguments") if isinstance(call, dict) else None
                if arguments is not None and not isinstance(arguments, str):
                    path = f"messages[{index}].tool_calls[{position}].function.arguments"
                    kind = "an object" if isinstance(arguments, dict) else "an array" if isinstance(arguments, list) else "a number"
                    return _invalid_request(f"Invalid type for '{path}': expected a string, but got {kind} instead.", path, "invalid_type")
            open_ids = [call.get("id") for call in calls if isinstance(call, dict)]
            unanswered = list(open_ids)
    if unanswered:
        return _missing_tool_responses(unanswered, len(messages))
    return None


def _missing_tool_responses(ids: list[Any], index: int) -> dict[str, Any]:
    return _invalid_request(
        "An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. "
        f"The following tool_call_ids did not have response messages: {', '.join(map(str, ids))}",
        f"messages.[{index}].role",
    )



def _counts_of(usage: dict[str, Any]) -> TokenCounts:
    return TokenCounts(usage["prompt_tokens"], usage["completion_tokens"], usage["prompt_tokens_details"]["cached_tokens"])


class FakeOpenAI(FakeHTTPServer):
    """Checks ``Authorization: Bearer <api_key>`` when built with a key (a local server has none)."""

    # OpenAI's 429s carry both; its SDKs prefer the milliseconds.
    RETRY_HINTS: ClassVar[tuple[RetryHint, ...]] = (RetryHint.RETRY_AFTER_MS, RetryHint.RETRY_AFTER)

    def __init__(self, *, api_key: str | None = None, echo_key_in_errors: bool = False) -> None:
        super().__init__()
        self.api_key = api_key
        # The real API echoes a masked key in its 401 message; echoing it whole is the
        # harsher test of the service's redaction.
        self.echo_key_in_errors = echo_key_in_errors

    @property
    def generation_requests(self) -> list[Any]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def embedding_requests(self) -> list[Any]:
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat_completions)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/embeddings`` as the API reference documents it: ``input`` a string or a
        list of strings (1..2048, none empty), ``encoding_format`` ``float`` (default) or
        ``base64`` (little-endian float32s, what the official SDK asks for), ``dimensions``
        for the text-embedding-3 models. A planned reply (an error) is used first."""
        captured = await self.capture(request)
        body = captured.body if isinstance(captured.body, dict) else {}
        reply = self._rejected_key(request) or self.next_planned() or embedding_problem(body)
        if reply is None:
            reply = json_reply(200, embeddings_reply(body), self._headers())
        return await self.send(request, reply)

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
        body = captured.body if isinstance(captured.body, dict) else {}
        # A conversation the real API would refuse (tool messages out of order) is refused
        # before any planned reply is used, so the plan stays for the next request.
        # Besides PlannedReply, the queue may hold an _Answer or a ShapedReply (built below).
        reply: Any = self._rejected_key(request) or self._tool_problem(body) or self.next_planned()
        reply = resolve_shaped(reply, body)
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

    def rate_limit(self, retry_after_s: float, how: RetryHint = RetryHint.RETRY_AFTER_MS) -> None:
        """429 ``rate_limit_exceeded`` with the wait in a header (``how``: ``retry-after-ms``
        or ``retry-after``) beside the ``x-ratelimit-*`` headers."""
        if how not in self.RETRY_HINTS:
            raise ValueError(f"the OpenAI API sends no {how.value}")
        headers = {
            **self._headers(),
            **retry_after_header(how, retry_after_s),
            "x-ratelimit-limit-requests": "500",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "120ms",
        }
        self.plan(json_reply(429, error_body("error_rate_limit.json"), headers))

    def server_error(self, status: int = 500, *, message: str | None = None) -> None:
        """``status`` with the recorded ``server_error`` body (``message`` replacing its text)."""
        self.plan(json_reply(status, error_body("error_server_error.json", message=message), self._headers()))

    def context_too_large(self, input_tokens: int = 130_532, limit: int = 128_000) -> None:
        """400 ``context_length_exceeded``, worded as recorded (the defaults are its counts)."""
        message = (
            f"This model's maximum context length is {limit} tokens. However, your messages resulted in {input_tokens} tokens. "
            "Please reduce the length of the messages."
        )
        self.plan(json_reply(400, error_body("error_context_length_exceeded.json", message=message), self._headers()))

    def cut_stream(self, pieces: list[str]) -> None:
        """Some chunks, then the connection drops (no finish, no usage, no ``[DONE]``)."""
        events = chunk_events(pieces, None)[:-1]  # without the finish chunk
        self.plan(event_stream_reply(tuple(events), ending=Ending.CUT, headers=self._headers()))

    def error_mid_stream(self, pieces: list[str], *, message: str | None = None) -> None:
        """Some chunks, then an ``error`` object as OpenAI sends it inside a stream (recorded;
        ``message`` replacing its text)."""
        events = chunk_events(pieces, None)[:-1]
        error_event = fixture_text(PROVIDER, "stream_error_event.sse").encode()
        if message is not None:
            payload = json.loads(error_event.decode().removeprefix("data: "))
            payload["error"]["message"] = message
            error_event = _data_line(payload)
        self.plan(event_stream_reply((*events, error_event), headers=self._headers()))

    def stall_stream(self, pieces: list[str]) -> None:
        events = chunk_events(pieces, None)[:-1]
        self.plan(event_stream_reply(tuple(events), ending=Ending.STALL, headers=self._headers()))

    # --- tool calls and structured output ------------------------------------------------

    def _tool_problem(self, body: dict[str, Any]) -> PlannedReply | None:
        problem = tool_message_problem(body)
        return json_reply(400, problem, self._headers()) if problem else None

    def _tool_calls_stream(
        self,
        calls: Sequence[ToolCallSpec] | None,
        counts: TokenCounts | None,
        *,
        text: str | None,
        fragments: int,
        finish_reason: str,
        split_utf8: bool = False,
        ending: Ending = Ending.COMPLETE,
    ) -> PlannedReply:
        complete = ending is Ending.COMPLETE
        if calls is None:  # the recorded stream (without its finish, usage and [DONE] if cut)
            events = list(recorded_events(fixture_text(PROVIDER, _TOOL_CALLS_STREAM)))
            events = events if complete else events[:-3]
        else:
            events = tool_call_chunk_events(calls, counts, text=text, fragments=fragments, finish_reason=finish_reason, complete=complete)
            events += [b"data: [DONE]\n\n"] if complete else []
        chunks = split_inside_multibyte_characters(b"".join(events)) if split_utf8 else tuple(events)
        return event_stream_reply(chunks, ending=ending, headers=self._headers())

    def reply_tool_calls(
        self,
        calls: Sequence[ToolCallSpec] | None = None,
        counts: TokenCounts | None = None,
        *,
        text: str | None = None,
        fragments: int = 3,
        finish_reason: str = "tool_calls",
    ) -> None:
        """The next request gets these tool calls, in the shape it asks for: a
        ``chat.completion`` or, for ``stream: true``, chunks with each call's arguments in
        ``fragments`` pieces. Without ``calls``: the recorded fixtures verbatim
        (``chat_completion_tool_calls.json`` / ``chat_completion_tool_calls_stream.sse``, the
        same two calls). ``counts`` None keeps the fixture's usage."""

        def build(body: dict[str, Any]) -> PlannedReply:
            if body.get("stream"):
                return self._tool_calls_stream(calls, counts, text=text, fragments=fragments, finish_reason=finish_reason)
            if calls is None:
                return raw_json_reply(200, fixture_text(PROVIDER, _TOOL_CALLS), self._headers())
            return json_reply(200, tool_calls_completion(calls, counts, text=text, finish_reason=finish_reason), self._headers())

        plan_shaped(self, build)

    def stream_tool_calls(
        self,
        calls: Sequence[ToolCallSpec] | None = None,
        counts: TokenCounts | None = None,
        *,
        text: str | None = None,
        fragments: int = 3,
        finish_reason: str = "tool_calls",
        split_utf8: bool = False,
        ending: Ending = Ending.COMPLETE,
    ) -> None:
        """The next request gets a stream of tool calls (whatever it asked for). Without
        ``calls``: ``chat_completion_tool_calls_stream.sse`` verbatim. ``ending`` CUT or STALL
        stops after the last argument fragment (no finish chunk, usage or ``[DONE]``)."""
        self.plan(
            self._tool_calls_stream(
                calls, counts, text=text, fragments=fragments, finish_reason=finish_reason, split_utf8=split_utf8, ending=ending
            )
        )

    def reply_json(self, text: str | None = None, counts: TokenCounts | None = None, *, fragments: int = 8) -> None:
        """The next request gets a structured-output answer (the JSON document ``text`` as the
        message content), in the shape it asks for; streamed in ``fragments`` pieces. Without
        ``text``: ``chat_completion_json_schema.json`` / ``..._stream.sse`` verbatim."""

        def build(body: dict[str, Any]) -> PlannedReply:
            if body.get("stream"):
                return self._json_stream(None if text is None else split_evenly(text, fragments), counts)
            if text is None:
                return raw_json_reply(200, fixture_text(PROVIDER, _JSON_SCHEMA), self._headers())
            return json_reply(200, json_schema_completion(text, counts), self._headers())

        plan_shaped(self, build)

    def stream_json(self, pieces: list[str] | None = None, counts: TokenCounts | None = None, *, split_utf8: bool = False) -> None:
        """The next request gets a structured-output answer streamed as these content pieces
        (role chunk, one chunk per piece, finish ``stop``, usage). Without ``pieces``:
        ``chat_completion_json_schema_stream.sse`` verbatim."""
        self.plan(self._json_stream(pieces, counts, split_utf8=split_utf8))

    def _json_stream(self, pieces: list[str] | None, counts: TokenCounts | None, *, split_utf8: bool = False) -> PlannedReply:
        if pieces is None:
            events: tuple[bytes, ...] = recorded_events(fixture_text(PROVIDER, _JSON_SCHEMA_STREAM))
        else:
            usage_counts = counts or _counts_of(fixture_json(PROVIDER, _JSON_SCHEMA)["usage"])
            events = (*chunk_events(pieces, usage_counts), b"data: [DONE]\n\n")
        chunks = split_inside_multibyte_characters(b"".join(events)) if split_utf8 else events
        return event_stream_reply(chunks, headers=self._headers())


# --- embeddings ---------------------------------------------------------------------------------

EMBEDDING_DIMENSIONS = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072, "text-embedding-ada-002": 1536}
MAX_EMBEDDING_INPUTS = 2048


def fake_vector(model: str, text: str, dimensions: int) -> list[float]:
    """The fake's embedding of ``text``: a unit vector seeded by (model, text)."""
    seed = int.from_bytes(hashlib.sha256(f"{model}\n{text}".encode()).digest()[:8], "big")
    rng = random.Random(seed)
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values))
    # Rounded through float32, as the API's vectors are.
    return list(array("f", (v / norm for v in values)))


def embedding_tokens(text: str) -> int:
    """A token count of the size OpenAI's tokenizer gives English text (~4 characters each)."""
    return max(1, math.ceil(len(text) / 4))


def embedding_problem(body: dict[str, Any]) -> PlannedReply | None:
    """The 400 the API answers for a request it cannot embed (same messages as the real one)."""
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return json_reply(400, _invalid_request("you must provide a model parameter", "model"))
    if model not in EMBEDDING_DIMENSIONS:
        message = f"The model `{model}` does not exist or you do not have access to it."
        return json_reply(404, {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "model_not_found"}})
    bad = not isinstance(texts, list) or not 1 <= len(texts) <= MAX_EMBEDDING_INPUTS
    if bad or any(not isinstance(t, str) or not t for t in texts):
        return json_reply(400, _invalid_request("'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", "input"))
    if body.get("encoding_format", "float") not in ("float", "base64"):
        return json_reply(400, _invalid_request("'encoding_format' must be 'float' or 'base64'", "encoding_format"))
    return None


def embeddings_reply(body: dict[str, Any]) -> dict[str, Any]:
    """The ``list`` object of the recorded shape, one ``embedding`` per input by ``index``."""
    texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
    model = body["model"]
    dimensions = int(body.get("dimensions") or EMBEDDING_DIMENSIONS[model])
    reply = fixture_json(PROVIDER, "embeddings.json")
    template = reply["data"][0]
    data = []
    for index, text in enumerate(texts):
        vector = fake_vector(model, text, dimensions)
        encoded: Any = base64.b64encode(array("f", vector).tobytes()).decode() if body.get("encoding_format") == "base64" else vector
        data.append({**template, "index": index, "embedding": encoded})
    tokens = sum(embedding_tokens(t) for t in texts)
    reply.update(data=data, model=model, usage={"prompt_tokens": tokens, "total_tokens": tokens})
    return reply
