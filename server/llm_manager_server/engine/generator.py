"""Answers a validated request within the call's deadline: through the response cache's policy
(``ResponseCache.answer`` / ``.stream``) when there is a cache, else straight from the router.

With a ``UsageMeter`` every call is admitted against its caller's limits before the router is
asked, and its usage booked once answered (a stream's from its final delta's answer, booked
before that delta goes out; a stream cut after it started is booked as a request without usage).
A failed call books what its rejected-but-charged attempts cost (``LLMError.billed_attempts``).
A call the router's plan refuses (a model the caller may not use, none able to serve it, a
prompt too large for every window) is refused before it is admitted: it spends no request."""

from __future__ import annotations

from collections.abc import Callable, AsyncGenerator, AsyncIterator

from opentelemetry import trace

from .. import genai
from ..cache import ResponseCache
from ..domain.call_context import deadline_var
from ..domain.errors import LLMError
from ..domain.types import Answer, GenerationRequest, StreamDelta
from ..routing.router import Router
from ..usage.meter import UsageMeter

class Generator:
    def __init__(self, router: Router, cache: ResponseCache | None = None, meter: UsageMeter | None = None) -> None:
        self._router = router
        self._cache = cache
        self._meter = meter

    @property
    def cache(self) -> ResponseCache | None:
        return self._cache

    @property
    def router(self) -> Router:
        return self._router

    def context_window(self, request: GenerationRequest) -> int:
        """The context window of the model the router would choose first for ``request``.

        Conversations are trimmed to the chosen model's window, not to the smallest in the
        chain: an analysis conversation answered by Claude keeps 200k tokens of history
        rather than a local model's 4k. A fallback whose window is too small is then skipped
        by the router's context check instead of answering without the history. Raises the
        router's error when no model can serve the request."""
        return self._router.plan(request).candidates[0].context_window

    @staticmethod
    def _mark(answer: Answer) -> Answer:
        if answer.metadata.cached:
            trace.get_current_span().set_attribute(genai.CACHE_HIT, True)
        return answer

    def _refusal_check(self, request: GenerationRequest) -> Callable[[], object] | None:
        """What the meter runs before it counts a limited caller's request, so that a call
        refused anyway spends none: the key's permission for a pinned model. (The whole plan
        would catch more, but costs a limited caller ~130 k instructions a call, ~5 %: a call
        refused later by the plan, e.g. a prompt too large for every window, is counted.)"""
        model = request.model
        return None if not model else lambda: self._router.check_allowed(model)

    async def generate(self, request: GenerationRequest) -> Answer:
        meter = self._meter
        caller = None if meter is None else await meter.admit(self._refusal_check(request))
        deadline = deadline_var.get()
        try:
            if self._cache is None:
                answer = await self._router.generate(request, deadline)
            else:
                answer = self._mark(await self._cache.answer(request, lambda: self._router.generate(request, deadline), deadline))
        except LLMError as error:
            if meter is not None:
                await meter.book_failed(caller, error)
            raise
        if meter is not None:
            await meter.book(caller, answer)
        return answer

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[StreamDelta, None]:
        meter = self._meter
        caller = None if meter is None else await meter.admit(self._refusal_check(request))
        deadline = deadline_var.get()
        if self._cache is None:
            source = self._router.stream(request, deadline)
        else:
            source = self._cache.stream(request, lambda: self._router.stream(request, deadline), deadline)
        started: str | None = None  # the model streaming, once a delta came
        booked = False
        try:
            async for delta in source:
                started = started or delta.model
                if delta.answer is not None:
                    self._mark(delta.answer)
                    if meter is not None:
                        await meter.book(caller, delta.answer)
                    booked = True
                yield delta
        except LLMError as error:
            if meter is not None:
                await meter.book_failed(caller, error)
            raise
        finally:
            if meter is not None and started is not None and not booked:
                meter.book_cut(caller, started)
