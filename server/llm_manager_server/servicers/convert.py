"""Proto <-> domain translation and request validation (pure functions)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import json_format, struct_pb2

from llm_manager.v1 import common_pb2, llm_manager_service_pb2

from ..domain import embeddings as embeddings_domain
from ..domain.embeddings import EmbeddingRequest, Embeddings
from ..domain.errors import FieldViolation, invalid_request
from ..domain.types import (
    Answer,
    CallMetadata,
    Capability,
    FinishReason,
    GenerationRequest,
    JsonObject,
    Message,
    Part,
    ProviderKind,
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
from ..domain.validation import (
    ToolCallLedger,
    check_answerable,
    check_chosen_tool,
    check_request_size,
    check_sampling,
    check_tools,
)

_TASKS = {
    common_pb2.TASK_TYPE_UNSPECIFIED: TaskType.GENERAL,
    common_pb2.TASK_TYPE_GENERAL: TaskType.GENERAL,
    common_pb2.TASK_TYPE_ANALYSIS: TaskType.ANALYSIS,
    common_pb2.TASK_TYPE_UI_GENERATION: TaskType.UI_GENERATION,
    common_pb2.TASK_TYPE_CONFIG_MANAGEMENT: TaskType.CONFIG_MANAGEMENT,
    common_pb2.TASK_TYPE_SQL_GENERATION: TaskType.SQL_GENERATION,
}
_STRATEGIES = {
    common_pb2.ROUTING_STRATEGY_COST: RoutingStrategy.COST,
    common_pb2.ROUTING_STRATEGY_PERFORMANCE: RoutingStrategy.PERFORMANCE,
    common_pb2.ROUTING_STRATEGY_BALANCED: RoutingStrategy.BALANCED,
}
STRATEGY_TO_PROTO = {domain: proto for proto, domain in _STRATEGIES.items()}
_ROLES = {
    common_pb2.ROLE_SYSTEM: Role.SYSTEM,
    common_pb2.ROLE_USER: Role.USER,
    common_pb2.ROLE_ASSISTANT: Role.ASSISTANT,
    common_pb2.ROLE_TOOL: Role.TOOL,
}
ROLE_TO_PROTO = {domain: proto for proto, domain in _ROLES.items()}
_FORMATS = {
    common_pb2.RESPONSE_FORMAT_UNSPECIFIED: ResponseFormat.TEXT,
    common_pb2.RESPONSE_FORMAT_TEXT: ResponseFormat.TEXT,
    common_pb2.RESPONSE_FORMAT_JSON_OBJECT: ResponseFormat.JSON_OBJECT,
    common_pb2.RESPONSE_FORMAT_JSON_SCHEMA: ResponseFormat.JSON_SCHEMA,
}
_TOOL_CHOICES = {
    common_pb2.TOOL_CHOICE_MODE_UNSPECIFIED: ToolChoiceMode.AUTO,
    common_pb2.TOOL_CHOICE_MODE_AUTO: ToolChoiceMode.AUTO,
    common_pb2.TOOL_CHOICE_MODE_NONE: ToolChoiceMode.NONE,
    common_pb2.TOOL_CHOICE_MODE_REQUIRED: ToolChoiceMode.REQUIRED,
}
FINISH_TO_PROTO = {
    FinishReason.UNSPECIFIED: common_pb2.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: common_pb2.FINISH_REASON_CONTENT_FILTER,
    FinishReason.TOOL_CALLS: common_pb2.FINISH_REASON_TOOL_CALLS,
    FinishReason.OTHER: common_pb2.FINISH_REASON_OTHER,
}
CAPABILITY_TO_PROTO = {
    Capability.TOOLS: common_pb2.CAPABILITY_TOOLS,
    Capability.JSON_SCHEMA: common_pb2.CAPABILITY_JSON_SCHEMA,
    Capability.VISION: common_pb2.CAPABILITY_VISION,
    Capability.REASONING: common_pb2.CAPABILITY_REASONING,
    Capability.EMBEDDINGS: common_pb2.CAPABILITY_EMBEDDINGS,
}
# Each provider kind is the API's PROVIDER_<KIND> (a KeyError here at import: the proto lacks it).
PROVIDER_TO_PROTO = {kind: common_pb2.Provider.Value(f"PROVIDER_{kind.name}") for kind in ProviderKind}


GenerateLike = llm_manager_service_pb2.GenerateRequest | llm_manager_service_pb2.StreamGenerateRequest


def task_from_proto(value: int, violations: list[FieldViolation], field: str = "task_type") -> TaskType:
    if value not in _TASKS:
        violations.append(FieldViolation(field, f"unknown task type {value}"))
        return TaskType.GENERAL
    return _TASKS[value]  # type: ignore[index]


def sampling_from_proto(
    preferences: common_pb2.GenerationPreferences, violations: list[FieldViolation], prefix: str = "preferences"
) -> tuple[SamplingOptions, RoutingStrategy | None]:
    """Sampling options and strategy, appending a violation for every bad field (the rules:
    ``domain.validation.check_sampling``)."""
    strategy: RoutingStrategy | None = None
    if preferences.routing_strategy != common_pb2.ROUTING_STRATEGY_UNSPECIFIED:
        if preferences.routing_strategy not in _STRATEGIES:
            violations.append(FieldViolation(f"{prefix}.routing_strategy", f"unknown routing strategy {preferences.routing_strategy}"))
        else:
            strategy = _STRATEGIES[preferences.routing_strategy]
    response_format = ResponseFormat.TEXT
    if preferences.response_format not in _FORMATS:
        violations.append(FieldViolation(f"{prefix}.response_format", f"unknown response format {preferences.response_format}"))
    else:
        response_format = _FORMATS[preferences.response_format]
    response_schema: JsonObject | None = None
    if preferences.HasField("response_schema"):
        if response_format is not ResponseFormat.JSON_SCHEMA:
            violations.append(FieldViolation(f"{prefix}.response_schema", "is only used with RESPONSE_FORMAT_JSON_SCHEMA"))
        else:
            response_schema = struct_to_dict(preferences.response_schema)
    elif response_format is ResponseFormat.JSON_SCHEMA:
        violations.append(FieldViolation(f"{prefix}.response_schema", "is required with RESPONSE_FORMAT_JSON_SCHEMA"))
    sampling = SamplingOptions(
        max_tokens=preferences.max_tokens if preferences.HasField("max_tokens") else None,
        temperature=preferences.temperature if preferences.HasField("temperature") else None,
        top_p=preferences.top_p if preferences.HasField("top_p") else None,
        stop=tuple(preferences.stop),
        seed=preferences.seed if preferences.HasField("seed") else None,
        response_format=response_format,
        response_schema=response_schema,
    )
    check_sampling(sampling, preferences.model, violations, lambda name: f"{prefix}.{name}")
    return sampling, strategy


def _integral(value: Any) -> Any:
    """Struct numbers are doubles: 40 arrives as 40.0. JSON does not tell them apart, but
    schema keywords (``maxLength``, ``minItems``) and many upstreams want integers."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def struct_to_dict(struct: struct_pb2.Struct) -> JsonObject:
    value: JsonObject = _integral(json_format.MessageToDict(struct))
    return value


def dict_to_struct(value: JsonObject) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def messages_from_proto(
    messages: Iterable[common_pb2.ChatMessage], violations: list[FieldViolation], field: str = "messages", *, open_calls: set[str] | None = None
) -> list[Message]:
    """Chat messages, checked: roles, non-empty content, tool calls only on assistant
    messages, and every ROLE_TOOL message answering an earlier tool call (of these messages,
    or of ``open_calls``: the calls a conversation's last reply left open)."""
    result: list[Message] = []
    ledger = ToolCallLedger(open_calls or ())
    for index, message in enumerate(messages):
        where = f"{field}[{index}]"
        if message.role not in _ROLES:
            violations.append(FieldViolation(f"{where}.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"))
            continue
        role = _ROLES[message.role]
        if message.tool_calls and role is not Role.ASSISTANT:
            violations.append(FieldViolation(f"{where}.tool_calls", "only assistant messages carry tool calls"))
            continue
        if role is Role.TOOL:
            if not message.tool_call_id:
                violations.append(FieldViolation(f"{where}.tool_call_id", "is required on a ROLE_TOOL message"))
                continue
            if not ledger.answered(message.tool_call_id, violations, f"{where}.tool_call_id"):
                continue
            if not message.content:
                violations.append(FieldViolation(f"{where}.content", "must not be empty (the tool's result)"))
                continue
            result.append(Message(Role.TOOL, (ToolResult(message.tool_call_id, message.content),)))
            continue
        if message.tool_call_id:
            violations.append(FieldViolation(f"{where}.tool_call_id", "is only used on ROLE_TOOL messages"))
            continue
        calls = [ToolCall(call.id, call.name, struct_to_dict(call.arguments)) for call in message.tool_calls]
        ledger.called(calls, violations, lambda i: f"{where}.tool_calls[{i}]")  # noqa: B023 - called at once
        if not message.content.strip() and not calls:
            violations.append(FieldViolation(f"{where}.content", "must not be empty"))
            continue
        if not calls:
            result.append(Message.of(role, message.content))
        else:
            parts: tuple[Part, ...] = ((TextPart(message.content),) if message.content else ()) + tuple(calls)
            result.append(Message(role, parts))
    return result


def tool_results_from_proto(results: Iterable[common_pb2.ChatMessage], violations: list[FieldViolation], field: str = "tool_results") -> list[Message]:
    """A turn's tool results: ROLE_TOOL messages, each naming the call it answers (which call
    that is, the conversation's stored reply decides: see ``engine.turns``)."""
    messages: list[Message] = []
    seen: set[str] = set()
    for index, result in enumerate(results):
        where = f"{field}[{index}]"
        if result.role != common_pb2.ROLE_TOOL:
            violations.append(FieldViolation(f"{where}.role", "must be ROLE_TOOL"))
        elif not result.tool_call_id or result.tool_call_id in seen:
            violations.append(FieldViolation(f"{where}.tool_call_id", "is required, once per call"))
        elif not result.content:
            violations.append(FieldViolation(f"{where}.content", "must not be empty (the tool's result)"))
        else:
            seen.add(result.tool_call_id)
            messages.append(Message(Role.TOOL, (ToolResult(result.tool_call_id, result.content),)))
    return messages


def tools_from_proto(request: Any, violations: list[FieldViolation]) -> tuple[tuple[Tool, ...], ToolChoice | None]:
    """The request's tools and tool choice, checked (``domain.validation``: names, schemas,
    the choice's tool)."""
    tools = tuple(
        Tool(tool.name, tool.description, struct_to_dict(tool.parameters)) if tool.HasField("parameters") else Tool(tool.name, tool.description)
        for tool in request.tools
    )
    names = check_tools(tools, violations)
    if not request.HasField("tool_choice"):
        return tools, None
    choice = request.tool_choice
    if not tools:
        violations.append(FieldViolation("tool_choice", "needs tools to choose from"))
        return (), None
    if choice.tool_name:
        check_chosen_tool(choice.tool_name, names, violations, "tool_choice.tool_name")
        return tools, ToolChoice(ToolChoiceMode.TOOL, choice.tool_name)
    if choice.mode not in _TOOL_CHOICES:
        violations.append(FieldViolation("tool_choice.mode", f"unknown tool choice mode {choice.mode}"))
        return tools, None
    return tools, ToolChoice(_TOOL_CHOICES[choice.mode])


def generation_request(request: GenerateLike, messages: Iterable[common_pb2.ChatMessage]) -> GenerationRequest:
    """Validates a (Stream)GenerateRequest; raises INVALID_REQUEST listing every bad field."""
    violations: list[FieldViolation] = []
    chat = messages_from_proto(messages, violations)
    tools, tool_choice = tools_from_proto(request, violations)
    task = task_from_proto(request.task_type, violations)
    sampling, strategy = sampling_from_proto(request.preferences, violations)
    full: list[Message] = []
    if request.system.strip():
        full.append(Message.of(Role.SYSTEM, request.system))
    full.extend(chat)
    if request.prompt.strip():
        full.append(Message.of(Role.USER, request.prompt))
    if not request.prompt.strip() and not chat and not any(v.field.startswith("messages") for v in violations):
        violations.append(FieldViolation("prompt", "give a non-empty prompt or at least one message"))
    elif chat:
        check_answerable(full, violations, "messages")
    check_request_size(full, violations, "prompt")
    if violations:
        raise invalid_request(*violations)
    return GenerationRequest(
        messages=tuple(full),
        task_type=task,
        sampling=sampling,
        model=request.preferences.model or None,
        strategy=strategy,
        no_cache=request.cache_control.no_cache,
        no_store=request.cache_control.no_store,
        tools=tools,
        tool_choice=tool_choice,
    )


def usage_to_proto(usage: Usage, cost_usd: float) -> common_pb2.Usage:
    return common_pb2.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cost_usd=cost_usd,
        cached_prompt_tokens=usage.cached_prompt_tokens,
        cache_creation_tokens=usage.cache_creation_tokens,
    )


def metadata_to_proto(
    metadata: CallMetadata, *, latency_ms: int, request_id: str, time_to_first_token_ms: int = 0
) -> common_pb2.ResponseMetadata:
    return common_pb2.ResponseMetadata(
        latency_ms=latency_ms,
        retry_count=metadata.retry_count,
        cached=metadata.cached,
        routing_strategy=STRATEGY_TO_PROTO[metadata.strategy],
        fallback_used=metadata.fallback_used,
        model_chain=metadata.model_chain,
        provider=PROVIDER_TO_PROTO[metadata.provider] if metadata.provider else common_pb2.PROVIDER_UNSPECIFIED,
        time_to_first_token_ms=time_to_first_token_ms,
        request_id=request_id,
        candidates=metadata.candidates,
        routing_reason=metadata.routing_reason,
        deployment=metadata.deployment,
    )


def tool_call_to_proto(call: ToolCall) -> common_pb2.ToolCall:
    return common_pb2.ToolCall(id=call.id, name=call.name, arguments=dict_to_struct(call.arguments))


def piece_fields(text: str, model: str | None, tool_calls: Sequence[ToolCall]) -> dict[str, Any]:
    """Keyword arguments for a stream message before the last: new text, and tool calls that
    just completed (the common text-only case builds no list)."""
    if tool_calls:
        return {"text": text, "model": model or "", "tool_calls": [tool_call_to_proto(c) for c in tool_calls]}
    return {"text": text, "model": model or ""}


def embedding_request(request: llm_manager_service_pb2.EmbedRequest) -> EmbeddingRequest:
    """The validated domain request (the rules are the domain's: every transport shares them)."""
    return embeddings_domain.embedding_request(
        request.inputs, request.model, no_cache=request.cache_control.no_cache, no_store=request.cache_control.no_store
    )


def embed_response(embeddings: Embeddings, *, latency_ms: int, request_id: str) -> llm_manager_service_pb2.EmbedResponse:
    return llm_manager_service_pb2.EmbedResponse(
        embeddings=[llm_manager_service_pb2.Embedding(values=vector) for vector in embeddings.vectors],
        model=embeddings.model,
        usage=usage_to_proto(embeddings.usage, embeddings.cost_usd),
        metadata=metadata_to_proto(embeddings.metadata, latency_ms=latency_ms, request_id=request_id),
    )


class Reply:
    """The timing of one reply (the first text or tool call marks the time to first token),
    and the translation of an :class:`Answer` into the fields every reply message shares
    (GenerateResponse, the last StreamGenerateResponse, the SendMessage replies)."""

    __slots__ = ("started", "first_token_ms")

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first_token_ms = 0

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def output_arrived(self) -> None:
        if not self.first_token_ms:
            self.first_token_ms = self.elapsed_ms()

    def fields(self, answer: Answer, *, request_id: str, text: str | None = None, tool_calls: Sequence[ToolCall] | None = None) -> dict[str, Any]:
        """Keyword arguments for a reply message: ``text`` and ``tool_calls`` default to the
        answer's (a stream's last message passes only what it has not sent yet)."""
        fields: dict[str, Any] = {
            "text": answer.text if text is None else text,
            "model": answer.model,
            "usage": usage_to_proto(answer.usage, answer.cost_usd),
            "metadata": metadata_to_proto(
                answer.metadata, latency_ms=self.elapsed_ms(), request_id=request_id, time_to_first_token_ms=self.first_token_ms
            ),
            "finish_reason": FINISH_TO_PROTO[answer.finish_reason],
        }
        calls = answer.tool_calls if tool_calls is None else tool_calls
        if calls:
            fields["tool_calls"] = [tool_call_to_proto(c) for c in calls]
        if answer.structured_output is not None:
            fields["structured_output"] = dict_to_struct(answer.structured_output)
        return fields
