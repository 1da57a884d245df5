"""The engine's one hook for callers' usage: admit a call against its caller's limits before
the router is asked, book its usage (limits and ledger) once it is answered. Generations
(``Generator``) and embeddings (``Embedder``) are booked alike.

What a call owes is its answer's usage plus that of every attempt a provider answered in full
but the router rejected (``CallMetadata.billed_attempts``, or ``LLMError.billed_attempts``
when the call failed): upstream charged for those too, so a request that keeps drawing invalid
structured output spends the caller's tokens per minute and budget like any other."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..domain.caller import Caller, caller_var
from ..domain.embeddings import Embeddings
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Answer, BilledAttempt
from .ledger import UsageLedger
from .limits import Limiter, has_limits

# Refusals of the router's plan that no later state of the models turns into an answer: about
# the request or the caller (a model it may not use, none able to serve it, too large a prompt).
PLAN_REFUSALS = frozenset({ErrorKind.PERMISSION_DENIED, ErrorKind.CONFIGURATION_ERROR, ErrorKind.CONTEXT_TOO_LARGE, ErrorKind.INVALID_REQUEST})


class UsageMeter:
    def __init__(self, limiter: Limiter | None, ledger: UsageLedger | None) -> None:
        self._limiter = limiter
        self._ledger = ledger

    @property
    def ledger(self) -> UsageLedger | None:
        return self._ledger

    async def admit(self, plan: Callable[[], object] | None = None) -> Caller | None:
        """The calling caller (``None``: authentication off), admitted; raises QUOTA_EXCEEDED
        when it is over a limit. ``plan`` (the router's plan of the call) runs first when the
        call would be counted, so a call the plan refuses (:data:`PLAN_REFUSALS`) spends no
        request; an unlimited caller pays nothing for it. A plan that finds no model available
        now lets the call go on, counted: a cache hit may still answer it."""
        caller = caller_var.get()
        if caller is not None and self._limiter is not None:
            if plan is not None and has_limits(caller):
                try:
                    plan()
                except LLMError as error:
                    if error.kind in PLAN_REFUSALS:
                        raise
            await self._limiter.admit(caller)
        return caller

    async def book(self, caller: Caller | None, answer: Answer | Embeddings) -> None:
        """Books an answered call. A cache hit spent no tokens or money upstream: it counts as a
        request and a cache hit only (its usage is the original call's, booked back then)."""
        hit = answer.metadata.cached
        prompt, completion = (0, 0) if hit else (answer.usage.prompt_tokens, answer.usage.completion_tokens)
        cost = 0.0 if hit else answer.cost_usd
        if self._ledger is not None:
            self._ledger.book(_name(caller), answer.model, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, cache_hit=hit)
        await self._book_rejected(caller, () if hit else answer.metadata.billed_attempts, prompt + completion, cost)

    async def book_failed(self, caller: Caller | None, error: LLMError) -> None:
        """Books a failed call's rejected-but-charged attempts (nothing when it had none)."""
        await self._book_rejected(caller, error.billed_attempts, 0, 0.0)

    async def _book_rejected(self, caller: Caller | None, attempts: Sequence[BilledAttempt], tokens: int, cost: float) -> None:
        """Books ``attempts`` in the ledger, each under its model, and sends the limits their
        usage plus ``tokens`` and ``cost`` (the answer's) in one booking."""
        for attempt in attempts:
            usage = attempt.usage
            if self._ledger is not None:
                self._ledger.book(
                    _name(caller),
                    attempt.model,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cost_usd=attempt.cost_usd,
                    cache_hit=False,
                    requests=0,
                )
            tokens += usage.prompt_tokens + usage.completion_tokens
            cost += attempt.cost_usd
        if caller is not None and self._limiter is not None:
            await self._limiter.book(caller, tokens, cost)

    def book_cut(self, caller: Caller | None, model: str) -> None:
        """Books a stream that started (``model`` answering) but ended without its final answer:
        a request with no usage, since providers report usage only at a stream's end. No await,
        so it runs in a stream's ``finally`` even when the caller has gone."""
        if self._ledger is not None:
            self._ledger.book(_name(caller), model, prompt_tokens=0, completion_tokens=0, cost_usd=0.0, cache_hit=False)


def _name(caller: Caller | None) -> str:
    return "" if caller is None else caller.name
