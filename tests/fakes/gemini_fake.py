"""A wire-faithful fake of Google's Gemini API (Generative Language API) on loopback.

Routes, under ``/v1beta`` and ``/v1`` (the official Python SDK's default version):
``POST models/{model}:generateContent``, ``POST models/{model}:streamGenerateContent`` (with
``?alt=sse`` an event stream of ``GenerateContentResponse`` chunks; without it one JSON array),
``GET models`` (paged with ``pageSize`` / ``pageToken``) and ``GET models/{model}``.

Like the real API it takes the key from ``x-goog-api-key`` (or the ``key`` query parameter) and
answers a wrong key with 400 ``INVALID_ARGUMENT`` / ``API_KEY_INVALID``, no key with 403
``PERMISSION_DENIED``, a bearer token that is not an OAuth token with 401 ``UNAUTHENTICATED``.
It refuses, with the real API's 400 wording, the request bodies the API refuses: unknown field
names, no ``contents``, a role other than ``user`` / ``model``, function responses that do not
answer the function call turn just before, an unknown ``functionCallingConfig.mode``, and (for
``gemini-3*`` models) a function call of the current turn sent back without its
``thoughtSignature``.

Bodies come from ``tests/fixtures/gemini/`` (see the README there) and are written as Google
writes them: non-streamed JSON indented by two spaces, stream chunks as
``data: {"key": value,"key2": ...}`` events separated by ``\\r\\n\\r\\n``. Function calls arrive
whole (Gemini does not fragment arguments); ``usageMetadata`` is on every chunk, cumulative;
``finishReason`` is on the last. Usage follows the domain's :class:`TokenCounts`: ``prompt``
includes the cached tokens (``cachedContentTokenCount`` is part of ``promptTokenCount``), and
``completion`` is the whole output: with ``thoughts=N`` the fake reports
``candidatesTokenCount = completion - N`` and ``thoughtsTokenCount = N``, and
``totalTokenCount = prompt + completion``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from aiohttp import web

from .http_fake import (
    FIXTURES,
    CapturedRequest,
    Ending,
    FakeHTTPServer,
    PlannedReply,
    RetryHint,
    TokenCounts,
    split_evenly,
    split_inside_multibyte_characters,
)

PROVIDER = "gemini"
API_VERSIONS = ("v1beta", "v1")
EVENT_END = b"\r\n\r\n"
FINISH_MESSAGE = "Model generated function call(s)."

_TEXT = "generate_content.json"
_TEXT_STREAM = "generate_content_stream.sse"
_CALLS = "generate_content_function_calls.json"
_CALLS_STREAM = "generate_content_function_calls_stream.sse"
_JSON = "generate_content_json_schema.json"
_JSON_STREAM = "generate_content_json_schema_stream.sse"

# One function call to script: (function name, args object). Gemini sends ``args`` as a JSON
# object (a protobuf Struct), never as a string, and the Gemini API gives calls no ``id``.
FunctionCallSpec = tuple[str, dict[str, Any]]

# The usage of generate_content_json_schema.json, for JSON scenarios planned without counts.
JSON_DEFAULT_COUNTS = TokenCounts(prompt=164, completion=259)
JSON_DEFAULT_THOUGHTS = 188


# --- serialisation, as Google's front end writes it -------------------------------------------


def fixture_bytes(name: str) -> bytes:
    """A fixture's exact bytes (``read_text`` would turn the streams' CRLFs into LFs)."""
    return (FIXTURES / PROVIDER / name).read_bytes()


def fixture_body(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def pretty(body: Any) -> bytes:
    """A non-streamed body: two-space indent, UTF-8 unescaped, a final newline."""
    return json.dumps(body, indent=2, ensure_ascii=False).encode() + b"\n"


def event(payload: Any) -> bytes:
    """One SSE event: ``data: `` + ``{"key": value,"key2": value2}`` + CRLF CRLF."""
    return b"data: " + json.dumps(payload, separators=(",", ": "), ensure_ascii=False).encode() + EVENT_END


def recorded_events(raw: bytes) -> tuple[bytes, ...]:
    """A recorded Gemini stream cut at its event boundaries (CRLF CRLF), one event per write."""
    return tuple(chunk + EVENT_END for chunk in raw.split(EVENT_END) if chunk.strip())


def event_payloads(raw: bytes) -> list[Any]:
    """The JSON payloads of a recorded stream's ``data:`` events."""
    return [json.loads(chunk.removeprefix(b"data: ")) for chunk in raw.split(EVENT_END) if chunk.strip()]


def _headers(content_type: str = "application/json; charset=UTF-8") -> dict[str, str]:
    return {
        "content-type": content_type,
        "vary": "Origin, X-Origin, Referer",
        "server": "scaffolding on HTTPServer2",
        "server-timing": "gfet4t7; dur=812",
        "x-xss-protection": "0",
        "x-frame-options": "SAMEORIGIN",
        "x-content-type-options": "nosniff",
    }


def body_reply(status: int, body: Any) -> PlannedReply:
    return PlannedReply(status, _headers(), (pretty(body),))


def raw_reply(status: int, raw: bytes) -> PlannedReply:
    return PlannedReply(status, _headers(), (raw,))


def sse_reply(events: Sequence[bytes], *, ending: Ending = Ending.COMPLETE, split_utf8: bool = False) -> PlannedReply:
    """A ``text/event-stream`` reply (Google sends no charset and no cache-control)."""
    chunks = split_inside_multibyte_characters(b"".join(events)) if split_utf8 else tuple(events)
    return PlannedReply(200, _headers("text/event-stream"), chunks, ending)


def array_reply(payloads: Sequence[Any]) -> PlannedReply:
    """``streamGenerateContent`` without ``alt=sse``: the chunks as one JSON array."""
    body = b"[" + b",\r\n".join(pretty(payload).rstrip(b"\n") for payload in payloads) + b"]"
    return PlannedReply(200, _headers(), (body,))


# --- bodies -----------------------------------------------------------------------------------


def usage_metadata(counts: TokenCounts, *, thoughts: int = 0, candidates: int | None = None) -> dict[str, Any]:
    """``usageMetadata`` in the API's field order (by proto field number). ``candidates``
    overrides the visible-output count (a stream's running total); zero-valued cache and thought
    counts are left out, as the API leaves them out."""
    visible = counts.completion - thoughts if candidates is None else candidates
    usage: dict[str, Any] = {
        "promptTokenCount": counts.prompt,
        "candidatesTokenCount": visible,
        "totalTokenCount": counts.prompt + visible + thoughts,
    }
    if counts.cached:
        usage["cachedContentTokenCount"] = counts.cached
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": counts.prompt}]
    if counts.cached:
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": counts.cached}]
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    return usage


def candidate(parts: list[dict[str, Any]], finish_reason: str | None = None, *, finish_message: str | None = None) -> dict[str, Any]:
    """A ``Candidate``: content (no ``parts`` key at all when there are none, as the API sends
    a finish-only chunk or an answer cut by ``MAX_TOKENS`` during thinking), finishReason, index."""
    content: dict[str, Any] = {"parts": parts, "role": "model"} if parts else {"role": "model"}
    result: dict[str, Any] = {"content": content}
    if finish_reason:
        result["finishReason"] = finish_reason
    result["index"] = 0
    if finish_message:
        result["finishMessage"] = finish_message
    return result


def generate_content_response(template: str, candidates: list[dict[str, Any]], usage: dict[str, Any], *, model_version: str | None) -> dict[str, Any]:
    """A ``GenerateContentResponse`` with the ``modelVersion`` / ``responseId`` of a fixture."""
    recorded = event_payloads(fixture_bytes(template))[0] if template.endswith(".sse") else fixture_body(template)
    return {
        "candidates": candidates,
        "usageMetadata": usage,
        "modelVersion": model_version or recorded["modelVersion"],
        "responseId": recorded["responseId"],
    }


def _running_totals(pieces: Sequence[str], total: int) -> list[int]:
    """Cumulative visible-token counts after each piece, in proportion to the text so far."""
    lengths = [len(piece) for piece in pieces]
    whole = sum(lengths) or 1
    totals, seen = [], 0
    for length in lengths:
        seen += length
        totals.append(round(total * seen / whole))
    if totals:
        totals[-1] = total
    return totals


def text_chunks(
    pieces: Sequence[str],
    counts: TokenCounts,
    *,
    thoughts: int = 0,
    finish_reason: str = "STOP",
    finish_alone: bool = False,
    complete: bool = True,
    model_version: str | None = None,
    template: str = _TEXT_STREAM,
) -> list[dict[str, Any]]:
    """The chunks of a streamed text answer: one per piece, each with the cumulative usage;
    ``finishReason`` on the last piece, or (``finish_alone``) on one more chunk whose content
    has no parts, as gemini-2.5-pro sends it. ``complete=False`` leaves the finish out."""
    visible = counts.completion - thoughts
    totals = _running_totals(pieces, visible)
    chunks = []
    for index, (piece, running) in enumerate(zip(pieces, totals, strict=True)):
        last = complete and not finish_alone and index == len(pieces) - 1
        usage = usage_metadata(counts, thoughts=thoughts, candidates=running)
        chunks.append(generate_content_response(template, [candidate([{"text": piece}], finish_reason if last else None)], usage, model_version=model_version))
    if complete and (finish_alone or not pieces):
        usage = usage_metadata(counts, thoughts=thoughts)
        chunks.append(generate_content_response(template, [candidate([], finish_reason)], usage, model_version=model_version))
    return chunks


def recorded_signature() -> str:
    """The ``thoughtSignature`` of the recorded function-call answer (an opaque base64 blob)."""
    signature: str = fixture_body(_CALLS)["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
    return signature


def function_call_parts(calls: Sequence[FunctionCallSpec], *, signature: str | None) -> list[dict[str, Any]]:
    """``{"functionCall": {"name", "args"}}`` parts; the first carries ``thoughtSignature``
    (thinking models sign only the first of parallel calls)."""
    parts: list[dict[str, Any]] = []
    for index, (name, args) in enumerate(calls):
        part: dict[str, Any] = {"functionCall": {"name": name, "args": args}}
        if index == 0 and signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def error_body(name: str, *, message: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = fixture_body(name)
    if message is not None:
        body["error"]["message"] = message
        for detail in body["error"].get("details", []):
            if detail.get("@type", "").endswith("LocalizedMessage"):
                detail["message"] = message
    return body


def duration_text(seconds: float) -> str:
    """A ``google.protobuf.Duration`` in its JSON form: ``"7s"``, ``"1.500s"``."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.9f}".rstrip("0") + "s"


def _status_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        error["details"] = details
    return {"error": error}


def invalid_argument(message: str, field: str | None = None) -> dict[str, Any]:
    """A 400 for a malformed body, with the ``google.rpc.BadRequest`` detail ESF adds."""
    violation = {"field": field, "description": message} if field else {"description": message}
    return _status_error(400, "INVALID_ARGUMENT", message, [{"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}])


# --- the API's checks on request bodies ------------------------------------------------------


def _field_set(*names: str) -> frozenset[str]:
    """Each proto field by its JSON name and its proto name (the API accepts both)."""
    snake = (re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower() for name in names)
    return frozenset((*names, *snake))


_REQUEST_FIELDS = _field_set("model", "contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig", "cachedContent")
_CONTENT_FIELDS = _field_set("role", "parts")
_PART_FIELDS = _field_set(
    "text", "inlineData", "functionCall", "functionResponse", "fileData", "executableCode", "codeExecutionResult",
    "thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution",
)
_FUNCTION_CALL_FIELDS = _field_set("id", "name", "args")
_FUNCTION_RESPONSE_FIELDS = _field_set("id", "name", "response", "parts", "willContinue", "scheduling")
_GENERATION_CONFIG_FIELDS = _field_set(
    "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities", "candidateCount",
    "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty", "frequencyPenalty", "responseLogprobs",
    "logprobs", "enableEnhancedCivicAnswers", "speechConfig", "thinkingConfig", "imageConfig", "mediaResolution",
) | {"_responseJsonSchema"}
_TOOL_FIELDS = _field_set(
    "functionDeclarations", "googleSearchRetrieval", "codeExecution", "googleSearch", "urlContext", "computerUse",
    "fileSearch", "googleMaps",
)
_FUNCTION_DECLARATION_FIELDS = _field_set("name", "description", "behavior", "parameters", "parametersJsonSchema", "response", "responseJsonSchema")
_TOOL_CONFIG_FIELDS = _field_set("functionCallingConfig", "retrievalConfig")
_FUNCTION_CALLING_CONFIG_FIELDS = _field_set("mode", "allowedFunctionNames")
_MODES = ("MODE_UNSPECIFIED", "AUTO", "ANY", "NONE", "VALIDATED")
_MODE_TYPE = "type.googleapis.com/google.ai.generativelanguage.{version}.FunctionCallingConfig.Mode"


def _get(obj: dict[str, Any], name: str) -> Any:
    """A field by its JSON name or its proto (snake_case) name."""
    if name in obj:
        return obj[name]
    return obj.get(re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower())


def _unknown_field(obj: Any, known: frozenset[str], path: str) -> dict[str, Any] | None:
    if not isinstance(obj, dict):
        return None
    for name in obj:
        if name not in known:
            where = f" at '{path}'" if path else ""
            return invalid_argument(f'Invalid JSON payload received. Unknown name "{name}"{where}: Cannot find field.', path or None)
    return None


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def unknown_field_problem(body: dict[str, Any]) -> dict[str, Any] | None:
    """The first field the API's JSON parser would not know (paths in proto names, as ESF
    reports them: ``generation_config``, ``contents[0].parts[1]``)."""
    checks: list[tuple[Any, frozenset[str], str]] = [(body, _REQUEST_FIELDS, "")]
    for index, content in enumerate(_dicts(_get(body, "contents"))):
        checks.append((content, _CONTENT_FIELDS, f"contents[{index}]"))
        for position, part in enumerate(_dicts(content.get("parts"))):
            checks.append((part, _PART_FIELDS, f"contents[{index}].parts[{position}]"))
            checks.append((_get(part, "functionCall"), _FUNCTION_CALL_FIELDS, f"contents[{index}].parts[{position}].function_call"))
            checks.append((_get(part, "functionResponse"), _FUNCTION_RESPONSE_FIELDS, f"contents[{index}].parts[{position}].function_response"))
    system = _get(body, "systemInstruction")
    checks.append((system, _CONTENT_FIELDS, "system_instruction"))
    for position, part in enumerate(_dicts(system.get("parts") if isinstance(system, dict) else None)):
        checks.append((part, _PART_FIELDS, f"system_instruction.parts[{position}]"))
    checks.append((_get(body, "generationConfig"), _GENERATION_CONFIG_FIELDS, "generation_config"))
    for index, tool in enumerate(_dicts(_get(body, "tools"))):
        checks.append((tool, _TOOL_FIELDS, f"tools[{index}]"))
        for position, declaration in enumerate(_dicts(_get(tool, "functionDeclarations"))):
            checks.append((declaration, _FUNCTION_DECLARATION_FIELDS, f"tools[{index}].function_declarations[{position}]"))
    tool_config = _get(body, "toolConfig")
    checks.append((tool_config, _TOOL_CONFIG_FIELDS, "tool_config"))
    if isinstance(tool_config, dict):
        checks.append((_get(tool_config, "functionCallingConfig"), _FUNCTION_CALLING_CONFIG_FIELDS, "tool_config.function_calling_config"))
    for obj, known, path in checks:
        problem = _unknown_field(obj, known, path)
        if problem:
            return problem
    return None


def _parts(content: dict[str, Any]) -> list[dict[str, Any]]:
    return _dicts(content.get("parts"))


def _count(content: dict[str, Any], kind: str) -> int:
    return sum(1 for part in _parts(content) if _get(part, kind) is not None)


def conversation_problem(body: dict[str, Any], *, model: str, version: str) -> dict[str, Any] | None:
    """The API's checks on ``contents`` and ``toolConfig``, with the wording of its real 400s."""
    contents = _get(body, "contents")
    if not isinstance(contents, list) or not contents:
        return _status_error(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified\n")
    for content in _dicts(contents):
        if content.get("role") not in (None, "", "user", "model"):
            return _status_error(400, "INVALID_ARGUMENT", "Please use a valid role: user, model.")
    items = [item if isinstance(item, dict) else {} for item in contents]
    for index, content in enumerate(items):
        previous = items[index - 1] if index else None
        responses = _count(content, "functionResponse")
        if responses:
            calls = _count(previous, "functionCall") if previous and previous.get("role") == "model" else 0
            if not calls:
                return _status_error(400, "INVALID_ARGUMENT", "Please ensure that function response turn comes immediately after a function call turn.")
            if responses != calls:
                return _status_error(
                    400,
                    "INVALID_ARGUMENT",
                    "Please ensure that the number of function response parts is equal to the number of function call parts of the function call turn.",
                )
        if content.get("role") == "model" and _count(content, "functionCall") and previous is not None and previous.get("role") == "model":
            return _status_error(
                400, "INVALID_ARGUMENT", "Please ensure that function call turn comes immediately after a user turn or after a function response turn."
            )
    tool_config = _get(body, "toolConfig")
    calling = _get(tool_config, "functionCallingConfig") if isinstance(tool_config, dict) else None
    mode = _get(calling, "mode") if isinstance(calling, dict) else None
    if mode is not None and mode not in _MODES:
        path = "tool_config.function_calling_config.mode"
        return invalid_argument(f"Invalid value at '{path}' ({_MODE_TYPE.format(version=version)}), {json.dumps(mode)}", path)
    if model.startswith("gemini-3"):
        return _thought_signature_problem(items)
    return None


def _thought_signature_problem(contents: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Gemini 3 requires the signature the model gave the first function call of each step of
    the current turn (since the last user text) to come back with it."""
    start = 0
    for index, content in enumerate(contents):
        if content.get("role") in (None, "", "user") and any(_get(part, "text") is not None for part in _parts(content)):
            start = index
    for index in range(start, len(contents)):
        content = contents[index]
        calls = [part for part in _parts(content) if _get(part, "functionCall") is not None]
        if content.get("role") == "model" and calls and not _get(calls[0], "thoughtSignature"):
            name = _get(calls[0], "functionCall").get("name")
            return _status_error(
                400,
                "INVALID_ARGUMENT",
                "Function call is missing a thought_signature in functionCall parts. This is required for tools to work correctly, "
                f"and missing thought_signature may lead to degraded model performance. Additional data, function call `default_api:{name}` , "
                f"position {index + 1}. Please refer to https://ai.google.dev/gemini-api/docs/thought-signatures for more details.",
            )
    return None


# --- requests as recorded --------------------------------------------------------------------


@dataclass(frozen=True)
class GeminiRequest(CapturedRequest):
    """A captured request plus what Gemini puts in the URL: ``models/{model}:{method}``."""

    api_version: str = ""
    model: str | None = None  # "gemini-2.5-flash" (without the "models/" prefix)
    method_name: str | None = None  # "generateContent" / "streamGenerateContent"
    query: dict[str, str] = field(default_factory=dict)

    @property
    def streamed(self) -> bool:
        return self.method_name == "streamGenerateContent"


@dataclass(frozen=True)
class _Shaped:
    """A reply built when the request arrives, from whether it streams (and its body/model)."""

    build: Callable[[GeminiRequest], PlannedReply]


class FakeGemini(FakeHTTPServer):
    """Checks ``x-goog-api-key`` (or ``?key=``) against ``api_key``."""

    RETRY_HINTS: ClassVar[tuple[RetryHint, ...]] = (RetryHint.RETRY_INFO,)

    def __init__(self, *, api_key: str, echo_key_in_errors: bool = False) -> None:
        super().__init__()
        self.api_key = api_key
        # The real API never echoes the key; echoing it tests the service's redaction.
        self.echo_key_in_errors = echo_key_in_errors

    @property
    def generation_requests(self) -> list[GeminiRequest]:
        return [r for r in self.requests if isinstance(r, GeminiRequest) and r.method_name in ("generateContent", "streamGenerateContent")]

    def routes(self, app: web.Application) -> None:
        for version in API_VERSIONS:
            app.router.add_get(f"/{version}/models", self._list_models)
            app.router.add_get(f"/{version}/models/{{target}}", self._get_model)
            app.router.add_post(f"/{version}/models/{{target}}", self._generate)

    async def capture(self, request: web.Request) -> GeminiRequest:
        base = await super().capture(request)
        target = request.match_info.get("target", "")
        model, _, method_name = target.partition(":")
        captured = GeminiRequest(
            **{f.name: getattr(base, f.name) for f in fields(CapturedRequest)},
            api_version=request.path.split("/")[1],
            model=model or None,
            method_name=method_name or None,
            query=dict(request.query),
        )
        self.requests[-1] = captured
        return captured

    # --- handlers ---------------------------------------------------------------------------

    def _rejected_key(self, request: web.Request) -> PlannedReply | None:
        presented = request.headers.get("x-goog-api-key") or request.query.get("key")
        if presented is None:
            if request.headers.get("Authorization", "").startswith("Bearer "):
                return body_reply(401, error_body("error_unauthenticated.json"))
            return body_reply(403, error_body("error_unregistered_caller.json"))
        if presented != self.api_key:
            message = None
            if self.echo_key_in_errors:
                message = f"API key not valid. Please pass a valid API key. ({presented})"
            return body_reply(400, error_body("error_api_key_invalid.json", message=message))
        return None

    async def _list_models(self, request: web.Request) -> web.StreamResponse:
        await self.capture(request)
        reply = self._rejected_key(request)
        if reply is None:
            models = fixture_body("models.json")["models"]
            size = int(request.query.get("pageSize") or 50)
            start = _page_offset(request.query.get("pageToken"))
            page: dict[str, Any] = {"models": models[start : start + size]}
            if start + size < len(models):
                page["nextPageToken"] = base64.urlsafe_b64encode(f"offset:{start + size}".encode()).decode()
            reply = raw_reply(200, fixture_bytes("models.json")) if start == 0 and size >= len(models) else body_reply(200, page)
        return await self.send(request, reply)

    async def _get_model(self, request: web.Request) -> web.StreamResponse:
        captured = await self.capture(request)
        reply = self._rejected_key(request)
        if reply is None:
            found = [m for m in fixture_body("models.json")["models"] if m["name"] == f"models/{captured.model}"]
            if found:
                reply = body_reply(200, found[0])
            else:
                message = (
                    f"models/{captured.model} is not found for API version {captured.api_version}, or is not supported for generateContent. "
                    "Call ListModels to see the list of available models and their supported methods."
                )
                reply = body_reply(404, error_body("error_model_not_found.json", message=message))
        return await self.send(request, reply)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        captured = await self.capture(request)
        if captured.method_name not in ("generateContent", "streamGenerateContent"):
            return web.Response(status=404, text="Not Found")
        body = captured.body if isinstance(captured.body, dict) else {}
        # A request the real API would refuse is refused before any planned reply is used, so
        # the plan stays for the next request.
        reply: Any = self._rejected_key(request)
        if reply is None:
            problem: dict[str, Any] | None
            if not isinstance(captured.body, dict):
                problem = invalid_argument("Invalid JSON payload received. Expected an object.")
            else:
                problem = unknown_field_problem(body) or conversation_problem(body, model=captured.model or "", version=captured.api_version)
            if problem:
                reply = body_reply(400, problem)
        if reply is None:
            reply = self.next_planned()
        if isinstance(reply, _Shaped):
            reply = reply.build(captured)
        if reply is None:  # the recorded replies, verbatim
            reply = self._recorded(captured, _TEXT, _TEXT_STREAM)
        if captured.streamed and captured.query.get("alt") != "sse" and reply.is_event_stream and reply.ending is Ending.COMPLETE:
            reply = array_reply(event_payloads(b"".join(reply.chunks)))
        return await self.send(request, reply)

    @staticmethod
    def _recorded(captured: GeminiRequest, plain: str, stream: str) -> PlannedReply:
        if captured.streamed:
            return sse_reply(recorded_events(fixture_bytes(stream)))
        return raw_reply(200, fixture_bytes(plain))

    def _plan_shaped(self, build: Callable[[GeminiRequest], PlannedReply]) -> None:
        self.plan(_Shaped(build))  # type: ignore[arg-type]

    # --- scenarios: each plans the reply to the next generation request -----------------

    def reply_text(
        self, text: str, counts: TokenCounts, *, thoughts: int = 0, finish_reason: str = "STOP", model_version: str | None = None
    ) -> None:
        """The next request gets ``text``, in the shape it asks for: a ``GenerateContentResponse``
        or, for ``streamGenerateContent``, one chunk. An empty ``text`` gives a candidate whose
        content has no parts (what ``MAX_TOKENS`` during thinking looks like)."""

        def build(captured: GeminiRequest) -> PlannedReply:
            if captured.streamed:
                pieces = [text] if text else []
                return sse_reply([event(c) for c in text_chunks(pieces, counts, thoughts=thoughts, finish_reason=finish_reason, model_version=model_version)])
            parts = [{"text": text}] if text else []
            usage = usage_metadata(counts, thoughts=thoughts)
            return body_reply(200, generate_content_response(_TEXT, [candidate(parts, finish_reason)], usage, model_version=model_version))

        self._plan_shaped(build)

    def stream_text(
        self,
        pieces: list[str],
        counts: TokenCounts,
        *,
        thoughts: int = 0,
        finish_reason: str = "STOP",
        finish_alone: bool = False,
        split_utf8: bool = False,
        model_version: str | None = None,
    ) -> None:
        """The next request gets an event stream: one chunk per piece with the running usage,
        ``finishReason`` on the last piece (or, ``finish_alone``, on a parts-less chunk after it)."""
        chunks = text_chunks(pieces, counts, thoughts=thoughts, finish_reason=finish_reason, finish_alone=finish_alone, model_version=model_version)
        self.plan(sse_reply([event(c) for c in chunks], split_utf8=split_utf8))

    def reply_blocked(self) -> None:
        """The prompt is blocked: ``promptFeedback.blockReason`` and no ``candidates`` (a 200)."""
        self._plan_shaped(lambda captured: self._one_body(captured, fixture_bytes("generate_content_prompt_blocked.json")))

    def reply_safety_stop(self) -> None:
        """The answer is stopped by the safety filters: ``finishReason: "SAFETY"``, a content
        without parts, ``safetyRatings`` with the blocking category."""
        self._plan_shaped(lambda captured: self._one_body(captured, fixture_bytes("generate_content_finish_safety.json")))

    @staticmethod
    def _one_body(captured: GeminiRequest, raw: bytes) -> PlannedReply:
        return sse_reply([event(json.loads(raw))]) if captured.streamed else raw_reply(200, raw)

    def fail_auth(self, status: int = 400) -> None:
        """The next request is refused as the API refuses credentials: 400 ``API_KEY_INVALID``
        (a wrong, expired or deleted key), 401 ``UNAUTHENTICATED`` (a bearer token that is not an
        OAuth token) or 403 ``PERMISSION_DENIED`` (no key)."""
        name = {400: "error_api_key_invalid.json", 401: "error_unauthenticated.json", 403: "error_unregistered_caller.json"}[status]
        self.plan(body_reply(status, error_body(name)))

    def rate_limit(self, retry_after_s: float, how: RetryHint = RetryHint.RETRY_INFO) -> None:
        """429 ``RESOURCE_EXHAUSTED`` with ``QuotaFailure``, ``Help`` and ``RetryInfo`` details;
        the delay is only in ``RetryInfo.retryDelay`` (Google sends no ``Retry-After`` header)."""
        if how not in self.RETRY_HINTS:
            raise ValueError(f"the Gemini API sends no {how.value}")
        body = error_body("error_rate_limit.json")
        for detail in body["error"]["details"]:
            if detail["@type"].endswith("RetryInfo"):
                detail["retryDelay"] = duration_text(retry_after_s)
        self.plan(body_reply(429, body))

    def server_error(self, status: int = 500, *, message: str | None = None) -> None:
        """500 ``INTERNAL`` or 503 ``UNAVAILABLE`` ("The model is overloaded"); others by code
        (``message`` replacing the text)."""
        if status == 500:
            body = error_body("error_internal.json", message=message)
        elif status == 503:
            body = error_body("error_unavailable.json", message=message)
        else:
            names = {502: "UNKNOWN", 504: "DEADLINE_EXCEEDED"}
            body = _status_error(status, names.get(status, "UNKNOWN"), message or "The service encountered an error.")
        self.plan(body_reply(status, body))

    def context_too_large(self, input_tokens: int = 1200293, limit: int = 1048576) -> None:
        """400 ``INVALID_ARGUMENT`` "The input token count (N) exceeds the maximum number of
        tokens allowed (M)." (no ``details``: the status and the wording are all there is)."""
        message = f"The input token count ({input_tokens}) exceeds the maximum number of tokens allowed ({limit})."
        self.plan(body_reply(400, error_body("error_context_too_large.json", message=message)))

    def model_not_found(self) -> None:
        """404 ``NOT_FOUND`` naming the requested model, as for a model that does not exist."""

        def build(captured: GeminiRequest) -> PlannedReply:
            message = (
                f"models/{captured.model} is not found for API version {captured.api_version}, or is not supported for "
                f"{captured.method_name}. Call ListModels to see the list of available models and their supported methods."
            )
            return body_reply(404, error_body("error_model_not_found.json", message=message))

        self._plan_shaped(build)

    def _partial_stream(self, pieces: list[str], ending: Ending) -> PlannedReply:
        counts = TokenCounts(prompt=8, completion=max(1, sum(len(piece) for piece in pieces) // 4))
        return sse_reply([event(c) for c in text_chunks(pieces, counts, complete=False)], ending=ending)

    def cut_stream(self, pieces: list[str]) -> None:
        """Some chunks (no ``finishReason``), then the connection drops mid-body."""
        self.plan(self._partial_stream(pieces, Ending.CUT))

    def stall_stream(self, pieces: list[str]) -> None:
        """Some chunks (no ``finishReason``), then nothing until the fake stops."""
        self.plan(self._partial_stream(pieces, Ending.STALL))

    def error_mid_stream(self, pieces: list[str], *, message: str | None = None) -> None:
        """Some chunks, then ``data: {"error": {"code": 500, ..., "status": "INTERNAL"}}`` inside the
        200 stream (``message`` replacing its text), and the stream ends."""
        partial = self._partial_stream(pieces, Ending.COMPLETE)
        error_event = fixture_bytes("stream_error_internal.sse")
        if message is not None:
            payload = event_payloads(error_event)[0]
            payload["error"]["message"] = message
            error_event = event(payload)
        self.plan(sse_reply([*partial.chunks, error_event]))

    # --- function calling and structured output ------------------------------------------

    def _function_call_body(
        self, calls: Sequence[FunctionCallSpec], counts: TokenCounts | None, *, text: str | None, thoughts: int | None, signature: str | None
    ) -> dict[str, Any]:
        recorded = fixture_body(_CALLS)
        usage = recorded["usageMetadata"] if counts is None else usage_metadata(counts, thoughts=thoughts or 0)
        parts = ([{"text": text}] if text else []) + function_call_parts(calls, signature=signature)
        return generate_content_response(_CALLS, [candidate(parts, "STOP", finish_message=FINISH_MESSAGE)], usage, model_version=None)

    def _function_call_chunks(
        self,
        calls: Sequence[FunctionCallSpec],
        counts: TokenCounts | None,
        *,
        text: str | None,
        thoughts: int | None,
        signature: str | None,
        one_chunk: bool,
        complete: bool,
    ) -> list[dict[str, Any]]:
        """Optional text chunks, then the calls whole: all in one chunk (as gemini-2.5-flash
        sends them) or one call per chunk (as gemini-2.5-pro does); the last chunk carries
        ``finishReason: "STOP"`` and ``finishMessage``."""
        recorded_usage = fixture_body(_CALLS)["usageMetadata"]
        if counts is None:
            counts = TokenCounts(
                prompt=recorded_usage["promptTokenCount"],
                completion=recorded_usage["candidatesTokenCount"] + recorded_usage["thoughtsTokenCount"],
                cached=recorded_usage.get("cachedContentTokenCount", 0),
            )
            thoughts = recorded_usage["thoughtsTokenCount"]
        thoughts = thoughts or 0
        parts = function_call_parts(calls, signature=signature)
        groups: list[list[dict[str, Any]]] = [parts] if one_chunk else [[part] for part in parts]
        if not complete:
            groups = groups[:-1]  # the last call (and the finish) never arrive
        text_pieces = split_evenly(text, 2) if text else []
        steps: list[tuple[list[dict[str, Any]], int]] = [([{"text": piece}], len(piece)) for piece in text_pieces]
        steps += [(group, 1) for group in groups]
        visible = counts.completion - thoughts
        totals = _running_totals(["x" * weight for _, weight in steps], visible)
        chunks = []
        for index, ((group, _), running) in enumerate(zip(steps, totals, strict=True)):
            last = complete and index == len(steps) - 1
            finish = ("STOP", FINISH_MESSAGE) if last else (None, None)
            usage = usage_metadata(counts, thoughts=thoughts, candidates=running if not last else visible)
            chunks.append(generate_content_response(_CALLS_STREAM, [candidate(group, finish[0], finish_message=finish[1])], usage, model_version=None))
        return chunks

    def reply_function_calls(
        self,
        calls: Sequence[FunctionCallSpec] | None = None,
        counts: TokenCounts | None = None,
        *,
        text: str | None = None,
        thoughts: int | None = None,
        signature: str | None = "recorded",
        one_chunk: bool = False,
    ) -> None:
        """The next request gets these function calls (after ``text`` if given), in the shape it
        asks for. Without ``calls``: the recorded fixtures verbatim
        (``generate_content_function_calls.json`` / ``..._stream.sse``, the same two calls).
        ``signature`` is the first call's ``thoughtSignature`` ("recorded": the fixture's; None:
        none, as a non-thinking model sends). ``counts`` None keeps the fixture's usage."""
        signature = recorded_signature() if signature == "recorded" else signature

        def build(captured: GeminiRequest) -> PlannedReply:
            if calls is None:
                return self._recorded(captured, _CALLS, _CALLS_STREAM)
            if captured.streamed:
                chunks = self._function_call_chunks(calls, counts, text=text, thoughts=thoughts, signature=signature, one_chunk=one_chunk, complete=True)
                return sse_reply([event(c) for c in chunks])
            return body_reply(200, self._function_call_body(calls, counts, text=text, thoughts=thoughts, signature=signature))

        self._plan_shaped(build)

    def stream_function_calls(
        self,
        calls: Sequence[FunctionCallSpec] | None = None,
        counts: TokenCounts | None = None,
        *,
        text: str | None = None,
        thoughts: int | None = None,
        signature: str | None = "recorded",
        one_chunk: bool = False,
        split_utf8: bool = False,
        ending: Ending = Ending.COMPLETE,
    ) -> None:
        """The next request gets function calls as an event stream (whatever it asked for).
        Without ``calls``: ``generate_content_function_calls_stream.sse`` verbatim. ``ending``
        CUT or STALL drops the last chunk (so the last call and the finish never arrive)."""
        signature = recorded_signature() if signature == "recorded" else signature
        complete = ending is Ending.COMPLETE
        if calls is None:
            events = list(recorded_events(fixture_bytes(_CALLS_STREAM)))
            events = events if complete else events[:-1]
        else:
            chunks = self._function_call_chunks(calls, counts, text=text, thoughts=thoughts, signature=signature, one_chunk=one_chunk, complete=complete)
            events = [event(c) for c in chunks]
        self.plan(sse_reply(events, ending=ending, split_utf8=split_utf8))

    def reply_json(self, text: str | None = None, counts: TokenCounts | None = None, *, thoughts: int | None = None, fragments: int = 5) -> None:
        """A structured-output answer (``responseMimeType: application/json``): the JSON document
        ``text`` as the one text part, ``finishReason: "STOP"``; streamed in ``fragments`` text
        chunks when the request streams. Without ``text``: ``generate_content_json_schema.json``
        / ``..._stream.sse`` verbatim."""

        def build(captured: GeminiRequest) -> PlannedReply:
            if text is None:
                return self._recorded(captured, _JSON, _JSON_STREAM)
            use_counts, use_thoughts = self._json_counts(counts, thoughts)
            if captured.streamed:
                chunks = text_chunks(split_evenly(text, fragments), use_counts, thoughts=use_thoughts, template=_JSON_STREAM)
                return sse_reply([event(c) for c in chunks])
            usage = usage_metadata(use_counts, thoughts=use_thoughts)
            return body_reply(200, generate_content_response(_JSON, [candidate([{"text": text}], "STOP")], usage, model_version=None))

        self._plan_shaped(build)

    def stream_json(self, pieces: list[str] | None = None, counts: TokenCounts | None = None, *, thoughts: int | None = None, split_utf8: bool = False) -> None:
        """A structured-output answer streamed as these text pieces. Without ``pieces``:
        ``generate_content_json_schema_stream.sse`` verbatim."""
        if pieces is None:
            self.plan(sse_reply(recorded_events(fixture_bytes(_JSON_STREAM)), split_utf8=split_utf8))
            return
        use_counts, use_thoughts = self._json_counts(counts, thoughts)
        chunks = text_chunks(pieces, use_counts, thoughts=use_thoughts, template=_JSON_STREAM)
        self.plan(sse_reply([event(c) for c in chunks], split_utf8=split_utf8))

    @staticmethod
    def _json_counts(counts: TokenCounts | None, thoughts: int | None) -> tuple[TokenCounts, int]:
        if counts is None:
            return JSON_DEFAULT_COUNTS, JSON_DEFAULT_THOUGHTS if thoughts is None else thoughts
        return counts, thoughts or 0


def _page_offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode().removeprefix("offset:"))
    except ValueError:
        return 0
