"""A small async client for llm-manager.

    async with LLMManagerClient("127.0.0.1:50051") as client:
        reply = await client.generate("Summarise this trace", task_type=TaskType.ANALYSIS)
        async for text in client.stream_text("Write a haiku"):
            print(text, end="", flush=True)

Errors arrive as ``grpc.aio.AioRpcError``; :func:`error_details` unpacks the service's
``google.rpc`` details (``ErrorInfo`` reason, ``RetryInfo``, ``BadRequest``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from llm_manager.v1 import (
    common_pb2,
    conversation_service_pb2,
    conversation_service_pb2_grpc,
    llm_manager_service_pb2,
    llm_manager_service_pb2_grpc,
)

TaskType = common_pb2.TaskType
RoutingStrategy = common_pb2.RoutingStrategy
Role = common_pb2.Role

__all__ = ["ErrorDetails", "LLMManagerClient", "Role", "RoutingStrategy", "TaskType", "error_details"]


@dataclass(frozen=True)
class ErrorDetails:
    """The rich details of a failed call."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    retry_delay_s: float | None = None
    field_violations: dict[str, str] = field(default_factory=dict)


def error_details(error: grpc.aio.AioRpcError) -> ErrorDetails:
    """Unpacks ``ErrorInfo``, ``RetryInfo`` and ``BadRequest`` from a failed call."""
    details = ErrorDetails(code=error.code(), message=error.details() or "")
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        return details
    reason, domain, metadata = "", "", {}
    retry_delay: float | None = None
    violations: dict[str, str] = {}
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        bad_request = error_details_pb2.BadRequest()
        if packed.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif packed.Unpack(retry):
            retry_delay = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
        elif packed.Unpack(bad_request):
            violations = {v.field: v.description for v in bad_request.field_violations}
    return ErrorDetails(details.code, details.message, reason, domain, metadata, retry_delay, violations)


def _preferences(
    model: str | None,
    max_tokens: int | None,
    temperature: float | None,
    strategy: common_pb2.RoutingStrategy.ValueType | None,
    stop: Sequence[str],
) -> common_pb2.GenerationPreferences:
    preferences = common_pb2.GenerationPreferences(model=model or "", stop=list(stop))
    if max_tokens is not None:
        preferences.max_tokens = max_tokens
    if temperature is not None:
        preferences.temperature = temperature
    if strategy is not None:
        preferences.routing_strategy = strategy
    return preferences


class LLMManagerClient:
    """Wraps one channel; every call takes an optional per-call ``timeout`` (seconds)."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        *,
        channel: grpc.aio.Channel | None = None,
        timeout: float | None = 60.0,
    ) -> None:
        self._owns_channel = channel is None
        self._channel = channel or grpc.aio.insecure_channel(target)
        self._timeout = timeout
        self.llm = llm_manager_service_pb2_grpc.LLMManagerServiceStub(self._channel)
        self.conversations = conversation_service_pb2_grpc.ConversationServiceStub(self._channel)

    async def __aenter__(self) -> LLMManagerClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._owns_channel:
            await self._channel.close()

    def _timeout_for(self, timeout: float | None) -> float | None:
        return self._timeout if timeout is None else timeout

    @staticmethod
    def generate_request(
        prompt: str = "",
        *,
        messages: Sequence[tuple[common_pb2.Role.ValueType, str]] = (),
        system: str = "",
        task_type: common_pb2.TaskType.ValueType = common_pb2.TASK_TYPE_GENERAL,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        strategy: common_pb2.RoutingStrategy.ValueType | None = None,
        stop: Sequence[str] = (),
        no_cache: bool = False,
    ) -> llm_manager_service_pb2.GenerateRequest:
        return llm_manager_service_pb2.GenerateRequest(
            prompt=prompt,
            messages=[common_pb2.ChatMessage(role=role, content=content) for role, content in messages],
            system=system,
            task_type=task_type,
            preferences=_preferences(model, max_tokens, temperature, strategy, stop),
            cache_control=common_pb2.CacheControl(no_cache=no_cache),
        )

    async def generate(self, prompt: str = "", *, timeout: float | None = None, **options: object) -> llm_manager_service_pb2.GenerateResponse:
        """One complete answer. ``options`` are those of :meth:`generate_request`."""
        request = self.generate_request(prompt, **options)  # type: ignore[arg-type]
        response: llm_manager_service_pb2.GenerateResponse = await self.llm.Generate(request, timeout=self._timeout_for(timeout))
        return response

    async def stream_generate(
        self, prompt: str = "", *, timeout: float | None = None, **options: object
    ) -> AsyncIterator[llm_manager_service_pb2.StreamGenerateResponse]:
        """Every stream message; the last carries usage, metadata and finish reason."""
        fields = self.generate_request(prompt, **options)  # type: ignore[arg-type]
        request = llm_manager_service_pb2.StreamGenerateRequest.FromString(fields.SerializeToString())
        call = self.llm.StreamGenerate(request, timeout=self._timeout_for(timeout))
        try:
            async for message in call:
                yield message
        finally:
            call.cancel()  # a no-op after the stream ended; stops the server's work otherwise

    async def stream_text(self, prompt: str = "", *, timeout: float | None = None, **options: object) -> AsyncIterator[str]:
        """Just the text pieces, as they arrive."""
        async for message in self.stream_generate(prompt, timeout=timeout, **options):
            if message.text:
                yield message.text

    async def list_models(self, *, timeout: float | None = None) -> list[llm_manager_service_pb2.Model]:
        """Every configured model (follows pagination)."""
        models: list[llm_manager_service_pb2.Model] = []
        token = ""
        while True:
            page = await self.llm.ListModels(
                llm_manager_service_pb2.ListModelsRequest(page_token=token), timeout=self._timeout_for(timeout)
            )
            models.extend(page.models)
            token = page.next_page_token
            if not token:
                return models

    async def create_conversation(
        self, *, system: str = "", metadata: dict[str, str] | None = None, timeout: float | None = None
    ) -> conversation_service_pb2.Conversation:
        response = await self.conversations.CreateConversation(
            conversation_service_pb2.CreateConversationRequest(
                conversation=conversation_service_pb2.Conversation(system=system, metadata=metadata or {})
            ),
            timeout=self._timeout_for(timeout),
        )
        return response.conversation

    async def get_conversation(self, conversation_id: str, *, timeout: float | None = None) -> conversation_service_pb2.Conversation:
        response = await self.conversations.GetConversation(
            conversation_service_pb2.GetConversationRequest(id=conversation_id), timeout=self._timeout_for(timeout)
        )
        return response.conversation

    async def send_message(
        self,
        conversation_id: str,
        message: str,
        *,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
    ) -> conversation_service_pb2.SendMessageResponse:
        response: conversation_service_pb2.SendMessageResponse = await self.conversations.SendMessage(
            conversation_service_pb2.SendMessageRequest(
                conversation_id=conversation_id,
                message=message,
                preferences=_preferences(model, max_tokens, temperature, None, ()),
            ),
            timeout=self._timeout_for(timeout),
        )
        return response
