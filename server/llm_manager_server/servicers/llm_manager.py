"""``llm_manager.v1.LLMManagerService``: Generate, StreamGenerate, ListModels."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from llm_manager.v1 import llm_manager_service_pb2, llm_manager_service_pb2_grpc

from ..domain.errors import ErrorKind, FieldViolation, LLMError, invalid_request
from ..domain.types import CallMetadata, FinishReason, GenerationRequest, Usage
from ..interceptors import deadline_var, request_id_var
from ..routing.registry import HealthState, ModelRegistry
from ..routing.router import Router
from . import convert

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_HEALTH_TO_PROTO = {
    HealthState.UNKNOWN: llm_manager_service_pb2.HEALTH_STATE_UNSPECIFIED,
    HealthState.HEALTHY: llm_manager_service_pb2.HEALTH_STATE_HEALTHY,
    HealthState.UNHEALTHY: llm_manager_service_pb2.HEALTH_STATE_UNHEALTHY,
    HealthState.NOT_READY: llm_manager_service_pb2.HEALTH_STATE_NOT_READY,
}


def _elapsed_ms(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def page_bounds(page_size: int, page_token: str, total: int) -> tuple[int, int]:
    """(start, end) of a page; raises INVALID_REQUEST for a bad size or token (AIP-158)."""
    if page_size < 0:
        raise invalid_request(FieldViolation("page_size", f"must not be negative, got {page_size}"))
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    start = 0
    if page_token:
        try:
            start = int(base64.urlsafe_b64decode(page_token.encode()).decode().removeprefix("offset:"))
        except ValueError:
            raise invalid_request(FieldViolation("page_token", "is not a token this server issued")) from None
        if not 0 <= start <= total:
            raise invalid_request(FieldViolation("page_token", "is out of range (the list changed?)"))
    return start, min(start + size, total)


def page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


class Generator:
    """Runs a validated request through the router within the call's deadline."""

    def __init__(self, router: Router) -> None:
        self._router = router

    async def generate(self, request: GenerationRequest, metadata: CallMetadata) -> tuple[str, str, Usage, FinishReason]:
        deadline = deadline_var.get()
        try:
            async with asyncio.timeout_at(deadline):
                completion = await self._router.generate(request, deadline, metadata)
        except TimeoutError:
            raise LLMError(ErrorKind.TIMEOUT, "the call's deadline passed before a model answered", model=metadata.model_chain[-1] if metadata.model_chain else None) from None
        return completion.text, completion.model, completion.usage, completion.finish_reason

    async def stream(self, request: GenerationRequest, metadata: CallMetadata) -> AsyncIterator[tuple[str, str, Usage | None, FinishReason | None]]:
        deadline = deadline_var.get()
        try:
            async with asyncio.timeout_at(deadline):
                async for delta in self._router.stream(request, deadline, metadata):
                    yield delta.text, delta.model or metadata.model_chain[-1], delta.usage, delta.finish_reason
        except TimeoutError:
            raise LLMError(ErrorKind.TIMEOUT, "the call's deadline passed before the stream finished", model=metadata.model_chain[-1] if metadata.model_chain else None) from None


class LLMManagerServicer(llm_manager_service_pb2_grpc.LLMManagerServiceServicer):
    def __init__(self, generator: Generator, registry: ModelRegistry) -> None:
        self._generator = generator
        self._registry = registry

    async def Generate(
        self, request: llm_manager_service_pb2.GenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_manager_service_pb2.GenerateResponse:
        started = time.perf_counter()
        generation = convert.generation_request(request, request.messages)
        metadata = CallMetadata()
        text, model, usage, finish = await self._generator.generate(generation, metadata)
        return llm_manager_service_pb2.GenerateResponse(
            text=text,
            model=model,
            usage=convert.usage_to_proto(usage, metadata.cost_usd),
            metadata=convert.metadata_to_proto(metadata, latency_ms=_elapsed_ms(started), request_id=request_id_var.get()),
            finish_reason=convert.FINISH_TO_PROTO[finish],
        )

    async def StreamGenerate(
        self, request: llm_manager_service_pb2.StreamGenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[llm_manager_service_pb2.StreamGenerateResponse]:
        started = time.perf_counter()
        generation = convert.generation_request(request, request.messages)
        metadata = CallMetadata()
        first_token_ms = 0
        model = ""
        usage = Usage()
        finish = FinishReason.UNSPECIFIED
        async for text, model, delta_usage, delta_finish in self._generator.stream(generation, metadata):
            usage = delta_usage or usage
            finish = delta_finish or finish
            if text:
                first_token_ms = first_token_ms or _elapsed_ms(started)
                yield llm_manager_service_pb2.StreamGenerateResponse(text=text, model=model)
        yield llm_manager_service_pb2.StreamGenerateResponse(
            model=model,
            usage=convert.usage_to_proto(usage, metadata.cost_usd),
            metadata=convert.metadata_to_proto(
                metadata, latency_ms=_elapsed_ms(started), request_id=request_id_var.get(), time_to_first_token_ms=first_token_ms
            ),
            finish_reason=convert.FINISH_TO_PROTO[finish],
        )

    async def ListModels(
        self, request: llm_manager_service_pb2.ListModelsRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_manager_service_pb2.ListModelsResponse:
        entries = list(self._registry.models.values())
        start, end = page_bounds(request.page_size, request.page_token, len(entries))
        models = [
            llm_manager_service_pb2.Model(
                name=entry.name,
                provider=convert.PROVIDER_TO_PROTO[entry.provider_kind],
                context_window=entry.context_window,
                health_state=_HEALTH_TO_PROTO[entry.health],
                health_detail=entry.health_detail,
                price=llm_manager_service_pb2.ModelPrice(
                    input_per_million_usd=entry.price.input_per_million,
                    output_per_million_usd=entry.price.output_per_million,
                    cached_input_per_million_usd=entry.price.cached_input_per_million,
                ),
            )
            for entry in entries[start:end]
        ]
        return llm_manager_service_pb2.ListModelsResponse(
            models=models, next_page_token=page_token(end) if end < len(entries) else ""
        )

