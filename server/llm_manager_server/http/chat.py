"""OpenAI Chat Completions JSON <-> the domain (pure functions).

``generation_request`` reads a ``POST /v1/chat/completions`` body into the same
:class:`GenerationRequest` the gRPC servicer builds, checked by the same rules
(``domain.validation``); a bad body raises INVALID_REQUEST listing every bad field, named as in
OpenAI's JSON (``messages[2].tool_call_id``, ``max_tokens``). ``completion`` and the chunk
builders write an :class:`Answer` back in OpenAI's shapes.

``model`` names a model to pin (any name the gRPC ``preferences.model`` takes), or is
``"auto"`` to let the router choose by task type and strategy. Routing is set by the
``llm_manager`` extension object (``{"task_type": "sql_generation", "strategy": "cost",
"no_cache": true, "no_store": true}``) or the ``x-llm-task`` header; the reply adds an
``llm_manager`` object (cost, cache hit, model chain, ...), which the SDKs keep as an extra field.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..domain.errors import FieldViolation, invalid_request
from ..domain.types import (
    Answer,
    CallMetadata,
    FinishReason,
    GenerationRequest,
    JsonObject,
    Message,
    Part,
    ResponseFormat,
    Role,
    RoutingStrategy,
    SamplingOptions,
    TaskType,
    TextPart,
    Tool,
    ToolCall,
    ToolChoice,
    ToolChoiceMode,
    ToolResult,
    Usage,
)
from ..domain.validation import ToolCallLedger, check_answerable, check_chosen_tool, check_request_size, check_sampling, check_tools

# The model name that asks for routing instead of pinning a model.
AUTO_MODEL = "auto"
EXTENSION = "llm_manager"
TASK_HEADER = "x-llm-task"

_ROLES = {"system": Role.SYSTEM, "developer": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT, "tool": Role.TOOL}
_TOOL_CHOICE_MODES = {"auto": ToolChoiceMode.AUTO, "none": ToolChoiceMode.NONE, "required": ToolChoiceMode.REQUIRED}
_FINISH = {
    FinishReason.STOP: "stop",
    FinishReason.LENGTH: "length",
    FinishReason.CONTENT_FILTER: "content_filter",
    FinishReason.TOOL_CALLS: "tool_calls",
    # OpenAI has no word for these; "stop" is what its SDKs expect of a finished answer.
    FinishReason.OTHER: "stop",
    FinishReason.UNSPECIFIED: "stop",
}
# OpenAI's field names for the sampling options (the rules use the domain's).
_SAMPLING_FIELDS = {"response_schema": "response_format.json_schema.schema"}
# The ``llm_manager`` keys each route reads (embeddings are not routed by task or strategy).
CHAT_EXTENSION_KEYS = frozenset({"task_type", "strategy", "no_cache", "no_store"})
EMBEDDINGS_EXTENSION_KEYS = frozenset({"no_cache", "no_store"})


def _sampling_field(name: str) -> str:
    return _SAMPLING_FIELDS.get(name, name)


class _Reader:
    """Typed reads of a JSON object's fields, each bad one appended as a violation. A field
    that is absent (or null) reads as ``None`` (or empty), never as a violation."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations

    def bad(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def _typed(self, value: Any, field: str, types: type | tuple[type, ...], what: str) -> Any:
        """``value`` if it is one of ``types`` (a JSON boolean is never a number), else None
        with the violation "must be <what>"."""
        if value is None:
            return None
        if (isinstance(value, bool) and types is not bool) or not isinstance(value, types):
            self.bad(field, f"must be {what}, got {_json_type(value)}")
            return None
        return value

    def string(self, value: Any, field: str, *, required: bool = False) -> str | None:
        if value is None and required:
            self.bad(field, "is required")
        result: str | None = self._typed(value, field, str, "a string")
        return result

    def number(self, value: Any, field: str) -> float | None:
        result = self._typed(value, field, (int, float), "a number")
        return None if result is None else float(result)

    def integer(self, value: Any, field: str) -> int | None:
        result: int | None = self._typed(value, field, int, "an integer")
        return result

    def boolean(self, value: Any, field: str) -> bool:
        return self._typed(value, field, bool, "true or false") is True

    def object(self, value: Any, field: str) -> Mapping[str, Any] | None:
        result: Mapping[str, Any] | None = self._typed(value, field, dict, "an object")
        return result

    def array(self, value: Any, field: str) -> Sequence[Any]:
        result: Sequence[Any] | None = self._typed(value, field, list, "an array")
        return result or ()

    def objects(self, value: Any, field: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
        """(``field[i]``, item) for each item of an array of objects (the others are violations)."""
        for index, item in enumerate(self.array(value, field)):
            where = f"{field}[{index}]"
            found = self.object(item, where)
            if found is not None:
                yield where, found


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _content(reader: _Reader, value: Any, field: str) -> str:
    """A message's content: a string, or an array of text parts (joined); null is empty."""
    if value is None or isinstance(value, str):
        return value or ""
    texts: list[str] = []
    for where, part_object in reader.objects(value, field):
        if part_object.get("type") != "text":
            reader.bad(f"{where}.type", f"only text parts are supported, got {str(part_object.get('type'))[:32]!r}")
            continue
        text = reader.string(part_object.get("text"), f"{where}.text", required=True)
        texts.append(text or "")
    return "".join(texts)


def _tool_calls(reader: _Reader, value: Any, field: str) -> list[ToolCall]:
    calls: list[ToolCall] = []
    for where, call in reader.objects(value, field):
        if call.get("type", "function") != "function":
            reader.bad(f"{where}.type", "must be 'function'")
        function = reader.object(call.get("function"), f"{where}.function") or {}
        name = reader.string(function.get("name"), f"{where}.function.name", required=True) or ""
        arguments_text = reader.string(function.get("arguments"), f"{where}.function.arguments") or "{}"
        try:
            arguments = json.loads(arguments_text)
        except ValueError:
            reader.bad(f"{where}.function.arguments", "must be a JSON object, as a string")
            continue
        if not isinstance(arguments, dict):
            reader.bad(f"{where}.function.arguments", "must be a JSON object, as a string")
            continue
        calls.append(ToolCall(reader.string(call.get("id"), f"{where}.id", required=True) or "", name, arguments))
    return calls


def messages_from_json(reader: _Reader, value: Any) -> list[Message]:
    """``messages``: roles (``developer`` is a system message), text content, assistant tool
    calls, and tool messages each answering an earlier call (``domain.validation``)."""
    result: list[Message] = []
    ledger = ToolCallLedger()
    if value is None or (isinstance(value, list) and not value):
        reader.bad("messages", "must hold at least one message")
    for where, message in reader.objects(value, "messages"):
        role_name = message.get("role")
        if role_name not in _ROLES:
            reader.bad(f"{where}.role", "must be system, developer, user, assistant or tool")
            continue
        role = _ROLES[role_name]
        content = _content(reader, message.get("content"), f"{where}.content")
        if message.get("tool_calls") and role is not Role.ASSISTANT:
            reader.bad(f"{where}.tool_calls", "only assistant messages carry tool calls")
            continue
        if role is Role.TOOL:
            tool_call_id = reader.string(message.get("tool_call_id"), f"{where}.tool_call_id", required=True)
            if not tool_call_id or not ledger.answered(tool_call_id, reader.violations, f"{where}.tool_call_id"):
                continue
            if not content:
                reader.bad(f"{where}.content", "must not be empty (the tool's result)")
                continue
            result.append(Message(Role.TOOL, (ToolResult(tool_call_id, content),)))
            continue
        calls = _tool_calls(reader, message.get("tool_calls"), f"{where}.tool_calls")
        ledger.called(calls, reader.violations, lambda i: f"{where}.tool_calls[{i}]")  # noqa: B023 - called at once
        if not content.strip() and not calls:
            reader.bad(f"{where}.content", "must not be empty")
            continue
        parts: tuple[Part, ...] = ((TextPart(content),) if content else ()) + tuple(calls)
        result.append(Message(role, parts))
    return result


def _tools(reader: _Reader, body: Mapping[str, Any]) -> tuple[tuple[Tool, ...], ToolChoice | None]:
    tools: list[Tool] = []
    for where, tool in reader.objects(body.get("tools"), "tools"):
        if tool.get("type", "function") != "function":
            reader.bad(f"{where}.type", "must be 'function'")
            continue
        function = reader.object(tool.get("function"), f"{where}.function") or {}
        name = reader.string(function.get("name"), f"{where}.function.name", required=True) or ""
        description = reader.string(function.get("description"), f"{where}.function.description") or ""
        parameters = reader.object(function.get("parameters"), f"{where}.function.parameters")
        tools.append(Tool(name, description, dict(parameters)) if parameters is not None else Tool(name, description))
    names = check_tools(tools, reader.violations)
    choice = body.get("tool_choice")
    if choice is None:
        return tuple(tools), None
    if not tools:
        if choice != "none":
            reader.bad("tool_choice", "needs tools to choose from")
        return (), None
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICE_MODES:
            reader.bad("tool_choice", "must be none, auto, required or {type: function, function: {name}}")
            return tuple(tools), None
        return tuple(tools), ToolChoice(_TOOL_CHOICE_MODES[choice])
    named = reader.object(choice, "tool_choice") or {}
    function = reader.object(named.get("function"), "tool_choice.function") or {}
    chosen = reader.string(function.get("name"), "tool_choice.function.name", required=True)
    if chosen is None:
        return tuple(tools), None
    check_chosen_tool(chosen, names, reader.violations, "tool_choice.function.name")
    return tuple(tools), ToolChoice(ToolChoiceMode.TOOL, chosen)


def _response_format(reader: _Reader, value: Any) -> tuple[ResponseFormat, JsonObject | None]:
    response_format = reader.object(value, "response_format")
    if response_format is None:
        return ResponseFormat.TEXT, None
    kind = response_format.get("type")
    if kind == "text":
        return ResponseFormat.TEXT, None
    if kind == "json_object":
        return ResponseFormat.JSON_OBJECT, None
    if kind != "json_schema":
        reader.bad("response_format.type", "must be text, json_object or json_schema")
        return ResponseFormat.TEXT, None
    json_schema = reader.object(response_format.get("json_schema"), "response_format.json_schema")
    schema = reader.object((json_schema or {}).get("schema"), "response_format.json_schema.schema")
    if schema is None:
        reader.bad("response_format.json_schema.schema", "is required with type json_schema")
        return ResponseFormat.JSON_SCHEMA, None
    return ResponseFormat.JSON_SCHEMA, dict(schema)


def _stop(reader: _Reader, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(reader.string(s, f"stop[{i}]") or "" for i, s in enumerate(reader.array(value, "stop")))


def read_extension(violations: list[FieldViolation], body: Mapping[str, Any], keys: frozenset[str]) -> tuple[Mapping[str, Any], bool, bool]:
    """The ``llm_manager`` object of a request body, read by one rule for every route: an
    object whose keys are among ``keys`` (another is a violation, not silently ignored), and its
    ``no_cache`` and ``no_store``, each true or false (anything else is a violation)."""
    reader = _Reader(violations)
    extension = reader.object(body.get(EXTENSION), EXTENSION) or {}
    for key in sorted(set(extension) - keys):
        reader.bad(f"{EXTENSION}.{key}"[:80], f"unknown field (use {', '.join(sorted(keys))})")
    no_cache = reader.boolean(extension.get("no_cache"), f"{EXTENSION}.no_cache")
    no_store = reader.boolean(extension.get("no_store"), f"{EXTENSION}.no_store")
    return extension, no_cache, no_store


def _routing(reader: _Reader, body: Mapping[str, Any], task_header: str | None) -> tuple[TaskType, RoutingStrategy | None, bool, bool]:
    extension, no_cache, no_store = read_extension(reader.violations, body, CHAT_EXTENSION_KEYS)
    task = TaskType.GENERAL
    task_name, field = (extension.get("task_type"), f"{EXTENSION}.task_type")
    if task_name is None and task_header is not None:
        task_name, field = task_header, TASK_HEADER
    if task_name is not None:
        text = str(task_name).strip().lower().removeprefix("task_type_").replace("-", "_")
        try:
            task = TaskType(text)
        except ValueError:
            reader.bad(field, f"must be one of {', '.join(t.value for t in TaskType)}")
    strategy: RoutingStrategy | None = None
    strategy_name = reader.string(extension.get("strategy"), f"{EXTENSION}.strategy")
    if strategy_name is not None:
        try:
            strategy = RoutingStrategy(strategy_name.strip().lower().removeprefix("routing_strategy_"))
        except ValueError:
            reader.bad(f"{EXTENSION}.strategy", f"must be one of {', '.join(s.value for s in RoutingStrategy)}")
    return task, strategy, no_cache, no_store


def generation_request(body: Any, *, task_header: str | None = None) -> GenerationRequest:
    """Validates a chat completions body; raises INVALID_REQUEST listing every bad field."""
    violations: list[FieldViolation] = []
    reader = _Reader(violations)
    if not isinstance(body, dict):
        raise invalid_request(FieldViolation("body", f"must be a JSON object, got {_json_type(body)}"))
    model = reader.string(body.get("model"), "model", required=True)
    messages = messages_from_json(reader, body.get("messages"))
    if messages:
        check_answerable(messages, violations, "messages")
    check_request_size(messages, violations, "messages")
    tools, tool_choice = _tools(reader, body)
    n = reader.integer(body.get("n"), "n")
    if n not in (None, 1):
        reader.bad("n", "only n=1 is supported")
    max_tokens = reader.integer(body.get("max_completion_tokens"), "max_completion_tokens")
    legacy_max_tokens = reader.integer(body.get("max_tokens"), "max_tokens")
    if max_tokens is None:
        max_tokens = legacy_max_tokens
    response_format, response_schema = _response_format(reader, body.get("response_format"))
    sampling = SamplingOptions(
        max_tokens=max_tokens,
        temperature=reader.number(body.get("temperature"), "temperature"),
        top_p=reader.number(body.get("top_p"), "top_p"),
        stop=_stop(reader, body.get("stop")),
        seed=reader.integer(body.get("seed"), "seed"),
        response_format=response_format,
        response_schema=response_schema,
    )
    pinned = model if model and model != AUTO_MODEL else None
    check_sampling(sampling, pinned, violations, _sampling_field)
    reader.boolean(body.get("stream"), "stream")
    task, strategy, no_cache, no_store = _routing(reader, body, task_header)
    if violations:
        raise invalid_request(*violations)
    return GenerationRequest(
        messages=tuple(messages),
        task_type=task,
        sampling=sampling,
        model=pinned,
        strategy=strategy,
        no_cache=no_cache,
        no_store=no_store,
        tools=tools,
        tool_choice=tool_choice,
    )


def wants_usage_in_stream(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


# --- replies ---------------------------------------------------------------------------------


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_prompt_tokens},
    }


def tool_call_json(call: ToolCall, index: int | None = None) -> dict[str, Any]:
    function = {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False, separators=(",", ":"))}
    item: dict[str, Any] = {"id": call.id, "type": "function", "function": function}
    if index is not None:
        item = {"index": index, **item}
    return item


def metadata_json(metadata: CallMetadata, cost_usd: float, *, request_id: str, latency_ms: int) -> dict[str, Any]:
    """What an OpenAI reply has no field for: cost and how the result was produced (the
    ``llm_manager`` object of completions, chunks and embeddings)."""
    return {
        "cost_usd": cost_usd,
        "cached": metadata.cached,
        "model_chain": metadata.model_chain,
        "fallback_used": metadata.fallback_used,
        "retry_count": metadata.retry_count,
        "routing_strategy": metadata.strategy.value,
        "provider": metadata.provider.value if metadata.provider else None,
        "deployment": metadata.deployment,
        "latency_ms": latency_ms,
        "request_id": request_id,
    }


def extension_json(answer: Answer, *, request_id: str, latency_ms: int) -> dict[str, Any]:
    fields = metadata_json(answer.metadata, answer.cost_usd, request_id=request_id, latency_ms=latency_ms)
    fields["cache_creation_tokens"] = answer.usage.cache_creation_tokens
    if answer.structured_output is not None:
        fields["structured_output"] = answer.structured_output
    return fields


def completion_id(request_id: str) -> str:
    return f"chatcmpl-{request_id}"


def completion(answer: Answer, *, request_id: str, latency_ms: int) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.text if answer.text or not answer.tool_calls else None, "refusal": None}
    if answer.tool_calls:
        message["tool_calls"] = [tool_call_json(c) for c in answer.tool_calls]
    return {
        "id": completion_id(request_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH[answer.finish_reason]}],
        "usage": usage_json(answer.usage),
        EXTENSION: extension_json(answer, request_id=request_id, latency_ms=latency_ms),
    }


class ChunkWriter:
    """The ``chat.completion.chunk`` objects of one stream, with what they share (id, created,
    model) and the index of each tool call, counted across the stream."""

    def __init__(self, request_id: str, *, include_usage: bool) -> None:
        self._id = completion_id(request_id)
        self._created = int(time.time())
        self._include_usage = include_usage
        self._tool_calls = 0
        self.model = ""

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk: dict[str, Any] = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self.model, "choices": choices}
        if self._include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    def _choice(self, delta: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]

    def first(self, model: str | None) -> dict[str, Any]:
        """The role chunk, as OpenAI opens every stream."""
        self.model = model or self.model
        return self._chunk(self._choice({"role": "assistant", "content": ""}))

    def piece(self, text: str, tool_calls: Sequence[ToolCall]) -> dict[str, Any]:
        """New text, and tool calls that just completed: each whole, in one delta (OpenAI
        sends fragments; a client's accumulator takes a whole call as one fragment)."""
        delta: dict[str, Any] = {}
        if text:
            delta["content"] = text
        if tool_calls:
            delta["tool_calls"] = [tool_call_json(call, self._tool_calls + i) for i, call in enumerate(tool_calls)]
            self._tool_calls += len(tool_calls)
        return self._chunk(self._choice(delta))

    def last(self, answer: Answer, *, request_id: str, latency_ms: int) -> list[dict[str, Any]]:
        """The finish chunk (with the ``llm_manager`` extension), and the usage chunk (empty
        ``choices``) when the caller asked for it with ``stream_options.include_usage``."""
        self.model = answer.model
        extension = {EXTENSION: extension_json(answer, request_id=request_id, latency_ms=latency_ms)}
        chunks = [self._chunk(self._choice({}, _FINISH[answer.finish_reason]), **extension)]
        if self._include_usage:
            chunks.append({**self._chunk([]), "usage": usage_json(answer.usage)})
        return chunks
