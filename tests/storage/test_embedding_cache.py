"""Embeddings through the response cache's one policy, over the memory store and a real
Redis: a hit costs nothing and returns the vectors exactly, identical concurrent batches
reach the model once, a failed leader leaves followers to try themselves, and the cache
controls work as for answers."""

from __future__ import annotations

import asyncio

import pytest

from llm_manager_server.cache import ResponseCache
from llm_manager_server.domain.embeddings import EmbeddingRequest, Embeddings
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import CallMetadata, ProviderKind, Usage

REQUEST = EmbeddingRequest(("checkout p99 latency spiked", "disk full"), "text-embedding-3-small")


class Model:
    """Counts the calls that reached it; may fail or wait first."""

    def __init__(self, *, fail_first: bool = False, delay_s: float = 0.0) -> None:
        self.calls = 0
        self._fail_first = fail_first
        self._delay_s = delay_s

    async def __call__(self) -> Embeddings:
        self.calls += 1
        await asyncio.sleep(self._delay_s)
        if self._fail_first and self.calls == 1:
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, "down for a moment")
        return Embeddings(
            vectors=[[0.1, -0.2, 0.30000000000000004], [1e-300, 2.0, -3.5]],
            model="text-embedding-3-small",
            usage=Usage(prompt_tokens=9, total_tokens=9),
            cost_usd=1.8e-7,
            metadata=CallMetadata(provider=ProviderKind.OPENAI, model_chain=["text-embedding-3-small"], deployment="openai"),
        )


def deadline() -> float:
    return asyncio.get_running_loop().time() + 10


async def test_a_hit_returns_the_vectors_exactly_at_no_cost(response_cache: ResponseCache) -> None:
    model = Model()
    fresh = await response_cache.embeddings(REQUEST, model, deadline())
    hit = await response_cache.embeddings(REQUEST, model, deadline())
    assert model.calls == 1 and not fresh.metadata.cached and hit.metadata.cached
    assert hit.vectors == fresh.vectors and hit.usage == fresh.usage and hit.model == fresh.model
    assert hit.cost_usd == 0 and fresh.cost_usd == pytest.approx(1.8e-7)
    assert hit.metadata.provider is ProviderKind.OPENAI and hit.metadata.model_chain == [] and hit.metadata.deployment == ""
    assert response_cache.stats.hits == 1 and response_cache.stats.stored == 1
    assert response_cache.stats.saved_cost_usd == pytest.approx(1.8e-7)


async def test_identical_concurrent_batches_reach_the_model_once(response_cache: ResponseCache) -> None:
    model = Model(delay_s=0.2)
    results = await asyncio.gather(*(response_cache.embeddings(REQUEST, model, deadline()) for _ in range(5)))
    assert model.calls == 1
    assert sum(r.metadata.cached for r in results) == 4 and all(r.vectors == results[0].vectors for r in results)
    assert response_cache.stats.coalesced == 4


async def test_a_failed_leader_leaves_the_followers_to_try(response_cache: ResponseCache) -> None:
    model = Model(fail_first=True, delay_s=0.1)
    results = await asyncio.gather(*(response_cache.embeddings(REQUEST, model, deadline()) for _ in range(3)), return_exceptions=True)
    assert isinstance(results[0], LLMError), "the leader's own failure is its caller's"
    assert all(isinstance(r, Embeddings) for r in results[1:])
    assert model.calls == 2


async def test_the_cache_controls(response_cache: ResponseCache) -> None:
    model = Model()
    unstored = EmbeddingRequest(REQUEST.inputs, REQUEST.model, no_store=True)
    await response_cache.embeddings(unstored, model, deadline())
    await response_cache.embeddings(REQUEST, model, deadline())
    assert model.calls == 2, "no_store stored nothing"
    bypass = EmbeddingRequest(REQUEST.inputs, REQUEST.model, no_cache=True)
    assert not (await response_cache.embeddings(bypass, model, deadline())).metadata.cached
    assert model.calls == 3 and response_cache.stats.bypassed == 1
    # The other model's key is another entry.
    other = EmbeddingRequest(REQUEST.inputs, "text-embedding-3-large")
    assert not (await response_cache.embeddings(other, model, deadline())).metadata.cached
