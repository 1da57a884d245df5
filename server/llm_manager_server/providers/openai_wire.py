"""Pure mappings between the domain and the OpenAI Chat Completions wire format.

Shared by every OpenAI-compatible backend: OpenAI itself, LM Studio, llama.cpp server,
Ollama's ``/v1``, vLLM, and the in-process llama.cpp engine (which emits the same dicts).
Reference: the ``createChatCompletion`` operation and ``Error`` schema of OpenAI's OpenAPI
description (github.com/openai/openai-openapi).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
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
from .upstream_errors import MAX_UPSTREAM_FIELD, described, error_for_status, error_object, mid_stream, token_count

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
}

# OpenAI's reasoning models (o-series, gpt-5 family) reject ``max_tokens`` and (some of them)
# ``temperature``, ``top_p`` and ``stop``, and take system instructions as ``developer``. The
# gpt-5 chat variants accept both forms, so treating the whole family alike only drops
# sampling knobs there rather than risking a 400 elsewhere.
_REASONING_PREFIXES = ("o1", "o3", "o4", "gpt-5")

# OpenAI rejects json_object mode unless a message mentions JSON; this instruction is added
# when none does, so a caller asking for JSON never gets a 400 for it.
JSON_INSTRUCTION = "Respond with a single valid JSON object."


def is_reasoning_model(model: str) -> bool:
    return model.lower().startswith(_REASONING_PREFIXES)


def map_finish_reason(raw: object) -> FinishReason:
    if raw is None or raw == "":
        return FinishReason.UNSPECIFIED
    return _FINISH_REASONS.get(str(raw), FinishReason.OTHER)


def _wire_message(message: Message, system_role: str) -> dict[str, Any]:
    parts = message.parts
    if len(parts) == 1 and isinstance(parts[0], TextPart):  # the common case: one text part
        return {"role": system_role if message.role is Role.SYSTEM else message.role.value, "content": parts[0].text}
    if message.role is Role.TOOL:
        result = message.tool_result
        return {"role": "tool", "tool_call_id": result.tool_call_id if result else "", "content": message.content}
    wire: dict[str, Any] = {"role": system_role if message.role is Role.SYSTEM else message.role.value, "content": message.content or None}
    if message.tool_calls:
        wire["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in message.tool_calls
        ]
    return wire


def _wire_messages(call: ModelCall, *, reasoning: bool) -> list[dict[str, Any]]:
    messages: tuple[Message, ...] = call.messages
    if call.sampling.response_format is ResponseFormat.JSON_OBJECT and not any("json" in m.content.lower() for m in messages):
        messages = (Message.of(Role.SYSTEM, JSON_INSTRUCTION), *messages)
    system_role = "developer" if reasoning else "system"
    return [_wire_message(m, system_role) for m in messages]


def tools_body(call: ModelCall) -> dict[str, Any]:
    """``tools`` and ``tool_choice`` of a chat completion request (empty without tools)."""
    if not call.tools:
        return {}
    body: dict[str, Any] = {
        "tools": [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}} for t in call.tools
        ]
    }
    choice = call.tool_choice
    if choice is not None:
        if choice.mode is ToolChoiceMode.TOOL:
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            body["tool_choice"] = choice.mode.value  # "auto", "none", "required"
    return body


# The name a JSON-schema answer's schema goes by upstream (OpenAI requires one).
SCHEMA_NAME = "response"


def response_format_body(call: ModelCall) -> dict[str, Any] | None:
    sampling = call.sampling
    if sampling.response_format is ResponseFormat.JSON_OBJECT:
        return {"type": "json_object"}
    if sampling.response_format is ResponseFormat.JSON_SCHEMA and sampling.response_schema is not None:
        # Not "strict": OpenAI's strict mode refuses schemas with optional properties; the
        # server validates every answer against the caller's schema itself.
        return {"type": "json_schema", "json_schema": {"name": SCHEMA_NAME, "schema": sampling.response_schema}}
    return None


def chat_body(call: ModelCall, *, stream: bool, include_stream_usage: bool = True) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` for ``call``."""
    reasoning = is_reasoning_model(call.model)
    body: dict[str, Any] = {"model": call.model, "messages": _wire_messages(call, reasoning=reasoning)}
    sampling = call.sampling
    if sampling.max_tokens is not None:
        # max_tokens is deprecated and refused by reasoning models; older OpenAI-compatible
        # servers know only max_tokens, so it stays for everything else.
        body["max_completion_tokens" if reasoning else "max_tokens"] = sampling.max_tokens
    if not reasoning:
        if sampling.temperature is not None:
            body["temperature"] = sampling.temperature
        if sampling.top_p is not None:
            body["top_p"] = sampling.top_p
        if sampling.stop:
            body["stop"] = list(sampling.stop)
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    response_format = response_format_body(call)
    if response_format is not None:
        body["response_format"] = response_format
    if call.tools:
        body.update(tools_body(call))
    if stream:
        body["stream"] = True
        if include_stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def parse_usage(raw: object) -> Usage | None:
    """``usage`` as reported; ``prompt_tokens`` already includes the cached ones.
    (Decoded JSON: objects are dicts, checked as such, which is cheaper than ``Mapping``.)"""
    if not isinstance(raw, dict):
        return None
    prompt = token_count(raw, "prompt_tokens")
    completion = token_count(raw, "completion_tokens")
    details = raw.get("prompt_tokens_details")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=token_count(raw, "total_tokens") or prompt + completion,
        cached_prompt_tokens=token_count(details, "cached_tokens") if isinstance(details, dict) else 0,
    )


def tool_arguments(raw: object, *, name: str, model: str) -> dict[str, Any]:
    """A tool call's arguments: a JSON object, given as JSON text (OpenAI) or already decoded.
    Anything else is the model's invalid output (a failed attempt)."""
    try:
        if isinstance(raw, str):
            value = json.loads(raw) if raw.strip() else {}  # "" : a call without arguments
        else:
            value = raw
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise LLMError(
            ErrorKind.INVALID_MODEL_OUTPUT, f"model {model!r} called tool {name!r} with arguments that are not a JSON object", model=model,
            metadata={"tool": name},
        )
    return value


def parse_tool_calls(raw: object, model: str) -> tuple[ToolCall, ...]:
    """``message.tool_calls`` of a chat completion."""
    if not isinstance(raw, list):
        return ()
    calls: list[ToolCall] = []
    for index, item in enumerate(raw):
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise LLMError(ErrorKind.INVALID_MODEL_OUTPUT, f"model {model!r} sent a malformed tool call", model=model)
        name = function["name"]
        call_id = str(item.get("id") or f"call_{index}")
        calls.append(ToolCall(call_id, name, tool_arguments(function.get("arguments"), name=name, model=model)))
    return tuple(calls)


def parse_completion(body: Mapping[str, Any], requested_model: str) -> Answer:
    """A non-streamed ``chat.completion`` object as an :class:`Answer`."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], Mapping):
        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, "model reply had no choices", model=requested_model)
    choice = choices[0]
    message = choice.get("message")
    message = message if isinstance(message, Mapping) else {}
    content = message.get("content")
    finish = map_finish_reason(choice.get("finish_reason"))
    refusal = message.get("refusal")
    if not isinstance(content, str) and isinstance(refusal, str) and refusal:
        # A refusal replaces the content; callers see it as text stopped by the content filter.
        content, finish = refusal, FinishReason.CONTENT_FILTER
    tool_calls = parse_tool_calls(message.get("tool_calls"), requested_model)
    if tool_calls and finish is FinishReason.STOP:
        finish = FinishReason.TOOL_CALLS  # some servers say "stop" after a tool call
    return Answer(
        text=content if isinstance(content, str) else "",
        model=str(body.get("model") or requested_model),
        usage=parse_usage(body.get("usage")) or Usage(),
        finish_reason=finish,
        tool_calls=tool_calls,
    )


class ChunkFold:
    """One call's ``chat.completion.chunk`` objects, folded as they come: text deltas go out
    at once; tool-call fragments (``delta.tool_calls`` by ``index``: the first names the call,
    later ones append to its JSON arguments) are assembled, and each call goes out once,
    complete, when a later call starts or the choice finishes. ``answer()`` is the whole answer.

    Shared by every OpenAI-compatible backend, HTTP or in-process. ``model`` (when given)
    names the answer, else the chunks' own ``model``."""

    def __init__(self, requested_model: str, *, model: str | None = None, provider_label: str = "upstream", secrets: tuple[str, ...] = ()) -> None:
        self._requested = requested_model
        self._name = model
        self._label = provider_label
        self._secrets = secrets
        self.model: str | None = model
        self.usage: Usage | None = None
        self.finish: FinishReason | None = None
        self._text: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
        self._sent: list[ToolCall] = []

    def take(self, chunk: dict[str, Any]) -> StreamDelta | None:
        """The chunk's news (text, completed tool calls), or None; an ``error`` raises."""
        if isinstance(chunk.get("error"), dict):
            raise stream_error(chunk["error"], model=self._requested, provider_label=self._label, secrets=self._secrets)
        if self._name is None and chunk.get("model"):
            self.model = str(chunk["model"])
        usage = chunk.get("usage")
        if usage is not None:
            self.usage = parse_usage(usage) or self.usage
        choices = chunk.get("choices")
        if not (isinstance(choices, list) and choices and isinstance(choices[0], dict)):
            return None
        choice = choices[0]
        delta = choice.get("delta")
        text = ""
        completed: tuple[ToolCall, ...] = ()
        if isinstance(delta, dict):
            content = delta.get("content")
            if isinstance(content, str) and content:
                text = content
                self._text.append(content)
            if isinstance(delta.get("tool_calls"), list):
                completed = self._fragments(delta["tool_calls"])
        if choice.get("finish_reason") is not None:
            self.finish = map_finish_reason(choice["finish_reason"])
            completed += self._complete(set(self._calls))
        if text or completed:
            return StreamDelta(text=text, model=self.model, tool_calls=completed)
        return None

    def _fragments(self, fragments: list[Any]) -> tuple[ToolCall, ...]:
        completed: tuple[ToolCall, ...] = ()
        for fragment in fragments:
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index", 0)
            index = index if isinstance(index, int) else 0
            if index not in self._calls:
                # A new call begins: every earlier one is complete (OpenAI and llama.cpp
                # send a call's fragments before the next call's).
                completed += self._complete({i for i in self._calls if i < index})
                self._calls[index] = ["", "", ""]
            pending = self._calls[index]
            function = fragment.get("function")
            if fragment.get("id"):
                pending[0] = str(fragment["id"])
            if isinstance(function, dict):
                if isinstance(function.get("name"), str) and function["name"]:
                    pending[1] = function["name"]
                if isinstance(function.get("arguments"), str):
                    pending[2] += function["arguments"]
        return completed

    def _complete(self, indices: set[int]) -> tuple[ToolCall, ...]:
        calls = []
        for index in sorted(indices):
            call_id, name, arguments = self._calls.pop(index)
            if not name:
                raise LLMError(ErrorKind.INVALID_MODEL_OUTPUT, f"model {self._requested!r} sent a tool call without a name", model=self._requested)
            call = ToolCall(call_id or f"call_{len(self._sent)}", name, tool_arguments(arguments, name=name, model=self._requested))
            self._sent.append(call)
            calls.append(call)
        return tuple(calls)

    def answer(self) -> Answer:
        """The complete answer; a fold that never saw its choice finish was cut (raises
        the caller's cut-stream error instead, see the providers)."""
        finish = self.finish or FinishReason.UNSPECIFIED
        if self._sent and finish is FinishReason.STOP:
            finish = FinishReason.TOOL_CALLS
        return Answer(
            text="".join(self._text), model=self.model or self._requested, usage=self.usage or Usage(), finish_reason=finish, tool_calls=tuple(self._sent)
        )


# "This model's maximum context length is 8192 tokens. However, your messages resulted in
# 8227 tokens." / "... However, you requested 4972 tokens (3222 in the messages, 1750 in the
# completion)." Newer wordings without numbers simply yield no counts.
_CONTEXT_LIMIT = re.compile(r"maximum context length is (\d+) tokens", re.IGNORECASE)
_MESSAGES_RESULTED = re.compile(r"messages resulted in (\d+) tokens", re.IGNORECASE)
_REQUESTED = re.compile(r"you requested (\d+) tokens(?: \((\d+) in the messages, (\d+) in the completion\))?", re.IGNORECASE)


def context_overflow_metadata(message: str) -> dict[str, str]:
    """Token counts named in an OpenAI ``context_length_exceeded`` message."""
    metadata: dict[str, str] = {}
    if limit := _CONTEXT_LIMIT.search(message):
        metadata["context_window"] = limit.group(1)
    if resulted := _MESSAGES_RESULTED.search(message):
        metadata["prompt_tokens"] = resulted.group(1)
    if requested := _REQUESTED.search(message):
        metadata["requested_tokens"] = requested.group(1)
        if requested.group(2):
            metadata["prompt_tokens"] = requested.group(2)
            metadata["max_tokens"] = requested.group(3)
    return metadata


def _is_context_overflow(error: Mapping[str, Any], lowered_message: str) -> bool:
    return (
        error.get("code") == "context_length_exceeded"
        or error.get("type") == "exceed_context_size_error"  # llama.cpp server
        or "maximum context length" in lowered_message
        or "context window" in lowered_message
        or "too large to process" in lowered_message  # llama.cpp: an embedding input beyond its batch
    )


def http_error(
    status: int,
    body_text: str,
    headers: Mapping[str, str],
    *,
    model: str,
    provider_label: str,
    secrets: tuple[str, ...] = (),
) -> LLMError:
    """Maps an HTTP error reply of an OpenAI-compatible API to an :class:`LLMError`."""
    return _map_error(
        status,
        error_object(body_text)[0],
        headers,
        model=model,
        summary=f"{provider_label} model {model!r} returned HTTP {status}",
        secrets=secrets,
    )


def _map_error(
    status: int, error: Mapping[str, Any], headers: Mapping[str, str], *, model: str, summary: str, secrets: tuple[str, ...]
) -> LLMError:
    # Every string below comes from the upstream: redacted, then cut.
    upstream_message, message, metadata = described(status, error, summary, secrets)
    if error.get("code"):
        metadata["upstream_code"] = redact_and_cut(error["code"], MAX_UPSTREAM_FIELD, *secrets)
    request_id = headers.get("x-request-id")
    if request_id:
        metadata["upstream_request_id"] = redact_and_cut(request_id, MAX_UPSTREAM_FIELD, *secrets)
    if _is_context_overflow(error, upstream_message.lower()):
        metadata.update(context_overflow_metadata(upstream_message))
        # llama.cpp server reports n_prompt_tokens and n_ctx as fields.
        if isinstance(error.get("n_prompt_tokens"), int):
            metadata["prompt_tokens"] = str(error["n_prompt_tokens"])
        if isinstance(error.get("n_ctx"), int):
            metadata["context_window"] = str(error["n_ctx"])
        return LLMError(ErrorKind.CONTEXT_TOO_LARGE, message, model=model, metadata=metadata)
    param = redact_and_cut(error.get("param") or "", MAX_UPSTREAM_FIELD, *secrets) if isinstance(error.get("param"), str) else ""
    violation = FieldViolation(f"upstream.{param}" if param else "upstream", upstream_message or f"rejected with HTTP {status}")
    return error_for_status(status, message, model=model, metadata=metadata, headers=headers, violation=violation)


# An error object inside a stream has no HTTP status of its own; its type tells which it
# would have been (OpenAI's error types, plus llama.cpp's integer ``code``).
_STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "requests": 429,
    "tokens": 429,
    "insufficient_quota": 429,
    "server_error": 500,
}


def stream_error(
    error: Mapping[str, Any], *, model: str, provider_label: str = "upstream", secrets: tuple[str, ...] = ()
) -> LLMError:
    """An ``error`` object received inside a stream (after HTTP 200): never a silent end."""
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else _STATUS_BY_ERROR_TYPE.get(str(error.get("type")), 500)
    mapped = mid_stream(
        _map_error(status, error, {}, model=model, summary=f"{provider_label} model {model!r} sent an error mid-stream", secrets=secrets)
    )
    mapped.metadata["upstream_error_type"] = redact_and_cut(error.get("type") or "unknown", MAX_UPSTREAM_FIELD, *secrets)
    return mapped
