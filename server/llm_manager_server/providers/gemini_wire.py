"""Pure mappings between the domain and Google's Gemini API (Generative Language API) wire format.

References: ``models.generateContent`` / ``models.streamGenerateContent`` (``GenerateContentRequest``,
``Content``, ``Part``, ``GenerationConfig``, ``Tool``, ``ToolConfig``, ``GenerateContentResponse``,
``Candidate``, ``FinishReason``, ``PromptFeedback``, ``UsageMetadata``) at
https://ai.google.dev/api/generate-content, "Function calling" and "Thought signatures" in the
Gemini API guides, and Google's error model (``{"error": {"code", "message", "status",
"details": [google.rpc.ErrorInfo, RetryInfo, BadRequest, ...]}}``,
https://cloud.google.com/apis/design/errors).

Choices made here:

- Function calls carry no ``id`` on the Gemini API: each answer numbers its calls ``call_0``,
  ``call_1``, ... in order. A tool result goes back as a ``functionResponse`` named after the
  call it answers, looked up by id in the history (the latest assistant call with that id).
- Thought signatures (``thoughtSignature``, an opaque blob a thinking model attaches to its
  first function call of a step) have no place in the domain's :class:`ToolCall`, so they are
  not kept. Gemini 3 models refuse a function call of the current turn sent back without one;
  for those, the first call of each model turn carries the documented sentinel
  :data:`SKIP_SIGNATURE` instead (the model then lacks its earlier reasoning context, which
  Google says may degrade the answer, but the call succeeds).
- Structured output: without tools, ``responseMimeType: application/json`` (plus
  ``responseJsonSchema`` for a schema). Gemini 2.x refuses a JSON mime type together with
  function declarations, so with tools a schema answer comes through a forced response
  function (:data:`RESPONSE_TOOL`, as for Anthropic) and a plain JSON answer is asked for by
  instruction.
- A prompt blocked by Google's filters (``promptFeedback.blockReason``, a 200 without
  candidates) is an answer with no text and finish reason ``CONTENT_FILTER``, like a
  response stopped by ``SAFETY``: the filter answered, so the fallback chain does not move
  on to ask another model the same blocked question.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..domain.errors import ErrorKind, FieldViolation, LLMError
from ..domain.types import (
    Answer,
    FinishReason,
    Message,
    ModelCall,
    ResponseFormat,
    Role,
    StreamDelta,
    TextPart,
    ToolCall,
    ToolChoiceMode,
    ToolResult,
    Usage,
)
from ..redaction import redact_and_cut
from .openai_wire import tool_arguments
from .upstream_errors import MAX_UPSTREAM_FIELD, MAX_UPSTREAM_MESSAGE, described, error_for_status, error_object, mid_stream, token_count

API_VERSION = "v1beta"
LABEL = "gemini"

# The documented stand-in for a thought signature the client does not have
# (https://ai.google.dev/gemini-api/docs/thought-signatures, "FAQs").
SKIP_SIGNATURE = "skip_thought_signature_validator"

# Structured output with tools: the schema is this function's parameters, its arguments the
# answer. The name is reserved: a caller's tool may not use it.
RESPONSE_TOOL = "structured_response"
RESPONSE_TOOL_DESCRIPTION = "Give your final answer with this function, as its arguments."

# JSON without a schema while tools are declared (no JSON mime type then).
JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else."

_FINISH_REASONS = {
    "STOP": FinishReason.STOP,
    "MAX_TOKENS": FinishReason.LENGTH,
    "SAFETY": FinishReason.CONTENT_FILTER,
    "RECITATION": FinishReason.CONTENT_FILTER,
    "BLOCKLIST": FinishReason.CONTENT_FILTER,
    "PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "SPII": FinishReason.CONTENT_FILTER,
    "IMAGE_SAFETY": FinishReason.CONTENT_FILTER,
    "IMAGE_PROHIBITED_CONTENT": FinishReason.CONTENT_FILTER,
    "IMAGE_RECITATION": FinishReason.CONTENT_FILTER,
    "FINISH_REASON_UNSPECIFIED": FinishReason.UNSPECIFIED,
    # LANGUAGE, OTHER, UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS, MISSING_THOUGHT_SIGNATURE,
    # MALFORMED_RESPONSE, IMAGE_OTHER, NO_IMAGE and reasons added later: OTHER.
}

# A function call the model could not produce (its arguments did not parse upstream): the
# model's invalid output, worth another attempt, never an answer.
_MALFORMED_CALL = "MALFORMED_FUNCTION_CALL"

# The HTTP status each canonical code comes with (google.rpc.Code); used for errors inside a
# stream, which arrive after the 200 and whose ``code`` is normally the HTTP status anyway.
STATUS_BY_CODE_NAME = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ABORTED": 409,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNKNOWN": 500,
    "DATA_LOSS": 500,
    "NOT_IMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}

# ErrorInfo reasons that mean our key is wrong (the API answers a wrong key with 400, not 401).
_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
_KEY_MESSAGE = re.compile(r"api key (?:not valid|expired|is invalid)", re.IGNORECASE)

_MODEL_VERSION = re.compile(r"^gemini-(\d+)(?:[.-]|$)", re.IGNORECASE)


def needs_thought_signatures(model: str) -> bool:
    """True unless ``model`` is a Gemini 1.x or 2.x model (which accept calls without
    signatures): Gemini 3 and later, and aliases such as ``gemini-flash-latest``, get the
    sentinel signature on the function calls sent back."""
    match = _MODEL_VERSION.match(model.removeprefix("models/"))
    return match is None or int(match.group(1)) >= 3


def map_finish_reason(raw: object) -> FinishReason:
    if raw is None or raw == "":
        return FinishReason.UNSPECIFIED
    return _FINISH_REASONS.get(str(raw), FinishReason.OTHER)


# --- the request ----------------------------------------------------------------------------


def tool_response_value(content: str) -> Any:
    """A tool result as ``functionResponse.response.result``: the JSON it is, or its text
    (never a NaN or infinity, which JSON cannot carry)."""
    try:
        return json.loads(content, parse_constant=_not_json, parse_float=_finite)
    except ValueError:
        return content


def _not_json(constant: str) -> Any:
    raise ValueError(constant)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _parts(message: Message, call_names: Mapping[str, str], *, sign: bool) -> list[dict[str, Any]]:
    """A message's parts on the wire: text, functionCall (assistant), functionResponse (tool)."""
    parts: list[dict[str, Any]] = []
    signed = False
    for part in message.parts:
        if isinstance(part, TextPart):
            if part.text:
                parts.append({"text": part.text})
        elif isinstance(part, ToolCall):
            wire: dict[str, Any] = {"functionCall": {"name": part.name, "args": part.arguments}}
            if sign and not signed:
                wire["thoughtSignature"] = SKIP_SIGNATURE
                signed = True
            parts.append(wire)
        elif isinstance(part, ToolResult):
            name = call_names.get(part.tool_call_id, part.tool_call_id)
            parts.append({"functionResponse": {"name": name, "response": {"result": tool_response_value(part.content)}}})
    return parts


def contents(call: ModelCall) -> list[dict[str, Any]]:
    """``contents``: user turns ``user``, assistant turns ``model``, tool results a ``user`` turn
    of ``functionResponse`` parts; consecutive turns of one role merged (the API expects
    alternation, and all responses to a step's parallel calls in one turn)."""
    sign = needs_thought_signatures(call.model)
    call_names: dict[str, str] = {}
    result: list[dict[str, Any]] = []
    for message in call.messages:
        if message.role is Role.SYSTEM:
            continue
        for tool_call in message.tool_calls:
            call_names[tool_call.id] = tool_call.name
        role = "model" if message.role is Role.ASSISTANT else "user"
        parts = _parts(message, call_names, sign=sign and message.role is Role.ASSISTANT)
        if not parts:
            continue  # the API refuses a content without parts
        if result and result[-1]["role"] == role:
            result[-1]["parts"].extend(parts)
        else:
            result.append({"role": role, "parts": parts})
    return result


def _json_mode(call: ModelCall) -> ResponseFormat:
    """The JSON mode actually asked for (a schema format without a schema is plain JSON)."""
    sampling = call.sampling
    if sampling.response_format is ResponseFormat.JSON_SCHEMA and sampling.response_schema is None:
        return ResponseFormat.JSON_OBJECT
    return sampling.response_format


def generation_config(call: ModelCall, *, default_max_tokens: int | None) -> dict[str, Any]:
    sampling = call.sampling
    config: dict[str, Any] = {}
    if sampling.temperature is not None:
        config["temperature"] = sampling.temperature
    if sampling.top_p is not None:
        config["topP"] = sampling.top_p
    max_tokens = sampling.max_tokens if sampling.max_tokens is not None else default_max_tokens
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    if sampling.stop:
        config["stopSequences"] = list(sampling.stop)
    if sampling.seed is not None:
        config["seed"] = sampling.seed
    mode = _json_mode(call)
    if not call.tools:  # with tools: see tool_fields
        if mode is not ResponseFormat.TEXT:
            config["responseMimeType"] = "application/json"
        if mode is ResponseFormat.JSON_SCHEMA:
            config["responseJsonSchema"] = sampling.response_schema
    return config


def tool_fields(call: ModelCall) -> dict[str, Any]:
    """``tools`` (one ``functionDeclarations`` tool) and ``toolConfig.functionCallingConfig``;
    a JSON-schema answer with tools adds the response function (see the module's notes)."""
    if not call.tools:
        return {}
    declarations: list[dict[str, Any]] = []
    for tool in call.tools:
        declaration: dict[str, Any] = {"name": tool.name}
        if tool.description:
            declaration["description"] = tool.description
        declaration["parametersJsonSchema"] = tool.parameters
        declarations.append(declaration)
    choice = call.tool_choice
    mode = choice.mode if choice is not None else None
    config: dict[str, Any] | None = None
    if mode is ToolChoiceMode.AUTO:
        config = {"mode": "AUTO"}
    elif mode is ToolChoiceMode.NONE:
        config = {"mode": "NONE"}
    elif mode is ToolChoiceMode.REQUIRED:
        config = {"mode": "ANY"}
    elif mode is ToolChoiceMode.TOOL and choice is not None and choice.name:
        config = {"mode": "ANY", "allowedFunctionNames": [choice.name]}
    if _json_mode(call) is ResponseFormat.JSON_SCHEMA and mode in (None, ToolChoiceMode.AUTO, ToolChoiceMode.NONE):
        # The answer must be a call: of a caller's tool, or (the final answer) of the
        # response function; with tool choice "none" only of the response function.
        declarations.append({"name": RESPONSE_TOOL, "description": RESPONSE_TOOL_DESCRIPTION, "parametersJsonSchema": call.sampling.response_schema})
        config = {"mode": "ANY", "allowedFunctionNames": [RESPONSE_TOOL]} if mode is ToolChoiceMode.NONE else {"mode": "ANY"}
    fields: dict[str, Any] = {"tools": [{"functionDeclarations": declarations}]}
    if config is not None:
        fields["toolConfig"] = {"functionCallingConfig": config}
    return fields


def generate_content_body(call: ModelCall, *, default_max_tokens: int | None = None) -> dict[str, Any]:
    """The JSON body of ``models/{model}:generateContent`` (and ``:streamGenerateContent``,
    the same body) for ``call``."""
    system = [m.content for m in call.messages if m.role is Role.SYSTEM and m.content]
    if call.tools and _json_mode(call) is ResponseFormat.JSON_OBJECT:
        system.append(JSON_INSTRUCTION)
    body: dict[str, Any] = {"contents": contents(call)}
    if system:
        body["systemInstruction"] = {"parts": [{"text": text} for text in system]}
    config = generation_config(call, default_max_tokens=default_max_tokens)
    if config:
        body["generationConfig"] = config
    body.update(tool_fields(call))
    return body


def model_path(model: str) -> str:
    """``models/{model}`` as the URL names it (a ``models/`` prefix tolerated)."""
    return "models/" + model.removeprefix("models/")


def generate_url(base_url: str, model: str, *, stream: bool) -> str:
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{base_url}/{API_VERSION}/{model_path(model)}:{method}"


# --- the reply ------------------------------------------------------------------------------


def parse_usage(raw: object) -> Usage | None:
    """``usageMetadata`` in the domain's terms: ``promptTokenCount`` already includes
    ``cachedContentTokenCount``; the completion is the visible output plus the thoughts
    (billed as output)."""
    if not isinstance(raw, Mapping):
        return None
    prompt = token_count(raw, "promptTokenCount")
    completion = token_count(raw, "candidatesTokenCount") + token_count(raw, "thoughtsTokenCount")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=token_count(raw, "totalTokenCount") or prompt + completion,
        cached_prompt_tokens=token_count(raw, "cachedContentTokenCount"),
    )


@dataclass
class StreamState:
    """What a reply has told so far. A non-streamed reply is one chunk; a stream's chunks each
    carry new parts and the *cumulative* usage (the last one counts); ``finishReason`` comes
    on the last candidate chunk, ``promptFeedback.blockReason`` instead of any candidate."""

    requested_model: str
    model: str | None = None
    usage: Usage | None = None
    finish: object = None
    block_reason: str | None = None
    finished: bool = False
    text: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    structured: str | None = None
    numbered: int = 0

    def take(self, chunk: Mapping[str, Any], *, secrets: tuple[str, ...] = ()) -> StreamDelta | None:
        """One ``GenerateContentResponse`` chunk: its news (text, whole function calls) or
        None; an ``error`` object raises."""
        error = chunk.get("error")
        if isinstance(error, Mapping):
            raise stream_error(error, model=self.requested_model, secrets=secrets)
        if isinstance(chunk.get("modelVersion"), str) and chunk["modelVersion"]:
            self.model = chunk["modelVersion"]
        self.usage = parse_usage(chunk.get("usageMetadata")) or self.usage
        feedback = chunk.get("promptFeedback")
        if isinstance(feedback, Mapping) and feedback.get("blockReason"):
            self.block_reason = str(feedback["blockReason"])
            self.finished = True
        candidates = chunk.get("candidates")
        if not (isinstance(candidates, list) and candidates and isinstance(candidates[0], Mapping)):
            return None
        candidate = candidates[0]
        content = candidate.get("content")
        raw_parts = content.get("parts") if isinstance(content, Mapping) else None
        visible: list[str] = []
        completed: list[ToolCall] = []
        for part in raw_parts if isinstance(raw_parts, list) else []:
            if not isinstance(part, Mapping):
                continue
            if isinstance(part.get("text"), str) and not part.get("thought"):  # thought summaries stay out
                if part["text"]:
                    visible.append(part["text"])
                    self.text.append(part["text"])
            elif isinstance(part.get("functionCall"), Mapping):
                call = self._call(part["functionCall"])
                if call.name == RESPONSE_TOOL:
                    # The structured answer, as the answer's text (whole: calls arrive whole).
                    self.structured = json.dumps(call.arguments, ensure_ascii=False)
                    visible.append(self.structured)
                else:
                    completed.append(call)
                    self.calls.append(call)
        if candidate.get("finishReason") is not None:
            self.finish = candidate["finishReason"]
            self.finished = True
            if self.finish == _MALFORMED_CALL:
                raise LLMError(
                    ErrorKind.INVALID_MODEL_OUTPUT,
                    f"{LABEL} model {self.requested_model!r} produced a malformed function call",
                    model=self.requested_model,
                    metadata={"upstream_finish_reason": _MALFORMED_CALL},
                )
        if visible or completed:
            return StreamDelta(text="".join(visible), model=self.model, tool_calls=tuple(completed))
        return None

    def _call(self, raw: Mapping[str, Any]) -> ToolCall:
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise LLMError(ErrorKind.INVALID_MODEL_OUTPUT, f"{LABEL} model {self.requested_model!r} sent a function call without a name", model=self.requested_model)
        args = raw.get("args")
        arguments = tool_arguments({} if args is None else args, name=name, model=self.requested_model)
        # Numbered over the whole answer, the response function included: stable and in order.
        self.numbered += 1
        return ToolCall(f"call_{self.numbered - 1}", name, arguments)

    def answer(self) -> Answer:
        model = self.model or self.requested_model
        usage = self.usage or Usage()
        if self.block_reason is not None and not self.text and not self.calls and self.structured is None:
            return Answer(text="", model=model, usage=usage, finish_reason=FinishReason.CONTENT_FILTER)
        finish = map_finish_reason(self.finish)
        if self.calls and finish in (FinishReason.STOP, FinishReason.UNSPECIFIED):
            finish = FinishReason.TOOL_CALLS  # Gemini says STOP after function calls
        text = self.structured if self.structured is not None else "".join(self.text)
        return Answer(text=text, model=model, usage=usage, finish_reason=finish, tool_calls=tuple(self.calls))


def parse_response(body: Mapping[str, Any], requested_model: str, *, secrets: tuple[str, ...] = ()) -> Answer:
    """A non-streamed ``GenerateContentResponse`` as an :class:`Answer`."""
    state = StreamState(requested_model=requested_model)
    state.take(body, secrets=secrets)
    if not state.finished and not isinstance(body.get("candidates"), list):
        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{LABEL} model {requested_model!r} sent a reply without candidates", model=requested_model)
    return state.answer()


def parse_stream_data(data: str, state: StreamState, *, secrets: tuple[str, ...] = ()) -> StreamDelta | None:
    """One server-sent event's ``data`` (a ``GenerateContentResponse`` chunk or an error)."""
    try:
        payload = json.loads(data)
    except ValueError:
        raise LLMError(
            ErrorKind.MODEL_UNAVAILABLE, f"{LABEL} model {state.requested_model!r} sent a malformed stream event", model=state.requested_model
        ) from None
    if not isinstance(payload, Mapping):
        return None
    return state.take(payload, secrets=secrets)


# --- errors ---------------------------------------------------------------------------------

# "The input token count (1200293) exceeds the maximum number of tokens allowed (1048576)."
_CONTEXT_OVERFLOW = re.compile(
    r"input token count(?: \((\d+)\))? exceeds the maximum number of tokens allowed(?: \((\d+)\))?", re.IGNORECASE
)
# google.protobuf.Duration in JSON: "7s", "1.500s".
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
MAX_RETRY_DELAY_S = 3600.0


def context_overflow_metadata(message: str) -> dict[str, str] | None:
    """Token counts of a context-window error, or ``None`` if ``message`` is not one."""
    match = _CONTEXT_OVERFLOW.search(message)
    if match is None:
        return None
    metadata: dict[str, str] = {}
    if match.group(1):
        metadata["prompt_tokens"] = match.group(1)
    if match.group(2):
        metadata["context_window"] = match.group(2)
    return metadata


def _details(error: Mapping[str, Any], type_suffix: str) -> list[Mapping[str, Any]]:
    details = error.get("details")
    if not isinstance(details, list):
        return []
    return [d for d in details if isinstance(d, Mapping) and str(d.get("@type", "")).endswith(type_suffix)]


def retry_delay_seconds(error: Mapping[str, Any]) -> float | None:
    """``RetryInfo.retryDelay`` of an error's details, if present and sane."""
    for detail in _details(error, "google.rpc.RetryInfo"):
        raw = detail.get("retryDelay")
        if isinstance(raw, str) and (match := _DURATION.match(raw)):
            value = float(match.group(1))
            if 0 <= value <= MAX_RETRY_DELAY_S:
                return value
        elif isinstance(raw, Mapping):  # the proto form {"seconds": 7, "nanos": 0}
            seconds, nanos = raw.get("seconds", 0), raw.get("nanos", 0)
            try:
                value = float(seconds) + float(nanos) / 1e9
            except (TypeError, ValueError):
                continue
            if 0 <= value <= MAX_RETRY_DELAY_S:
                return value
    return None


def error_reason(error: Mapping[str, Any]) -> str | None:
    """The ``ErrorInfo.reason`` of an error's details (unredacted: compare, never show)."""
    for detail in _details(error, "google.rpc.ErrorInfo"):
        if isinstance(detail.get("reason"), str):
            return str(detail["reason"])
    return None


def http_error(status: int, body_text: str, headers: Mapping[str, str], *, model: str, secrets: tuple[str, ...] = ()) -> LLMError:
    """Maps an HTTP error reply of the Gemini API to an :class:`LLMError`."""
    return _map_error(status, error_object(body_text)[0], headers, model=model, summary=f"{LABEL} model {model!r} returned HTTP {status}", secrets=secrets)


def stream_error(error: Mapping[str, Any], *, model: str, secrets: tuple[str, ...] = ()) -> LLMError:
    """An ``{"error": {...}}`` chunk inside a stream (after HTTP 200): never a silent end."""
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else STATUS_BY_CODE_NAME.get(str(error.get("status")), 500)
    return mid_stream(_map_error(status, error, {}, model=model, summary=f"{LABEL} model {model!r} sent an error mid-stream", secrets=secrets))


def _map_error(status: int, error: Mapping[str, Any], headers: Mapping[str, str], *, model: str, summary: str, secrets: tuple[str, ...]) -> LLMError:
    # Every string below comes from the upstream: redacted, then cut.
    upstream_message, message, metadata = described(status, error, summary, secrets)
    code_name = error.get("status")
    if isinstance(code_name, str) and code_name:
        metadata["upstream_error_type"] = redact_and_cut(code_name, MAX_UPSTREAM_FIELD, *secrets)
    reason = error_reason(error)
    if reason:
        metadata["upstream_reason"] = redact_and_cut(reason, MAX_UPSTREAM_FIELD, *secrets)
    if status in (400, 401, 403) and (reason in _KEY_REASONS or _KEY_MESSAGE.search(upstream_message)):
        # A wrong or expired key is a 400 INVALID_ARGUMENT on this API.
        return LLMError(ErrorKind.AUTHENTICATION_FAILED, message, model=model, metadata=metadata, upstream_auth=True)
    overflow = context_overflow_metadata(upstream_message) if status in (400, 413) else None
    if overflow is not None:
        return LLMError(ErrorKind.CONTEXT_TOO_LARGE, message, model=model, metadata={**metadata, **overflow})
    if status == 400 and code_name == "FAILED_PRECONDITION":
        # E.g. "User location is not supported for the API use.": our account's setup, not
        # the request; another provider may well answer.
        return LLMError(ErrorKind.CONFIGURATION_ERROR, message, model=model, metadata=metadata)
    violation = _violation(error, upstream_message or f"rejected with HTTP {status}", secrets)
    mapped = error_for_status(status, message, model=model, metadata=metadata, headers=headers, violation=violation)
    if mapped.kind is ErrorKind.RATE_LIMIT_EXCEEDED:
        delay = retry_delay_seconds(error)
        if delay is not None:
            mapped.retry_after_s = delay  # Google sends the delay only in the body
    return mapped


def _violation(error: Mapping[str, Any], fallback: str, secrets: tuple[str, ...]) -> FieldViolation:
    """The first ``BadRequest`` field violation (its field under ``upstream.``), else the message."""
    for detail in _details(error, "google.rpc.BadRequest"):
        violations = detail.get("fieldViolations")
        first = violations[0] if isinstance(violations, list) and violations and isinstance(violations[0], Mapping) else None
        if first is None:
            continue
        where = redact_and_cut(first.get("field") or "", MAX_UPSTREAM_FIELD, *secrets)
        description = redact_and_cut(first.get("description") or "", MAX_UPSTREAM_MESSAGE, *secrets)
        return FieldViolation(f"upstream.{where}" if where else "upstream", description or fallback)
    return FieldViolation("upstream", fallback)
