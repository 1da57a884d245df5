"""Embeds a validated request within the call's deadline: through the response cache's policy
(``ResponseCache.embeddings``) when there is a cache, else straight from the router. Both
transports (gRPC ``Embed``, HTTP ``/v1/embeddings``) call :meth:`Embedder.embed`. With a
``UsageMeter`` a call is admitted against its caller's limits first (a call the router's plan
refuses before it is counted) and booked once answered, as generations are."""

from __future__ import annotations

from dataclasses import replace

from opentelemetry import trace

from .. import genai
from ..cache import ResponseCache
from ..domain.call_context import deadline_var
from ..domain.embeddings import EmbeddingRequest, Embeddings
from ..routing.router import Router
from ..usage.meter import UsageMeter


class Embedder:
    def __init__(self, router: Router, cache: ResponseCache | None = None, meter: UsageMeter | None = None) -> None:
        self._router = router
        self._cache = cache
        self._meter = meter

    async def embed(self, request: EmbeddingRequest) -> Embeddings:
        """One vector per input of ``request``, in order, with usage, cost and how they were
        made (``metadata.cached`` for vectors the cache had: no upstream call, cost 0)."""
        if self._meter is None:
            return await self._embed(request)
        caller = await self._meter.admit(lambda: self._router.plan_embedding(request))
        result = await self._embed(request)
        await self._meter.book(caller, result)
        return result

    async def _embed(self, request: EmbeddingRequest) -> Embeddings:
        deadline = deadline_var.get()
        if request.model is None:
            # Resolved before the cache key is made: the key covers the model that embeds.
            request = replace(request, model=self._router.embedding_model())
        if self._cache is None:
            return await self._router.embed(request, deadline)
        result = await self._cache.embeddings(request, lambda: self._router.embed(request, deadline), deadline)
        if result.metadata.cached:
            trace.get_current_span().set_attribute(genai.CACHE_HIT, True)
        return result
