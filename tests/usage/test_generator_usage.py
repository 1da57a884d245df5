"""The engine's usage hook (``Generator`` with a ``UsageMeter``) in front of a fake router:
admission before the router is asked, booking of answers, of streams (before their final
delta goes out; a cut stream as a request without usage), of cache hits, and of attempts
rejected but charged upstream."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from llm_manager_server.cache import MemoryCacheStore, ResponseCache
from llm_manager_server.conversations import MemoryConversationStore
from llm_manager_server.domain.caller import Caller, caller_var
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import Answer, BilledAttempt, CallMetadata, RoutingStrategy, Usage
from llm_manager_server.engine import Generator
from llm_manager_server.usage import Limiter, MemoryLimitStore, UsageLedger, UsageMeter, UsageRow, utc_day

from ..storage.fake_router import COST, MODEL, USAGE, FakeRouter
from ..storage.test_generator_cache import request

T = TypeVar("T")


async def as_caller(caller: Caller | None, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Runs ``work`` as the call gate would after authenticating ``caller``: in a context
    whose ``caller_var`` names it."""
    context = contextvars.copy_context()
    context.run(caller_var.set, caller)
    return await asyncio.get_running_loop().create_task(work(), context=context)


async def rows(ledger: UsageLedger, caller: str) -> list[tuple[int, int, int, float, int]]:
    return [(r.requests, r.prompt_tokens, r.completion_tokens, r.cost_usd, r.cache_hits) for r in await ledger.read(caller, first_day=None, last_day=None, model=None)]


@pytest.fixture
def ledger() -> UsageLedger:
    return UsageLedger(MemoryConversationStore())


def generator(router: FakeRouter, ledger: UsageLedger, *, cached: bool = False) -> Generator:
    cache = ResponseCache(MemoryCacheStore(max_entries=10, max_bytes=1 << 20, ttl_s=60), default_strategy=RoutingStrategy.BALANCED) if cached else None
    return Generator(router, cache, UsageMeter(Limiter(MemoryLimitStore()), ledger))


async def test_a_caller_over_its_limit_is_refused_before_the_router_is_asked(ledger: UsageLedger) -> None:
    router = FakeRouter()
    engine = generator(router, ledger)
    caller = Caller("dashboards", requests_per_minute=1)
    await as_caller(caller, lambda: engine.generate(request()))
    with pytest.raises(LLMError) as raised:
        await as_caller(caller, lambda: engine.generate(request()))
    assert raised.value.kind is ErrorKind.QUOTA_EXCEEDED

    async def stream() -> None:
        async for _ in engine.stream(request()):
            pass

    with pytest.raises(LLMError):
        await as_caller(caller, stream)
    assert router.calls == 1
    assert await rows(ledger, "dashboards") == [(1, USAGE.prompt_tokens, USAGE.completion_tokens, COST, 0)]


async def test_a_stream_is_booked_before_its_final_delta_and_a_cut_one_as_a_request_without_usage(ledger: UsageLedger) -> None:
    router = FakeRouter()
    engine = generator(router, ledger)

    async def whole() -> list[tuple[int, int, int, float, int]]:
        async for delta in engine.stream(request()):
            if delta.answer is not None:
                return await rows(ledger, "alice")  # what the ledger holds as the last delta arrives
        raise AssertionError("no final delta")

    assert await as_caller(Caller("alice"), whole) == [(1, USAGE.prompt_tokens, USAGE.completion_tokens, COST, 0)]
    router.cut_after = 2

    async def cut() -> None:
        async for _ in engine.stream(request()):
            pass

    with pytest.raises(LLMError):
        await as_caller(Caller("alice"), cut)
    assert await rows(ledger, "alice") == [(2, USAGE.prompt_tokens, USAGE.completion_tokens, COST, 0)]
    # A failure before any output books nothing.
    router.error = LLMError(ErrorKind.MODEL_UNAVAILABLE, "down")
    with pytest.raises(LLMError):
        await as_caller(Caller("alice"), cut)
    assert (await rows(ledger, "alice"))[0][0] == 2


async def test_cache_hits_are_requests_and_hits_without_tokens_or_cost(ledger: UsageLedger) -> None:
    router = FakeRouter()
    engine = generator(router, ledger, cached=True)
    await as_caller(None, lambda: engine.generate(request()))
    hit = await as_caller(None, lambda: engine.generate(request()))

    async def streamed() -> None:
        async for _ in engine.stream(request()):
            pass

    await as_caller(None, streamed)
    assert hit.metadata.cached and router.calls == 1
    # Authentication off: the anonymous caller "".
    assert await ledger.read("", first_day=None, last_day=None, model=None) == [
        UsageRow("", utc_day(time.time()), MODEL, 3, USAGE.prompt_tokens, USAGE.completion_tokens, COST, 2)
    ]


class RejectingFirstRouter(FakeRouter):
    """Answers after one rejected-but-charged attempt of another model (a fallback)."""

    def _answer(self, metadata: CallMetadata) -> Answer:
        metadata.billed_attempts.append(BilledAttempt(OTHER, REJECTED, REJECTED_COST))
        return super()._answer(metadata)


OTHER = "other-model"
REJECTED = Usage(prompt_tokens=100, completion_tokens=40, total_tokens=140)
REJECTED_COST = 0.001


async def test_rejected_but_charged_attempts_are_booked_under_their_model_once_and_not_on_a_cache_hit(ledger: UsageLedger) -> None:
    router = RejectingFirstRouter()
    engine = generator(router, ledger, cached=True)
    caller = Caller("etl", tokens_per_minute=USAGE.total_tokens + REJECTED.total_tokens + 1)
    answer = await as_caller(caller, lambda: engine.generate(request()))
    assert answer.usage == USAGE and answer.cost_usd == COST  # the answering model's own
    hit = await as_caller(caller, lambda: engine.generate(request()))  # one token under the limit
    assert hit.metadata.cached and not hit.metadata.billed_attempts and router.calls == 1
    by_model = {r.model: (r.requests, r.prompt_tokens, r.completion_tokens, r.cost_usd, r.cache_hits) for r in await ledger.read("etl", first_day=None, last_day=None, model=None)}
    assert by_model == {MODEL: (2, USAGE.prompt_tokens, USAGE.completion_tokens, COST, 1), OTHER: (0, REJECTED.prompt_tokens, REJECTED.completion_tokens, REJECTED_COST, 0)}
    # A failed call's charged attempts spend the limit too: the next call is refused.
    router.error = LLMError(ErrorKind.INVALID_MODEL_OUTPUT, "no model gave a valid answer", billed_attempts=[BilledAttempt(OTHER, REJECTED, REJECTED_COST)])
    with pytest.raises(LLMError) as failed:
        await as_caller(caller, lambda: engine.generate(request(no_cache=True)))
    assert failed.value.kind is ErrorKind.INVALID_MODEL_OUTPUT
    with pytest.raises(LLMError) as refused:
        await as_caller(caller, lambda: engine.generate(request(no_cache=True)))
    assert refused.value.kind is ErrorKind.QUOTA_EXCEEDED and router.calls == 2
    assert (await ledger.read("etl", first_day=None, last_day=None, model=OTHER))[0].prompt_tokens == 2 * REJECTED.prompt_tokens
