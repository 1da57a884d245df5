"""The engine's one hook for callers' usage: admit a call against its caller's limits before
the router is asked, book its usage (limits and ledger) once it is answered. Generations
(``Generator``) and embeddings (``Embedder``) are booked alike."""

from __future__ import annotations

from ..domain.caller import Caller, caller_var
from ..domain.embeddings import Embeddings
from ..domain.types import Answer
from .ledger import UsageLedger
from .limits import Limiter


class UsageMeter:
    def __init__(self, limiter: Limiter | None, ledger: UsageLedger | None) -> None:
        self._limiter = limiter
        self._ledger = ledger

    @property
    def ledger(self) -> UsageLedger | None:
        return self._ledger

    async def admit(self) -> Caller | None:
        """The calling caller (``None``: authentication off), admitted; raises QUOTA_EXCEEDED
        when it is over a limit."""
        caller = caller_var.get()
        if caller is not None and self._limiter is not None:
            await self._limiter.admit(caller)
        return caller

    async def book(self, caller: Caller | None, answer: Answer | Embeddings) -> None:
        """Books an answered call. A cache hit spent no tokens or money upstream: it counts as a
        request and a cache hit only (its usage is the original call's, booked back then)."""
        hit = answer.metadata.cached
        prompt, completion = (0, 0) if hit else (answer.usage.prompt_tokens, answer.usage.completion_tokens)
        cost = 0.0 if hit else answer.cost_usd
        if self._ledger is not None:
            self._ledger.book("" if caller is None else caller.name, answer.model, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, cache_hit=hit)
        if caller is not None and self._limiter is not None:
            await self._limiter.book(caller, prompt + completion, cost)

    def book_cut(self, caller: Caller | None, model: str) -> None:
        """Books a stream that started (``model`` answering) but ended without its final answer:
        a request with no usage, since providers report usage only at a stream's end. No await,
        so it runs in a stream's ``finally`` even when the caller has gone."""
        if self._ledger is not None:
            self._ledger.book("" if caller is None else caller.name, model, prompt_tokens=0, completion_tokens=0, cost_usd=0.0, cache_hit=False)
