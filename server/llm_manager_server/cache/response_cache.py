"""The response cache in front of the router: lookups, stores, single-flight and counters.

Lookups and stores never fail a call: a store error is logged by the store, counted here and
treated as a miss (or a skipped store). Only complete successful answers are stored (finish
reason STOP or LENGTH); errors, cut or cancelled streams and filtered answers never are.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ..domain.types import FinishReason, GenerationRequest, ProviderKind, RoutingStrategy, Usage
from .keys import KEY_VERSION, cache_key
from .stores import CacheStore, CacheStoreError

log = logging.getLogger(__name__)

# Complete answers: the model stopped by itself or at the caller's max_tokens.
CACHEABLE_FINISH_REASONS = frozenset({FinishReason.STOP, FinishReason.LENGTH})


@dataclass(frozen=True)
class CachedAnswer:
    """A complete answer as stored: what the model said and how it was produced."""

    text: str
    model: str
    usage: Usage
    finish_reason: FinishReason
    provider: ProviderKind | None
    strategy: RoutingStrategy
    # What the original call cost; reported as savings, never billed again.
    cost_usd: float = 0.0

    @property
    def cacheable(self) -> bool:
        return self.finish_reason in CACHEABLE_FINISH_REASONS

    def to_bytes(self) -> bytes:
        document = {
            "version": KEY_VERSION,
            "text": self.text,
            "model": self.model,
            "usage": [
                self.usage.prompt_tokens,
                self.usage.completion_tokens,
                self.usage.total_tokens,
                self.usage.cached_prompt_tokens,
                self.usage.cache_creation_tokens,
            ],
            "finish_reason": self.finish_reason.value,
            "provider": self.provider.value if self.provider else None,
            "strategy": self.strategy.value,
            "cost_usd": self.cost_usd,
        }
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedAnswer:
        """Raises ``ValueError`` for anything this version did not write."""
        try:
            document: dict[str, Any] = json.loads(data)
            if document.get("version") != KEY_VERSION:
                raise ValueError(f"entry version {document.get('version')!r}")
            prompt, completion, total, cached_prompt, cache_creation = (int(n) for n in document["usage"])
            provider = document["provider"]
            return cls(
                text=str(document["text"]),
                model=str(document["model"]),
                usage=Usage(prompt, completion, total, cached_prompt, cache_creation),
                finish_reason=FinishReason(document["finish_reason"]),
                provider=ProviderKind(provider) if provider is not None else None,
                strategy=RoutingStrategy(document["strategy"]),
                cost_usd=float(document["cost_usd"]),
            )
        except (KeyError, TypeError, ValueError, UnicodeDecodeError) as error:
            raise ValueError(f"unreadable cache entry: {error}") from None


@dataclass
class CacheStats:
    """Counters for metrics; monotonically increasing, read with :meth:`snapshot`.

    Every lookup counts once as a hit, a miss or an error (the store could not answer; the
    call went on uncached). ``coalesced`` counts calls answered by an identical call already
    in flight (single-flight), ``bypassed`` calls that asked not to be answered from the
    cache, ``stored``/``store_errors``/``store_skipped`` what happened to fresh answers
    (skipped: not cacheable, ``no_store``, or too large). ``saved_cost_usd`` sums what the
    answers served without a model call originally cost.
    """

    hits: int = 0
    misses: int = 0
    errors: int = 0
    coalesced: int = 0
    bypassed: int = 0
    stored: int = 0
    store_errors: int = 0
    store_skipped: int = 0
    saved_cost_usd: float = 0.0
    store: CacheStore | None = field(default=None, repr=False)

    def snapshot(self) -> dict[str, float]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "errors": self.errors,
            "coalesced": self.coalesced,
            "bypassed": self.bypassed,
            "stored": self.stored,
            "store_errors": self.store_errors,
            "store_skipped": self.store_skipped,
            "evictions": self.store.evictions if self.store is not None else 0,
            "saved_cost_usd": self.saved_cost_usd,
        }


class Flight:
    """One model call in progress that identical concurrent calls wait on.

    The leader ends it with :meth:`complete` (followers get the answer) or :meth:`abandon`
    (it failed or was cancelled: followers get ``None`` and try again themselves, since the
    leader's failure may be its own: its deadline, its cancellation).
    """

    def __init__(self, key: str, flights: dict[str, Flight]) -> None:
        self.key = key
        self._flights = flights
        self._result: asyncio.Future[CachedAnswer | None] = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        return self._result.done()

    def _end(self, answer: CachedAnswer | None) -> None:
        if self._flights.get(self.key) is self:
            del self._flights[self.key]
        if not self._result.done():
            self._result.set_result(answer)

    def complete(self, answer: CachedAnswer) -> None:
        self._end(answer)

    def abandon(self) -> None:
        self._end(None)

    async def wait(self) -> CachedAnswer | None:
        # Shielded: a follower's cancellation must not cancel the shared future.
        return await asyncio.shield(self._result)


class ResponseCache:
    """A :class:`CacheStore` plus keys, counters and single-flight."""

    def __init__(self, store: CacheStore, *, default_strategy: RoutingStrategy) -> None:
        self.store = store
        self.stats = CacheStats(store=store)
        self._default_strategy = default_strategy
        self._flights: dict[str, Flight] = {}

    def key_for(self, request: GenerationRequest) -> str:
        return cache_key(request, self._default_strategy)

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (is the first)."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight, False
        flight = Flight(key, self._flights)
        self._flights[key] = flight
        return flight, True

    async def lookup(self, key: str) -> CachedAnswer | None:
        try:
            data = await self.store.get(key)
        except CacheStoreError:
            self.stats.errors += 1
            return None
        if data is None:
            self.stats.misses += 1
            return None
        try:
            answer = CachedAnswer.from_bytes(data)
        except ValueError as error:
            log.warning("response cache: ignoring entry %s…: %s", key[:12], error)
            self.stats.errors += 1
            return None
        self.stats.hits += 1
        return answer

    async def save(self, key: str, answer: CachedAnswer) -> None:
        if not answer.cacheable:
            self.stats.store_skipped += 1
            return
        try:
            stored = await self.store.set(key, answer.to_bytes())
        except CacheStoreError:
            self.stats.store_errors += 1
            return
        if stored:
            self.stats.stored += 1
        else:
            self.stats.store_skipped += 1

    async def close(self) -> None:
        for flight in list(self._flights.values()):
            flight.abandon()
        await self.store.close()
