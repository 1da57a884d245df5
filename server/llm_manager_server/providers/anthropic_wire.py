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
from ..domain.types import Answer, FinishReason, Message, ModelCall, ResponseFormat, Role, StreamDelta, TextPart, ToolCall, ToolChoiceMode, ToolResult, Usage
from ..redaction import redact_and_cut
from .upstream_errors import MAX_UPSTREAM_FIELD, described, error_for_status, error_object, mid_stream, token_count

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
    "tool_use": FinishReason.TOOL_CALLS,
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


# Structured output by a forced tool (the documented way across Claude models): the schema is
# this tool's input schema, and its input is the answer. The name is reserved: a caller's tool
# may not use it.
RESPONSE_TOOL = "structured_response"


def _blocks(message: Message) -> list[dict[str, Any]]:
    """A message's parts as content blocks (text, tool_use, tool_result)."""
    blocks: list[dict[str, Any]] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            blocks.append({"type": "tool_use", "id": part.id, "name": part.name, "input": part.arguments})
        elif isinstance(part, ToolResult):
            blocks.append({"type": "tool_result", "tool_use_id": part.tool_call_id, "content": part.content})
    return blocks


def _tool_fields(call: ModelCall) -> dict[str, Any]:
    """``tools`` and ``tool_choice``; a JSON-schema answer adds the forced response tool."""
    tools = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in call.tools]
    choice = call.tool_choice
    wire_choice: dict[str, Any] | None = None
    if choice is not None:
        choices: dict[ToolChoiceMode, dict[str, Any]] = {
            ToolChoiceMode.AUTO: {"type": "auto"},
            ToolChoiceMode.NONE: {"type": "none"},
            ToolChoiceMode.REQUIRED: {"type": "any"},
            ToolChoiceMode.TOOL: {"type": "tool", "name": choice.name},
        }
        wire_choice = choices[choice.mode]
    schema = call.sampling.response_schema
    if call.sampling.response_format is ResponseFormat.JSON_SCHEMA and schema is not None:
        tools.append({"name": RESPONSE_TOOL, "description": "Give your final answer with this tool, as its input.", "input_schema": schema})
        # Alone, the answer must come through the response tool; with the caller's tools,
        # the model must call one of them or answer through it.
        wire_choice = {"type": "tool", "name": RESPONSE_TOOL} if not call.tools else {"type": "any"}
    fields: dict[str, Any] = {}
    if tools:
        fields["tools"] = tools
    if wire_choice is not None:
        fields["tool_choice"] = wire_choice
    return fields


def messages_body(call: ModelCall, *, default_max_tokens: int, stream: bool) -> dict[str, Any]:
    """The JSON body of ``POST /v1/messages`` for ``call``.

    System messages become the top-level ``system``; the rest become content blocks (tool
    calls ``tool_use``, tool results ``tool_result`` blocks of a user message), with
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
        role = "user" if message.role is Role.TOOL else message.role.value
        blocks = _blocks(message)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
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
    body.update(_tool_fields(call))
    if stream:
        body["stream"] = True
    return body


def parse_usage(raw: object) -> Usage | None:
    """Anthropic ``usage`` in the domain's terms.

    Anthropic's ``input_tokens`` counts only the uncached part of the prompt; the domain's
    ``prompt_tokens`` is the whole prompt (as OpenAI reports it), so the cache reads and
    writes the API reports are added back in.
    """
    if not isinstance(raw, Mapping):
        return None
    cache_read = token_count(raw, "cache_read_input_tokens")
    cache_write = token_count(raw, "cache_creation_input_tokens")
    prompt = token_count(raw, "input_tokens") + cache_read + cache_write
    completion = token_count(raw, "output_tokens")
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


def _tool_input(raw: object, name: str, model: str) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise LLMError(ErrorKind.INVALID_MODEL_OUTPUT, f"anthropic model {model!r} called tool {name!r} with an input that is not an object", model=model)
    return raw


def _answer(text: str, calls: list[ToolCall], *, model: str, usage: Usage, stop_reason: object) -> Answer:
    """The answer; a call of the response tool is the structured answer itself (as JSON text)."""
    finish = map_stop_reason(stop_reason)
    responses = [c for c in calls if c.name == RESPONSE_TOOL]
    if responses:
        text = json.dumps(responses[0].arguments, ensure_ascii=False)
        calls = [c for c in calls if c.name != RESPONSE_TOOL]
        if finish is FinishReason.TOOL_CALLS and not calls:
            finish = FinishReason.STOP
    return Answer(text=text, model=model, usage=usage, finish_reason=finish, tool_calls=tuple(calls))


def parse_message(body: Mapping[str, Any], requested_model: str) -> Answer:
    """A non-streamed ``message`` object as an :class:`Answer`."""
    if body.get("type") != "message":
        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"anthropic model {requested_model!r} sent an unexpected reply", model=requested_model)
    content = body.get("content")
    calls = [
        ToolCall(str(block.get("id") or ""), str(block.get("name") or ""), _tool_input(block.get("input"), str(block.get("name")), requested_model))
        for block in (content if isinstance(content, list) else [])
        if isinstance(block, Mapping) and block.get("type") == "tool_use"
    ]
    return _answer(
        _text_of(content),
        calls,
        model=str(body.get("model") or requested_model),
        usage=parse_usage(body.get("usage")) or Usage(),
        stop_reason=body.get("stop_reason"),
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
    text: list[str] = field(default_factory=list)
    # The tool_use block being streamed: [id, name, input JSON so far], by block index.
    pending: dict[int, list[str]] = field(default_factory=dict)
    calls: list[ToolCall] = field(default_factory=list)


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
        raw_index = data.get("index")
        index = raw_index if isinstance(raw_index, int) else 0
        if not isinstance(piece, Mapping):
            return None
        if piece.get("type") == "tool_use":
            # The input arrives as input_json_delta fragments; "input" here is {} or whole.
            initial = piece.get("input")
            state.pending[index] = [str(piece.get("id") or ""), str(piece.get("name") or ""), json.dumps(initial) if initial else ""]
            return None
        if piece.get("type") == "input_json_delta" and index in state.pending:
            state.pending[index][2] += str(piece.get("partial_json") or "")
            return None
        # Text reaches callers; thinking and signatures are skipped.
        if piece.get("type") in ("text", "text_delta") and isinstance(piece.get("text"), str) and piece["text"]:
            state.text.append(piece["text"])
            return StreamDelta(text=piece["text"], model=state.model)
        return None
    if kind == "content_block_stop":
        raw_index = data.get("index")
        index = raw_index if isinstance(raw_index, int) else 0
        if index not in state.pending:
            return None
        call_id, name, raw = state.pending.pop(index)
        try:
            arguments = json.loads(raw) if raw.strip() else {}
        except ValueError:
            arguments = None
        call = ToolCall(call_id, name, _tool_input(arguments, name, state.requested_model))
        state.calls.append(call)
        if name == RESPONSE_TOOL:
            # The structured answer, as the answer's text (sent whole: its input completed).
            return StreamDelta(text=json.dumps(call.arguments, ensure_ascii=False), model=state.model)
        return StreamDelta(model=state.model, tool_calls=(call,))
    if kind == "message_delta":
        delta = data.get("delta")
        if isinstance(delta, Mapping) and delta.get("stop_reason") is not None:
            state.stop_reason = delta["stop_reason"]
        if isinstance(data.get("usage"), Mapping):
            state.usage.update({key: value for key, value in data["usage"].items() if value is not None})
        return None
    if kind == "message_stop":
        state.finished = True
        model = state.model or state.requested_model
        answer = _answer("".join(state.text), state.calls, model=model, usage=parse_usage(state.usage) or Usage(), stop_reason=state.stop_reason)
        return StreamDelta(model=state.model, answer=answer)
    if kind == "error":
        error = data.get("error")
        raise stream_error(error if isinstance(error, Mapping) else data, model=state.requested_model, secrets=secrets)
    return None  # ping and event types added later


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


def http_error(
    status: int, body_text: str, headers: Mapping[str, str], *, model: str, secrets: tuple[str, ...] = ()
) -> LLMError:
    """Maps an HTTP error reply of the Messages API to an :class:`LLMError`."""
    error, body = error_object(body_text)
    request_id = body.get("request_id")
    return _map_error(
        status,
        error,
        headers,
        model=model,
        summary=f"anthropic model {model!r} returned HTTP {status}",
        request_id=request_id if isinstance(request_id, str) and request_id else headers.get("request-id"),
        secrets=secrets,
    )


def stream_error(error: Mapping[str, Any], *, model: str, secrets: tuple[str, ...] = ()) -> LLMError:
    """An ``error`` event inside a stream (after HTTP 200): never a silent end."""
    status = STATUS_BY_ERROR_TYPE.get(str(error.get("type")), 500)
    return mid_stream(
        _map_error(status, error, {}, model=model, summary=f"anthropic model {model!r} sent an error mid-stream", request_id=None, secrets=secrets)
    )


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
    upstream_message, message, metadata = described(status, error, summary, secrets)
    error_type = redact_and_cut(error.get("type") or "", MAX_UPSTREAM_FIELD, *secrets)
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
