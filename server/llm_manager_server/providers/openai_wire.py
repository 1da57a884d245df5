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
    Completion,
    FinishReason,
    Message,
    ModelCall,
    ResponseFormat,
    Role,
    StreamDelta,
    Usage,
)
from ..redaction import redact_and_cut

# Upstream error text is cut to this many characters (after redaction) before it reaches a
# status message; other upstream fields (codes, types, request ids) to the shorter bound.
MAX_UPSTREAM_MESSAGE = 300
MAX_UPSTREAM_FIELD = 100

_FINISH_REASONS = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "content_filter": FinishReason.CONTENT_FILTER,
    "tool_calls": FinishReason.OTHER,
    "function_call": FinishReason.OTHER,
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


def _wire_messages(call: ModelCall, *, reasoning: bool) -> list[dict[str, str]]:
    messages: tuple[Message, ...] = call.messages
    if call.sampling.response_format is ResponseFormat.JSON_OBJECT and not any("json" in m.content.lower() for m in messages):
        messages = (Message(Role.SYSTEM, JSON_INSTRUCTION), *messages)
    system_role = "developer" if reasoning else "system"
    return [{"role": system_role if m.role is Role.SYSTEM else m.role.value, "content": m.content} for m in messages]


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
    if sampling.response_format is ResponseFormat.JSON_OBJECT:
        body["response_format"] = {"type": "json_object"}
    if stream:
        body["stream"] = True
        if include_stream_usage:
            body["stream_options"] = {"include_usage": True}
    return body


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


def parse_usage(raw: object) -> Usage | None:
    """``usage`` as reported; ``prompt_tokens`` already includes the cached ones.
    (Decoded JSON: objects are dicts, checked as such, which is cheaper than ``Mapping``.)"""
    if not isinstance(raw, dict):
        return None
    prompt = _count(raw, "prompt_tokens")
    completion = _count(raw, "completion_tokens")
    details = raw.get("prompt_tokens_details")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=_count(raw, "total_tokens") or prompt + completion,
        cached_prompt_tokens=_count(details, "cached_tokens") if isinstance(details, dict) else 0,
    )


def parse_completion(body: Mapping[str, Any], requested_model: str) -> Completion:
    """A non-streamed ``chat.completion`` object as a :class:`Completion`."""
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
    return Completion(
        text=content if isinstance(content, str) else "",
        model=str(body.get("model") or requested_model),
        usage=parse_usage(body.get("usage")) or Usage(),
        finish_reason=finish,
    )


def parse_chunk(
    body: Mapping[str, Any], *, model: str | None = None, provider_label: str = "upstream", secrets: tuple[str, ...] = ()
) -> StreamDelta:
    """One ``chat.completion.chunk`` as a :class:`StreamDelta` (its model ``model`` when
    given, else the chunk's); an ``error`` object raises."""
    if isinstance(body.get("error"), dict):
        raise stream_error(body["error"], model=str(body.get("model") or ""), provider_label=provider_label, secrets=secrets)
    text = ""
    finish: FinishReason | None = None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = choice.get("delta")
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            text = delta["content"]
        if choice.get("finish_reason") is not None:
            finish = map_finish_reason(choice.get("finish_reason"))
    if model is None:
        reported = body.get("model")
        model = str(reported) if reported else None
    return StreamDelta(
        text=text,
        model=model,
        usage=parse_usage(body.get("usage")),
        finish_reason=finish,
    )


def _error_object(body_text: str) -> Mapping[str, Any]:
    """The error object of a reply body, uncut: what is shown of it is redacted, then cut."""
    try:
        parsed = json.loads(body_text)
    except ValueError:
        return {"message": body_text}
    error = parsed.get("error") if isinstance(parsed, Mapping) else None
    if isinstance(error, Mapping):
        return error
    if isinstance(error, str):
        return {"message": error}
    return parsed if isinstance(parsed, Mapping) else {"message": str(parsed)}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI) or ``retry-after`` seconds, if present and sane."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            continue  # an HTTP date: too rare from these APIs to be worth parsing
        if 0 <= value <= 3600:
            return value
    return None


def error_for_status(
    status: int,
    message: str,
    *,
    model: str,
    metadata: dict[str, str],
    headers: Mapping[str, str],
    violation: FieldViolation,
    auth_statuses: tuple[int, ...] = (401, 403),
) -> LLMError:
    """The error kind an HTTP status means, for every HTTP provider (after each has picked
    out what only its own error bodies say, such as a context overflow)."""
    if status in auth_statuses:
        # Our key, our account or our key's permissions: nothing the caller can fix.
        return LLMError(ErrorKind.AUTHENTICATION_FAILED, message, model=model, metadata=metadata, upstream_auth=True)
    if status == 429:
        return LLMError(
            ErrorKind.RATE_LIMIT_EXCEEDED, message, model=model, metadata=metadata, retry_after_s=retry_after_seconds(headers)
        )
    if status == 408:
        return LLMError(ErrorKind.TIMEOUT, message, model=model, metadata=metadata)
    if status == 404:
        # No such model (or a wrong base URL) at this provider: retrying cannot help, the
        # next candidate might.
        return LLMError(ErrorKind.CONFIGURATION_ERROR, message, model=model, metadata=metadata)
    if status == 409 or status >= 500:  # Anthropic's 529 overloaded_error included
        return LLMError(ErrorKind.MODEL_UNAVAILABLE, message, model=model, metadata=metadata)
    return LLMError(ErrorKind.INVALID_REQUEST, message, model=model, metadata=metadata, field_violations=(violation,))


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
        _error_object(body_text),
        headers,
        model=model,
        summary=f"{provider_label} model {model!r} returned HTTP {status}",
        secrets=secrets,
    )


def _map_error(
    status: int, error: Mapping[str, Any], headers: Mapping[str, str], *, model: str, summary: str, secrets: tuple[str, ...]
) -> LLMError:
    # Every string below comes from the upstream: redacted, then cut.
    upstream_message = redact_and_cut(error.get("message") or "", MAX_UPSTREAM_MESSAGE, *secrets)
    message = summary + (f": {upstream_message}" if upstream_message else "")
    metadata: dict[str, str] = {"upstream_status": str(status)}
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
    mapped = _map_error(
        status, error, {}, model=model, summary=f"{provider_label} model {model!r} sent an error mid-stream", secrets=secrets
    )
    # The HTTP status was 200; the one above is only inferred from the error's type.
    mapped.metadata.pop("upstream_status", None)
    mapped.metadata["upstream_error_type"] = redact_and_cut(error.get("type") or "unknown", MAX_UPSTREAM_FIELD, *secrets)
    return mapped
