"""``llm_manager.v1.LLMManagerService``: Generate, StreamGenerate, ListModels."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from grpc import aio
from opentelemetry import trace

from llm_manager.v1 import llm_manager_service_pb2, llm_manager_service_pb2_grpc

from ..cache import CachedAnswer, ResponseCache
from .. import genai
from ..domain.errors import ErrorKind, FieldViolation, LLMError, invalid_request
from ..domain.types import CallMetadata, FinishReason, GenerationRequest, Usage
from ..domain.call_context import deadline_exceeded, deadline_var, request_id_var
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


# A cached answer replayed as a stream goes out in pieces of this many characters.
CACHED_STREAM_CHUNK_CHARS = 512

# What Generator.stream yields: new text, the model, and on the last piece usage and finish.
StreamPiece = tuple[str, str, Usage | None, FinishReason | None]


class _StreamedAnswer:
    """What a model stream produced so far; complete once the stream ended normally."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.model = ""
        self.usage = Usage()
        self.finish = FinishReason.UNSPECIFIED

    def answer(self, metadata: CallMetadata) -> CachedAnswer:
        return CachedAnswer(
            "".join(self.text), self.model, self.usage, self.finish, metadata.provider, metadata.strategy, metadata.cost_usd
        )


class Generator:
    """Runs a validated request within the call's deadline: from the response cache when it
    can, else through the router.

    With a cache, identical concurrent requests reach the model once (single-flight): the
    first leads, the others wait for its answer; if the leader fails or is cancelled they try
    again themselves. ``no_cache`` requests neither read the cache nor join a flight;
    ``no_store`` answers are not stored. Only complete answers are stored (see
    :mod:`..cache.response_cache`).

    An answer served without a model call (a cache hit, or an answer shared by an identical
    call in flight) reports:

    - ``text``, ``model`` and ``finish_reason`` as originally generated;
    - ``usage`` token counts as the provider reported them for the original call (never
      invented, and they tell the caller the answer's size), but ``cost_usd`` 0: this call
      spent nothing (the saving is counted in ``CacheStats.saved_cost_usd``);
    - ``metadata.cached`` true, ``model_chain`` and ``candidates`` empty (no model was
      attempted), ``retry_count`` 0, ``fallback_used`` false, ``provider`` the original
      answerer's, and a ``routing_reason`` naming the model that produced it.
    """

    def __init__(self, router: Router, cache: ResponseCache | None = None) -> None:
        self._router = router
        self._cache = cache

    @property
    def cache(self) -> ResponseCache | None:
        return self._cache

    def context_window(self, request: GenerationRequest) -> int:
        """The context window of the model the router would choose first for ``request``.

        Conversations are trimmed to the chosen model's window, not to the smallest in the
        chain: an analysis conversation answered by Claude keeps 200k tokens of history
        rather than a local model's 4k. A fallback whose window is too small is then skipped
        by the router's context check instead of answering without the history. Raises the
        router's error when no model can serve the request."""
        return self._router.plan(request).candidates[0].context_window

    @staticmethod
    def _timeout(metadata: CallMetadata, what: str) -> LLMError:
        chain = metadata.model_chain
        return deadline_exceeded(
            what, asked=chain, not_tried=[c for c in metadata.candidates if c not in chain], model=chain[-1] if chain else None
        )

    @property
    def router(self) -> Router:
        return self._router

    def _replayed(self, answer: CachedAnswer, metadata: CallMetadata) -> CachedAnswer:
        trace.get_current_span().set_attribute(genai.CACHE_HIT, True)
        metadata.cached = True
        metadata.model_chain = []
        metadata.candidates = []
        metadata.retry_count = 0
        metadata.fallback_used = False
        metadata.provider = answer.provider
        metadata.strategy = answer.strategy
        metadata.routing_reason = f"answered from the response cache (originally by {answer.model})"
        metadata.cost_usd = 0.0
        if self._cache is not None:
            self._cache.stats.saved_cost_usd += answer.cost_usd
        return answer

    # --- complete answers -----------------------------------------------------------------

    async def generate(self, request: GenerationRequest, metadata: CallMetadata) -> tuple[str, str, Usage, FinishReason]:
        deadline = deadline_var.get()
        try:
            async with asyncio.timeout_at(deadline):
                answer = await self._answer(request, metadata, deadline)
        except TimeoutError:
            raise self._timeout(metadata, "a model answered") from None
        return answer.text, answer.model, answer.usage, answer.finish_reason

    async def _from_model(self, request: GenerationRequest, metadata: CallMetadata, deadline: float) -> CachedAnswer:
        completion = await self._router.generate(request, deadline, metadata)
        return CachedAnswer(
            completion.text,
            completion.model,
            completion.usage,
            completion.finish_reason,
            metadata.provider,
            metadata.strategy,
            metadata.cost_usd,
        )

    async def _save(self, cache: ResponseCache, key: str, request: GenerationRequest, answer: CachedAnswer) -> None:
        if request.no_store:
            cache.stats.store_skipped += 1
        else:
            await cache.save(key, answer)

    async def _answer(self, request: GenerationRequest, metadata: CallMetadata, deadline: float) -> CachedAnswer:
        cache = self._cache
        if cache is None:
            return await self._from_model(request, metadata, deadline)
        key = cache.key_for(request)
        if request.no_cache:
            cache.stats.bypassed += 1
            answer = await self._from_model(request, metadata, deadline)
            await self._save(cache, key, request, answer)
            return answer
        while True:
            flight, leading = cache.join(key)
            if not leading:
                shared = await flight.wait()
                if shared is None:
                    continue  # the leader failed: look again, lead or follow a new leader
                cache.stats.coalesced += 1
                return self._replayed(shared, metadata)
            try:
                hit = await cache.lookup(key)
                if hit is not None:
                    flight.complete(hit)
                    return self._replayed(hit, metadata)
                answer = await self._from_model(request, metadata, deadline)
                await self._save(cache, key, request, answer)
                flight.complete(answer)
                return answer
            finally:
                flight.abandon()  # no-op once completed; frees followers on failure

    # --- streams --------------------------------------------------------------------------

    async def stream(self, request: GenerationRequest, metadata: CallMetadata) -> AsyncGenerator[StreamPiece, None]:
        deadline = deadline_var.get()
        try:
            async with asyncio.timeout_at(deadline):
                async for piece in self._stream_answer(request, metadata, deadline):
                    yield piece
        except TimeoutError:
            raise self._timeout(metadata, "the stream finished") from None

    def _replay_stream(self, answer: CachedAnswer, metadata: CallMetadata) -> list[StreamPiece]:
        self._replayed(answer, metadata)
        chunks = [answer.text[i : i + CACHED_STREAM_CHUNK_CHARS] for i in range(0, len(answer.text), CACHED_STREAM_CHUNK_CHARS)]
        pieces: list[StreamPiece] = [(chunk, answer.model, None, None) for chunk in chunks[:-1]]
        pieces.append((chunks[-1] if chunks else "", answer.model, answer.usage, answer.finish_reason))
        return pieces

    async def _stream_from_model(
        self, request: GenerationRequest, metadata: CallMetadata, deadline: float, collected: _StreamedAnswer
    ) -> AsyncIterator[StreamPiece]:
        async for delta in self._router.stream(request, deadline, metadata):
            model = delta.model or metadata.model_chain[-1]
            collected.text.append(delta.text)
            collected.model = model
            collected.usage = delta.usage or collected.usage
            collected.finish = delta.finish_reason or collected.finish
            yield delta.text, model, delta.usage, delta.finish_reason

    async def _stream_answer(self, request: GenerationRequest, metadata: CallMetadata, deadline: float) -> AsyncIterator[StreamPiece]:
        cache = self._cache
        collected = _StreamedAnswer()
        if cache is None:
            async for piece in self._stream_from_model(request, metadata, deadline, collected):
                yield piece
            return
        key = cache.key_for(request)
        if request.no_cache:
            cache.stats.bypassed += 1
            async for piece in self._stream_from_model(request, metadata, deadline, collected):
                yield piece
            # Reached only when the stream ended normally: a cut or cancelled one raised.
            await self._save(cache, key, request, collected.answer(metadata))
            return
        while True:
            flight, leading = cache.join(key)
            if not leading:
                shared = await flight.wait()
                if shared is None:
                    continue
                cache.stats.coalesced += 1
                for piece in self._replay_stream(shared, metadata):
                    yield piece
                return
            try:
                hit = await cache.lookup(key)
                if hit is not None:
                    flight.complete(hit)
                    for piece in self._replay_stream(hit, metadata):
                        yield piece
                    return
                async for piece in self._stream_from_model(request, metadata, deadline, collected):
                    yield piece
                answer = collected.answer(metadata)
                await self._save(cache, key, request, answer)
                flight.complete(answer)
                return
            finally:
                flight.abandon()


class LLMManagerServicer(llm_manager_service_pb2_grpc.LLMManagerServiceServicer):
    def __init__(self, generator: Generator, registry: ModelRegistry) -> None:
        self._generator = generator
        self._registry = registry

    async def Generate(
        self, request: llm_manager_service_pb2.GenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_manager_service_pb2.GenerateResponse:
        reply = convert.Reply()
        metadata = CallMetadata()
        text, model, usage, finish = await self._generator.generate(convert.generation_request(request, request.messages), metadata)
        reply.complete(model, usage, finish)
        return llm_manager_service_pb2.GenerateResponse(**reply.fields(metadata, request_id=request_id_var.get(), text=text))

    async def StreamGenerate(
        self, request: llm_manager_service_pb2.StreamGenerateRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[llm_manager_service_pb2.StreamGenerateResponse]:
        reply = convert.Reply()
        metadata = CallMetadata()
        async for text, model, usage, finish in self._generator.stream(convert.generation_request(request, request.messages), metadata):
            reply.piece(text, model, usage, finish)
            if text:
                yield llm_manager_service_pb2.StreamGenerateResponse(text=text, model=model)
        yield llm_manager_service_pb2.StreamGenerateResponse(**reply.fields(metadata, request_id=request_id_var.get()))

    async def ListModels(
        self, request: llm_manager_service_pb2.ListModelsRequest, context: aio.ServicerContext[Any, Any]
    ) -> llm_manager_service_pb2.ListModelsResponse:
        entries = list(self._registry.models.values())
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

