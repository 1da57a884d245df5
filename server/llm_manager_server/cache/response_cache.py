"""The response cache in front of the router: lookups, stores, single-flight and counters.

Lookups and stores never fail a call: a store error is logged by the store, counted here and
treated as a miss (or a skipped store). Only complete successful answers are stored (finish
reason STOP or LENGTH); errors, cut or cancelled streams and filtered answers never are.

Scope: with API keys on, an answer is stored and found under its caller's name (and
single-flight joins only the same caller's calls), so no caller is served another's answer.
``LLM_CACHE_SHARED_ACROSS_CALLERS=true`` shares answers between callers whose keys allow the
same models (a caller limited to some models is never handed an answer of another model).
"""

from __future__ import annotations

import asyncio
import functools
import base64
import binascii
import json
from array import array
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from ..domain.call_context import deadline_exceeded
from ..domain.caller import Caller, caller_var
from ..domain.embeddings import EmbeddingRequest, Embeddings
from ..domain.types import Answer, CallMetadata, FinishReason, GenerationRequest, ProviderKind, RoutingStrategy, StreamDelta, ToolCall, Usage
from .keys import KEY_VERSION, cache_key, embedding_cache_key
from .stores import CacheStore, CacheStoreError

log = logging.getLogger(__name__)

# A cached result of any kind, and one that carries a cost and metadata (replayed at no cost).
Value = TypeVar("Value")
Cached = TypeVar("Cached", Answer, Embeddings)

# Complete answers: the model stopped by itself, at the caller's max_tokens, or to call tools.
CACHEABLE_FINISH_REASONS = frozenset({FinishReason.STOP, FinishReason.LENGTH, FinishReason.TOOL_CALLS})
# A cached answer replayed as a stream goes out in pieces of this many characters.
CACHED_STREAM_CHUNK_CHARS = 512


def cacheable(answer: Answer) -> bool:
    return answer.finish_reason in CACHEABLE_FINISH_REASONS


def answer_to_bytes(answer: Answer) -> bytes:
    """A complete answer as stored: what the model said and how it was produced."""
    usage = answer.usage
    document = {
        "version": KEY_VERSION,
        "text": answer.text,
        "model": answer.model,
        "usage": [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens, usage.cached_prompt_tokens, usage.cache_creation_tokens],
        "finish_reason": answer.finish_reason.value,
        "tool_calls": [[c.id, c.name, c.arguments] for c in answer.tool_calls],
        "structured_output": answer.structured_output,
        "provider": answer.metadata.provider.value if answer.metadata.provider else None,
        "strategy": answer.metadata.strategy.value,
        # What the original call cost; reported as savings, never billed again.
        "cost_usd": answer.cost_usd,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def answer_from_bytes(data: bytes) -> Answer:
    """A stored answer (its ``cost_usd`` the original call's); raises ``ValueError`` for
    anything this version did not write."""
    try:
        document: dict[str, Any] = json.loads(data)
        if document.get("version") != KEY_VERSION:
            raise ValueError(f"entry version {document.get('version')!r}")
        prompt, completion, total, cached_prompt, cache_creation = (int(n) for n in document["usage"])
        provider = document["provider"]
        structured = document["structured_output"]
        calls = tuple(ToolCall(str(i), str(n), dict(a)) for i, n, a in document["tool_calls"])
        return Answer(
            text=str(document["text"]),
            model=str(document["model"]),
            usage=Usage(prompt, completion, total, cached_prompt, cache_creation),
            finish_reason=FinishReason(document["finish_reason"]),
            tool_calls=calls,
            structured_output=dict(structured) if structured is not None else None,
            cost_usd=float(document["cost_usd"]),
            metadata=CallMetadata(
                provider=ProviderKind(provider) if provider is not None else None, strategy=RoutingStrategy(document["strategy"])
            ),
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


class Flight(Generic[Value]):
    """One model call in progress that identical concurrent calls wait on.

    The leader ends it with :meth:`complete` (followers get the result) or :meth:`abandon`
    (it failed or was cancelled: followers get ``None`` and try again themselves, since the
    leader's failure may be its own: its deadline, its cancellation).
    """

    def __init__(self, key: str, flights: dict[str, Flight[Any]]) -> None:
        self.key = key
        self._flights = flights
        self._result: asyncio.Future[Value | None] = asyncio.get_running_loop().create_future()

    @property
    def done(self) -> bool:
        return self._result.done()

    def _end(self, result: Value | None) -> None:
        if self._flights.get(self.key) is self:
            del self._flights[self.key]
        if not self._result.done():
            self._result.set_result(result)

    def complete(self, result: Value) -> None:
        self._end(result)

    def abandon(self) -> None:
        self._end(None)

    async def wait(self) -> Value | None:
        # Shielded: a follower's cancellation must not cancel the shared future.
        return await asyncio.shield(self._result)


# Embeddings with more numbers than this are encoded off the event loop (the cache entry, the
# HTTP reply): 2048 x 1536 of them take seconds of base64 and JSON, a stall for every other call.
LARGE_EMBEDDINGS_FLOATS = 65_536
# Cache entries larger than this are decoded off the event loop.
OFF_LOOP_ENTRY_BYTES = 1 << 19


def large_embeddings(embeddings: Embeddings) -> bool:
    return sum(len(vector) for vector in embeddings.vectors) > LARGE_EMBEDDINGS_FLOATS


def _never(_: object) -> bool:
    return False


@dataclass(frozen=True)
class Codec(Generic[Value]):
    """How one kind of cached result is stored: bytes each way, whether it may be, and
    whether it is large enough to encode in a thread."""

    encode: Callable[[Value], bytes]
    decode: Callable[[bytes], Value]
    cacheable: Callable[[Value], bool]
    large: Callable[[Value], bool] = _never


ANSWERS: Codec[Answer] = Codec(answer_to_bytes, answer_from_bytes, cacheable)


def embeddings_to_bytes(embeddings: Embeddings) -> bytes:
    """Vectors as stored: each one's float64s, base64 (exact, and a third of their JSON size)."""
    usage = embeddings.usage
    document = {
        "version": KEY_VERSION,
        "kind": "embeddings",
        "model": embeddings.model,
        "usage": [usage.prompt_tokens, usage.total_tokens],
        "vectors": [base64.b64encode(array("d", vector).tobytes()).decode("ascii") for vector in embeddings.vectors],
        "provider": embeddings.metadata.provider.value if embeddings.metadata.provider else None,
        "strategy": embeddings.metadata.strategy.value,
        "cost_usd": embeddings.cost_usd,
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def embeddings_from_bytes(data: bytes) -> Embeddings:
    """Stored vectors; raises ``ValueError`` for anything this version did not write."""
    try:
        document: dict[str, Any] = json.loads(data)
        if document.get("version") != KEY_VERSION or document.get("kind") != "embeddings":
            raise ValueError(f"entry version {document.get('version')!r} kind {document.get('kind')!r}")
        prompt, total = (int(n) for n in document["usage"])
        provider = document["provider"]
        return Embeddings(
            vectors=[array("d", base64.b64decode(text, validate=True)).tolist() for text in document["vectors"]],
            model=str(document["model"]),
            usage=Usage(prompt_tokens=prompt, total_tokens=total),
            cost_usd=float(document["cost_usd"]),
            metadata=CallMetadata(provider=ProviderKind(provider) if provider is not None else None, strategy=RoutingStrategy(document["strategy"])),
        )
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, binascii.Error) as error:
        raise ValueError(f"unreadable cache entry: {error}") from None


# Every embedding result is complete: there is no partial or filtered one.
EMBEDDINGS: Codec[Embeddings] = Codec(embeddings_to_bytes, embeddings_from_bytes, lambda _: True, large_embeddings)


@functools.lru_cache(maxsize=4096)
def _scope_of(caller: Caller, shared_across_callers: bool) -> str:
    models = "" if caller.models is None else "models:" + ",".join(sorted(caller.models))
    return models if shared_across_callers else f"caller:{caller.name}|{models}"


class ResponseCache:
    """A :class:`CacheStore` plus keys, counters and single-flight."""

    def __init__(self, store: CacheStore, *, default_strategy: RoutingStrategy, shared_across_callers: bool = False) -> None:
        self.store = store
        self.stats = CacheStats(store=store)
        self._default_strategy = default_strategy
        self._shared_across_callers = shared_across_callers
        self._flights: dict[str, Flight[Any]] = {}

    def scope(self) -> str:
        """The calling caller's share of the cache: ``""`` with authentication off (one
        scope); the caller's name and the models its key allows; or, shared across callers,
        only those models. The models are part of it so that a key whose list an operator
        shortens is never served an answer (from a shared Redis, say) of a model it lost."""
        caller = caller_var.get()
        if caller is None:
            return ""
        return _scope_of(caller, self._shared_across_callers)

    def key_for(self, request: GenerationRequest) -> str:
        return cache_key(request, self._default_strategy, self.scope())

    async def embeddings(self, request: EmbeddingRequest, compute: Callable[[], Awaitable[Embeddings]], deadline: float) -> Embeddings:
        """``request``'s vectors with the policy of :meth:`answer`: keyed by the model and the
        inputs in order (``request.model`` already resolved), in the caller's scope; a hit costs nothing upstream and
        reports the original model and usage with ``cost_usd`` 0 and ``metadata.cached``."""
        return await self._through(embedding_cache_key(request, self.scope()), request.no_cache, request.no_store, compute, EMBEDDINGS, deadline)

    def join(self, key: str) -> tuple[Flight[Any], bool]:
        """The flight for ``key`` and whether the caller leads it (is the first). (Keys of
        different kinds of results hash different documents, so a flight holds one kind.)"""
        flight = self._flights.get(key)
        if flight is not None:
            return flight, False
        flight = Flight[Any](key, self._flights)
        self._flights[key] = flight
        return flight, True

    async def lookup(self, key: str) -> Answer | None:
        return await self._lookup(key, ANSWERS)

    async def save(self, key: str, answer: Answer) -> None:
        await self._save(key, answer, ANSWERS)

    async def _lookup(self, key: str, codec: Codec[Value]) -> Value | None:
        try:
            data = await self.store.get(key)
        except CacheStoreError:
            self.stats.errors += 1
            return None
        if data is None:
            self.stats.misses += 1
            return None
        try:
            found = await asyncio.to_thread(codec.decode, data) if len(data) > OFF_LOOP_ENTRY_BYTES else codec.decode(data)
        except ValueError as error:
            log.warning("response cache: ignoring entry %s…: %s", key[:12], error)
            self.stats.errors += 1
            return None
        self.stats.hits += 1
        return found

    async def _save(self, key: str, result: Value, codec: Codec[Value]) -> None:
        if not codec.cacheable(result):
            self.stats.store_skipped += 1
            return
        try:
            data = await asyncio.to_thread(codec.encode, result) if codec.large(result) else codec.encode(result)
            stored = await self.store.set(key, data)
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

    # --- the policy: one home for what is served from the cache and what is stored ------------

    def _replayed(self, result: Cached) -> Cached:
        """A result served without a model call: as originally produced, but this call
        spent nothing (the original cost is counted as saved)."""
        self.stats.saved_cost_usd += result.cost_usd
        original = result.metadata
        return replace(
            result,
            cost_usd=0.0,
            metadata=CallMetadata(
                cached=True,
                provider=original.provider,
                strategy=original.strategy,
                routing_reason=f"answered from the response cache (originally by {result.model})",
            ),
        )

    async def _store(self, key: str, no_store: bool, result: Value, codec: Codec[Value]) -> None:
        if no_store:
            self.stats.store_skipped += 1
        else:
            await self._save(key, result, codec)

    async def _follow(self, flight: Flight[Value], deadline: float) -> Value | None:
        try:
            async with asyncio.timeout_at(deadline):
                return await flight.wait()
        except TimeoutError:
            raise deadline_exceeded("an identical call in flight answered") from None

    async def answer(self, request: GenerationRequest, compute: Callable[[], Awaitable[Answer]], deadline: float) -> Answer:
        """The answer to ``request``: from the cache when it can, else ``compute``'s.

        Identical concurrent requests reach the model once (single-flight): the first leads,
        the others wait for its answer; if the leader fails or is cancelled they try again
        themselves. ``no_cache`` requests neither read the cache nor join a flight; ``no_store``
        answers are not stored. Only complete answers are stored. An answer served without a
        model call reports the original text, tool calls, model, finish reason and usage (the
        provider's counts for the original call: never invented), ``cost_usd`` 0,
        ``metadata.cached`` true, no model chain or candidates, and a ``routing_reason`` naming
        the model that produced it."""
        return await self._through(self.key_for(request), request.no_cache, request.no_store, compute, ANSWERS, deadline)

    async def _through(
        self, key: str, no_cache: bool, no_store: bool, compute: Callable[[], Awaitable[Cached]], codec: Codec[Cached], deadline: float
    ) -> Cached:
        """The policy of :meth:`answer` for any kind of cached result."""
        if no_cache:
            self.stats.bypassed += 1
            fresh = await compute()
            await self._store(key, no_store, fresh, codec)
            return fresh
        flight: Flight[Cached]
        while True:
            flight, leading = self.join(key)
            if not leading:
                shared = await self._follow(flight, deadline)
                if shared is None:
                    continue  # the leader failed: look again, lead or follow a new leader
                self.stats.coalesced += 1
                return self._replayed(shared)
            try:
                hit = await self._lookup(key, codec)
                if hit is not None:
                    flight.complete(hit)
                    return self._replayed(hit)
                fresh = await compute()
                await self._store(key, no_store, fresh, codec)
                flight.complete(fresh)
                return fresh
            finally:
                flight.abandon()  # no-op once completed; frees followers on failure

    def _replay_stream(self, answer: Answer) -> list[StreamDelta]:
        replayed = self._replayed(answer)
        text = replayed.text
        pieces = [StreamDelta(text=text[i : i + CACHED_STREAM_CHUNK_CHARS], model=answer.model) for i in range(0, len(text), CACHED_STREAM_CHUNK_CHARS)]
        if replayed.tool_calls:
            pieces.append(StreamDelta(model=answer.model, tool_calls=replayed.tool_calls))
        pieces.append(StreamDelta(model=answer.model, answer=replayed))
        return pieces

    async def stream(
        self, request: GenerationRequest, produce: Callable[[], AsyncIterator[StreamDelta]], deadline: float
    ) -> AsyncIterator[StreamDelta]:
        """``request`` answered as a stream, with the policy of :meth:`answer`: a cached or
        shared answer is replayed (text in pieces, then its tool calls, then the answer); a
        fresh stream passes through and is stored once it ended normally (a cut or cancelled
        one raised before that)."""
        key = self.key_for(request)
        if request.no_cache:
            self.stats.bypassed += 1
            async for delta in produce():
                if delta.answer is not None:
                    await self._store(key, request.no_store, delta.answer, ANSWERS)
                yield delta
            return
        while True:
            flight, leading = self.join(key)
            if not leading:
                shared = await self._follow(flight, deadline)
                if shared is None:
                    continue
                self.stats.coalesced += 1
                for delta in self._replay_stream(shared):
                    yield delta
                return
            try:
                hit = await self.lookup(key)
                if hit is not None:
                    flight.complete(hit)
                    for delta in self._replay_stream(hit):
                        yield delta
                    return
                async for delta in produce():
                    if delta.answer is not None:
                        await self._store(key, request.no_store, delta.answer, ANSWERS)
                        flight.complete(delta.answer)
                    yield delta
                return
            finally:
                flight.abandon()
