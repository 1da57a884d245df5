"""``llm_manager.v1.LLMManagerService``: Generate, StreamGenerate, ListModels, Embed."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from llm_manager.v1 import llm_manager_service_pb2, llm_manager_service_pb2_grpc

from ..domain.call_context import request_id_var
from ..domain.caller import caller_var
from ..domain.errors import FieldViolation, invalid_request
from ..engine import Embedder, Generator
from ..routing.registry import HealthState, ModelRegistry, visible_models
from . import convert

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_HEALTH_TO_PROTO = {
    HealthState.UNKNOWN: llm_manager_service_pb2.HEALTH_STATE_UNSPECIFIED,
    HealthState.HEALTHY: llm_manager_service_pb2.HEALTH_STATE_HEALTHY,
    HealthState.UNHEALTHY: llm_manager_service_pb2.HEALTH_STATE_UNHEALTHY,
    HealthState.NOT_READY: llm_manager_service_pb2.HEALTH_STATE_NOT_READY,
}


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


class LLMManagerServicer(llm_manager_service_pb2_grpc.LLMManagerServiceServicer):
    def __init__(self, generator: Generator, registry: ModelRegistry, embedder: Embedder) -> None:
        self._generator = generator
        self._registry = registry
        self._embedder = embedder

    async def Generate(
        self, request: llm_manager_service_pb2.GenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_manager_service_pb2.GenerateResponse:
        reply = convert.Reply()
        answer = await self._generator.generate(convert.generation_request(request, request.messages))
        return llm_manager_service_pb2.GenerateResponse(**reply.fields(answer, request_id=request_id_var.get()))

    async def StreamGenerate(
        self, request: llm_manager_service_pb2.StreamGenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[llm_manager_service_pb2.StreamGenerateResponse]:
        reply = convert.Reply()
        async for delta in self._generator.stream(convert.generation_request(request, request.messages)):
            if delta.answer is not None:
                # Text and tool calls went out as they came: the last message adds the rest.
                yield llm_manager_service_pb2.StreamGenerateResponse(**reply.fields(delta.answer, request_id=request_id_var.get(), text="", tool_calls=()))
            elif delta.text or delta.tool_calls:
                reply.output_arrived()
                yield llm_manager_service_pb2.StreamGenerateResponse(**convert.piece_fields(delta.text, delta.model, delta.tool_calls))

    async def ListModels(
        self, request: llm_manager_service_pb2.ListModelsRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_manager_service_pb2.ListModelsResponse:
        entries = visible_models(self._registry, caller_var.get())
        start, end = page_bounds(request.page_size, request.page_token, len(entries))
        circuit = {e.name: self._generator.router.circuit_detail(e) for e in entries[start:end]}
        models = [
            llm_manager_service_pb2.Model(
                name=entry.name,
                provider=convert.PROVIDER_TO_PROTO[entry.provider_kind],
                context_window=entry.context_window,
                # An open circuit makes a model that answers probes unusable all the same.
                health_state=_HEALTH_TO_PROTO[HealthState.UNHEALTHY if circuit.get(entry.name) else entry.health],
                health_detail=circuit.get(entry.name) or entry.health_detail,
                capabilities=[convert.CAPABILITY_TO_PROTO[c] for c in sorted(entry.capabilities, key=lambda c: c.value)],
                deployments=[
                    llm_manager_service_pb2.Deployment(
                        name=route.deployment.name,
                        provider=convert.PROVIDER_TO_PROTO[route.deployment.kind],
                        weight=route.deployment.weight,
                        health_state=_HEALTH_TO_PROTO[route.deployment.health],
                        health_detail=route.deployment.health_detail,
                        in_flight=route.deployment.in_flight,
                    )
                    for route in entry.routes
                ],
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


    async def Embed(
        self, request: llm_manager_service_pb2.EmbedRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_manager_service_pb2.EmbedResponse:
        reply = convert.Reply()
        embeddings = await self._embedder.embed(convert.embedding_request(request))
        return convert.embed_response(embeddings, latency_ms=reply.elapsed_ms(), request_id=request_id_var.get())
