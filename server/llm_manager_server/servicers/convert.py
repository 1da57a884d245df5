"""Proto <-> domain translation and request validation (pure functions)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from llm_manager.v1 import common_pb2, llm_manager_service_pb2

from ..domain.errors import FieldViolation, invalid_request
from ..domain.types import (
    MODEL_NAME_RULE,
    CallMetadata,
    FinishReason,
    GenerationRequest,
    Message,
    ProviderKind,
    ResponseFormat,
    Role,
    RoutingStrategy,
    SamplingOptions,
    TaskType,
    Usage,
    is_valid_model_name,
)

MAX_STOP_SEQUENCES = 4
MAX_REQUEST_CHARS = 2_000_000
# No model this service knows has a window above ~1M tokens; a larger max_tokens is a mistake.
# (Each model's own window is checked by the router: prompt + max_tokens must fit it.)
MAX_MAX_TOKENS = 1 << 20

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
_ROLES = {common_pb2.ROLE_SYSTEM: Role.SYSTEM, common_pb2.ROLE_USER: Role.USER, common_pb2.ROLE_ASSISTANT: Role.ASSISTANT}
ROLE_TO_PROTO = {domain: proto for proto, domain in _ROLES.items()}
_FORMATS = {
    common_pb2.RESPONSE_FORMAT_UNSPECIFIED: ResponseFormat.TEXT,
    common_pb2.RESPONSE_FORMAT_TEXT: ResponseFormat.TEXT,
    common_pb2.RESPONSE_FORMAT_JSON_OBJECT: ResponseFormat.JSON_OBJECT,
}
FINISH_TO_PROTO = {
    FinishReason.UNSPECIFIED: common_pb2.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.CONTENT_FILTER: common_pb2.FINISH_REASON_CONTENT_FILTER,
    FinishReason.OTHER: common_pb2.FINISH_REASON_OTHER,
}
PROVIDER_TO_PROTO = {
    ProviderKind.LOCAL: common_pb2.PROVIDER_LOCAL,
    ProviderKind.OPENAI: common_pb2.PROVIDER_OPENAI,
    ProviderKind.ANTHROPIC: common_pb2.PROVIDER_ANTHROPIC,
}


GenerateLike = llm_manager_service_pb2.GenerateRequest | llm_manager_service_pb2.StreamGenerateRequest


def task_from_proto(value: int, violations: list[FieldViolation], field: str = "task_type") -> TaskType:
    if value not in _TASKS:
        violations.append(FieldViolation(field, f"unknown task type {value}"))
        return TaskType.GENERAL
    return _TASKS[value]  # type: ignore[index]


def sampling_from_proto(
    preferences: common_pb2.GenerationPreferences, violations: list[FieldViolation], prefix: str = "preferences"
) -> tuple[SamplingOptions, RoutingStrategy | None]:
    """Sampling options and strategy, appending a violation for every bad field."""
    max_tokens = preferences.max_tokens if preferences.HasField("max_tokens") else None
    if max_tokens is not None and not 0 < max_tokens <= MAX_MAX_TOKENS:
        violations.append(FieldViolation(f"{prefix}.max_tokens", f"must be 1..{MAX_MAX_TOKENS}, got {max_tokens}"))
    temperature = preferences.temperature if preferences.HasField("temperature") else None
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        violations.append(FieldViolation(f"{prefix}.temperature", f"must be between 0 and 2, got {temperature:g}"))
    top_p = preferences.top_p if preferences.HasField("top_p") else None
    if top_p is not None and not 0.0 < top_p <= 1.0:
        violations.append(FieldViolation(f"{prefix}.top_p", f"must be in (0, 1], got {top_p:g}"))
    stop = tuple(preferences.stop)
    if len(stop) > MAX_STOP_SEQUENCES:
        violations.append(FieldViolation(f"{prefix}.stop", f"at most {MAX_STOP_SEQUENCES} sequences, got {len(stop)}"))
    for index, sequence in enumerate(stop):
        if not sequence:
            violations.append(FieldViolation(f"{prefix}.stop[{index}]", "must not be empty"))
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
    if preferences.model and not is_valid_model_name(preferences.model):
        # The name itself is not echoed: it may be huge, or hold anything.
        violations.append(FieldViolation(f"{prefix}.model", MODEL_NAME_RULE))
    sampling = SamplingOptions(
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop,
        seed=preferences.seed if preferences.HasField("seed") else None,
        response_format=response_format,
    )
    return sampling, strategy


def messages_from_proto(
    messages: Iterable[common_pb2.ChatMessage], violations: list[FieldViolation], field: str = "messages"
) -> list[Message]:
    result: list[Message] = []
    for index, message in enumerate(messages):
        if message.role not in _ROLES:
            violations.append(FieldViolation(f"{field}[{index}].role", "must be ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT"))
            continue
        if message.tool_calls or message.tool_call_id:
            violations.append(FieldViolation(f"{field}[{index}].tool_calls", "tool calling is not supported by this server version yet"))
            continue
        if not message.content.strip():
            violations.append(FieldViolation(f"{field}[{index}].content", "must not be empty"))
            continue
        result.append(Message(_ROLES[message.role], message.content))
    return result


def unsupported_tools(request: Any, violations: list[FieldViolation]) -> None:
    """Tools are in the API but not served yet: refused clearly, never silently dropped."""
    if request.tools or request.HasField("tool_choice"):
        violations.append(FieldViolation("tools", "tool calling is not supported by this server version yet"))


def generation_request(request: GenerateLike, messages: Iterable[common_pb2.ChatMessage]) -> GenerationRequest:
    """Validates a (Stream)GenerateRequest; raises INVALID_REQUEST listing every bad field."""
    violations: list[FieldViolation] = []
    chat = messages_from_proto(messages, violations)
    unsupported_tools(request, violations)
    if not request.prompt.strip() and not chat and not any(v.field.startswith("messages") for v in violations):
        violations.append(FieldViolation("prompt", "give a non-empty prompt or at least one message"))
    elif not request.prompt.strip() and chat and all(m.role is Role.SYSTEM for m in chat):
        violations.append(FieldViolation("messages", "only system messages: give a prompt or a user message to answer"))
    task = task_from_proto(request.task_type, violations)
    sampling, strategy = sampling_from_proto(request.preferences, violations)
    full: list[Message] = []
    if request.system.strip():
        full.append(Message(Role.SYSTEM, request.system))
    full.extend(chat)
    if request.prompt.strip():
        full.append(Message(Role.USER, request.prompt))
    if sum(len(m.content) for m in full) > MAX_REQUEST_CHARS:
        violations.append(FieldViolation("prompt", f"the request's text exceeds {MAX_REQUEST_CHARS} characters"))
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
    )


class Reply:
    """What Generate, StreamGenerate and the conversation turns answer with: the text, the
    model, usage, finish reason and metadata, gathered from a complete answer or piece by
    piece from a stream (the first text piece marks the time to first token)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.model = ""
        self.usage = Usage()
        self.finish = FinishReason.UNSPECIFIED
        self.first_token_ms = 0

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    def complete(self, model: str, usage: Usage, finish: FinishReason) -> None:
        self.model, self.usage, self.finish = model, usage, finish

    def piece(self, text: str, model: str, usage: Usage | None, finish: FinishReason | None) -> None:
        self.model = model
        self.usage = usage or self.usage
        self.finish = finish or self.finish
        if text and not self.first_token_ms:
            self.first_token_ms = self.elapsed_ms()

    def fields(self, metadata: CallMetadata, *, request_id: str, text: str = "") -> dict[str, Any]:
        """Keyword arguments for any of the reply messages (they share these fields)."""
        return {
            "text": text,
            "model": self.model,
            "usage": usage_to_proto(self.usage, metadata.cost_usd),
            "metadata": metadata_to_proto(
                metadata, latency_ms=self.elapsed_ms(), request_id=request_id, time_to_first_token_ms=self.first_token_ms
            ),
            "finish_reason": FINISH_TO_PROTO[self.finish],
        }
