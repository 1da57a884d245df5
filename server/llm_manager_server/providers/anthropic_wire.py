"""Pure mappings between the domain and Anthropic's Messages API wire format.

References: the Messages API (``POST /v1/messages``), "Streaming Messages" (the event
sequence ``message_start``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``,
``message_stop``, ``ping``, ``error``) and "Errors" (``{"type": "error", "error": {"type",
"message"}, "request_id"}``) in Anthropic's API documentation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..domain.errors import ErrorKind, FieldViolation, LLMError
from ..domain.types import Completion, FinishReason, ModelCall, ResponseFormat, Role, StreamDelta, Usage
from ..redaction import redact_and_cut
from .openai_wire import MAX_UPSTREAM_FIELD, MAX_UPSTREAM_MESSAGE, error_for_status

ANTHROPIC_VERSION = "2023-06-01"

# Anthropic accepts temperature 0..1; the service's API allows 0..2, so higher values are
# clamped rather than turned into a 400 that would stop the fallback chain.
MAX_TEMPERATURE = 1.0

# The Messages API has no JSON mode; the documented way is to instruct the model.
JSON_INSTRUCTION = "Respond with a single valid JSON object and nothing else."

_STOP_REASONS = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "refusal": FinishReason.CONTENT_FILTER,
    "tool_use": FinishReason.OTHER,
    "pause_turn": FinishReason.OTHER,
}

# The HTTP status each documented error type comes with; used for errors inside a stream,
# which arrive after the 200.
STATUS_BY_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def map_stop_reason(raw: object) -> FinishReason:
    if raw is None or raw == "":
        return FinishReason.UNSPECIFIED
    return _STOP_REASONS.get(str(raw), FinishReason.OTHER)


def messages_body(call: ModelCall, *, default_max_tokens: int, stream: bool) -> dict[str, Any]:
    """The JSON body of ``POST /v1/messages`` for ``call``.

    System messages become the top-level ``system``; the rest become content blocks, with
    consecutive turns of one role merged into one message (the API expects alternation).
    """
    system_parts = [m.content for m in call.messages if m.role is Role.SYSTEM]
    sampling = call.sampling
    if sampling.response_format is ResponseFormat.JSON_OBJECT:
        system_parts.append(JSON_INSTRUCTION)
    messages: list[dict[str, Any]] = []
    for message in call.messages:
        if message.role is Role.SYSTEM:
            continue
        block = {"type": "text", "text": message.content}
        if messages and messages[-1]["role"] == message.role.value:
            messages[-1]["content"].append(block)
        else:
            messages.append({"role": message.role.value, "content": [block]})
    body: dict[str, Any] = {
        "model": call.model,
        "max_tokens": sampling.max_tokens if sampling.max_tokens is not None else default_max_tokens,
        "messages": messages,
    }
    if system_parts:
        body["system"] = "\n\n".join(system_parts)
    if sampling.temperature is not None:
        body["temperature"] = min(sampling.temperature, MAX_TEMPERATURE)
    if sampling.top_p is not None:
        body["top_p"] = sampling.top_p
    if sampling.stop:
        body["stop_sequences"] = list(sampling.stop)
    if stream:
        body["stream"] = True
    return body


def _count(raw: Mapping[str, Any], key: str) -> int:
    value = raw.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


def parse_usage(raw: object) -> Usage | None:
    """Anthropic ``usage`` in the domain's terms.

    Anthropic's ``input_tokens`` counts only the uncached part of the prompt; the domain's
    ``prompt_tokens`` is the whole prompt (as OpenAI reports it), so the cache reads and
    writes the API reports are added back in.
    """
    if not isinstance(raw, Mapping):
        return None
    cache_read = _count(raw, "cache_read_input_tokens")
    cache_write = _count(raw, "cache_creation_input_tokens")
    prompt = _count(raw, "input_tokens") + cache_read + cache_write
    completion = _count(raw, "output_tokens")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cached_prompt_tokens=cache_read,
        cache_creation_tokens=cache_write,
    )


def _text_of(content: object) -> str:
    if not isinstance(content, list):
        return ""
    return "".join(
        block["text"] for block in content if isinstance(block, Mapping) and block.get("type") == "text" and isinstance(block.get("text"), str)
    )


def parse_message(body: Mapping[str, Any], requested_model: str) -> Completion:
    """A non-streamed ``message`` object as a :class:`Completion`."""
    if body.get("type") != "message":
        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"anthropic model {requested_model!r} sent an unexpected reply", model=requested_model)
    return Completion(
        text=_text_of(body.get("content")),
        model=str(body.get("model") or requested_model),
        usage=parse_usage(body.get("usage")) or Usage(),
        finish_reason=map_stop_reason(body.get("stop_reason")),
    )


@dataclass
class StreamState:
    """What a stream has told so far: ``message_delta`` usage is cumulative and partial, so it
    is merged over ``message_start``'s; the final delta is emitted on ``message_stop``."""

    requested_model: str
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    stop_reason: object = None
    finished: bool = False


def parse_stream_event(
    event_type: str, data: Mapping[str, Any], state: StreamState, *, secrets: tuple[str, ...] = ()
) -> StreamDelta | None:
    """One server-sent event as a :class:`StreamDelta` (or ``None`` for bookkeeping events).

    ``event_type`` is the SSE event name, falling back to the payload's ``type``. An
    ``error`` event raises; unknown events are ignored, as the versioning policy asks.
    """
    kind = event_type if event_type and event_type != "message" else str(data.get("type") or "")
    if kind == "message_start":
        message = data.get("message")
        if isinstance(message, Mapping):
            state.model = str(message.get("model") or "") or None
            if isinstance(message.get("usage"), Mapping):
                state.usage.update(message["usage"])
        return None
    if kind in ("content_block_start", "content_block_delta"):
        piece = data.get("content_block") if kind == "content_block_start" else data.get("delta")
        # Only text reaches callers; thinking, signatures and tool input are skipped.
        if isinstance(piece, Mapping) and piece.get("type") in ("text", "text_delta") and isinstance(piece.get("text"), str) and piece["text"]:
            return StreamDelta(text=piece["text"], model=state.model)
        return None
    if kind == "message_delta":
        delta = data.get("delta")
        if isinstance(delta, Mapping) and delta.get("stop_reason") is not None:
            state.stop_reason = delta["stop_reason"]
        if isinstance(data.get("usage"), Mapping):
            state.usage.update({key: value for key, value in data["usage"].items() if value is not None})
        return None
    if kind == "message_stop":
        state.finished = True
        return StreamDelta(model=state.model, usage=parse_usage(state.usage) or Usage(), finish_reason=map_stop_reason(state.stop_reason))
    if kind == "error":
        error = data.get("error")
        raise stream_error(error if isinstance(error, Mapping) else data, model=state.requested_model, secrets=secrets)
    return None  # ping, content_block_stop and event types added later


def parse_stream_data(event_type: str, data: str, state: StreamState, *, secrets: tuple[str, ...] = ()) -> StreamDelta | None:
    """Like :func:`parse_stream_event`, from the raw ``data`` text of an event."""
    try:
        payload = json.loads(data)
    except ValueError:
        if event_type == "error":  # an error whose body is not JSON is still an error
            raise stream_error({"type": "api_error", "message": data}, model=state.requested_model, secrets=secrets) from None
        raise LLMError(
            ErrorKind.MODEL_UNAVAILABLE, f"anthropic model {state.requested_model!r} sent a malformed stream event", model=state.requested_model
        ) from None
    if not isinstance(payload, Mapping):
        return None
    return parse_stream_event(event_type, payload, state, secrets=secrets)


# "prompt is too long: 208310 tokens > 200000 maximum" and "input length and `max_tokens`
# exceed context limit: 197626 + 8192 > 200000, decrease input length or `max_tokens`".
_PROMPT_TOO_LONG = re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum", re.IGNORECASE)
_INPUT_PLUS_MAX = re.compile(r"exceed context limit: (\d+) \+ (\d+) > (\d+)", re.IGNORECASE)


def context_overflow_metadata(message: str) -> dict[str, str] | None:
    """Token counts of a context-window error, or ``None`` if ``message`` is not one."""
    if match := _PROMPT_TOO_LONG.search(message):
        return {"prompt_tokens": match.group(1), "context_window": match.group(2)}
    if match := _INPUT_PLUS_MAX.search(message):
        return {"prompt_tokens": match.group(1), "max_tokens": match.group(2), "context_window": match.group(3)}
    if "prompt is too long" in message.lower():
        return {}
    return None


def _error_object(body_text: str) -> tuple[Mapping[str, Any], str | None]:
    """The ``error`` object and ``request_id`` of an error body (tolerating non-JSON)."""
    try:
        parsed = json.loads(body_text)
    except ValueError:
        return {"message": body_text}, None  # uncut: what is shown of it is redacted, then cut
    if not isinstance(parsed, Mapping):
        return {"message": str(parsed)}, None
    request_id = parsed.get("request_id")
    error = parsed.get("error")
    return (error if isinstance(error, Mapping) else parsed), (request_id if isinstance(request_id, str) else None)


def http_error(
    status: int, body_text: str, headers: Mapping[str, str], *, model: str, secrets: tuple[str, ...] = ()
) -> LLMError:
    """Maps an HTTP error reply of the Messages API to an :class:`LLMError`."""
    error, request_id = _error_object(body_text)
    return _map_error(
        status,
        error,
        headers,
        model=model,
        summary=f"anthropic model {model!r} returned HTTP {status}",
        request_id=request_id or headers.get("request-id"),
        secrets=secrets,
    )


def stream_error(error: Mapping[str, Any], *, model: str, secrets: tuple[str, ...] = ()) -> LLMError:
    """An ``error`` event inside a stream (after HTTP 200): never a silent end."""
    status = STATUS_BY_ERROR_TYPE.get(str(error.get("type")), 500)
    mapped = _map_error(status, error, {}, model=model, summary=f"anthropic model {model!r} sent an error mid-stream", request_id=None, secrets=secrets)
    mapped.metadata.pop("upstream_status", None)
    return mapped


def _map_error(
    status: int,
    error: Mapping[str, Any],
    headers: Mapping[str, str],
    *,
    model: str,
    summary: str,
    request_id: str | None,
    secrets: tuple[str, ...],
) -> LLMError:
    # Every string below comes from the upstream: redacted, then cut.
    upstream_message = redact_and_cut(error.get("message") or "", MAX_UPSTREAM_MESSAGE, *secrets)
    message = summary + (f": {upstream_message}" if upstream_message else "")
    error_type = redact_and_cut(error.get("type") or "", MAX_UPSTREAM_FIELD, *secrets)
    metadata = {"upstream_status": str(status)}
    if error_type:
        metadata["upstream_error_type"] = error_type
    if request_id:
        metadata["upstream_request_id"] = redact_and_cut(request_id, MAX_UPSTREAM_FIELD, *secrets)
    overflow = context_overflow_metadata(upstream_message) if status in (400, 413) else None
    if overflow is not None:
        return LLMError(ErrorKind.CONTEXT_TOO_LARGE, message, model=model, metadata={**metadata, **overflow})
    violation = FieldViolation("upstream", upstream_message or f"rejected with HTTP {status}")
    # 402: our account's billing.
    return error_for_status(
        status, message, model=model, metadata=metadata, headers=headers, violation=violation, auth_statuses=(401, 402, 403)
    )
