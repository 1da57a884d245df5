"""The usage ledger: every answered call's usage and cost, per caller, model and UTC day.

Rows live in the conversation database (``usage_ledger`` table, created by each store's
migrations: SQLite, PostgreSQL, or memory), so replicas sharing PostgreSQL share the ledger.

Calls are summed in this process and written every ``flush_interval_s`` (and on shutdown) as
one increment per (caller, day, model): a durable write per call would cost every call a
disk sync (SQLite) or a round trip (PostgreSQL). The cost of that choice: a crash loses at
most the last interval's bookings, and another replica sees a call at most one interval
late. This process's own reads include what is not yet written, so a caller sees its call at
once. A failed write keeps the rows for the next flush (logged once per failure streak).

What is booked (``book``):
- an answered call: one request, the provider's prompt and completion tokens, the price
  table's cost;
- a cache hit (a stored or coalesced answer): one request and one cache hit, with zero tokens
  and zero cost: nothing was asked upstream (the answer's usage is the original call's, booked
  when it was made);
- a stream cut after it started (failure or cancellation): one request with whatever usage
  was reported, which is none (providers report usage only in a stream's final event), so the
  upstream's charge for a cut stream's tokens cannot be booked;
- an attempt a provider answered in full whose answer the router rejected (structured output
  or tool arguments that did not validate), in an answered or a failed call: its tokens and
  cost under its own model, without a request (``requests`` counts calls, each under the
  model that answered it). Upstream charged for it, so limits and the ledger see it;
- calls refused or failed without such an attempt: nothing.
With authentication off the caller is ``""`` (anonymous), booked like any other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Protocol

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One caller's usage of one model on one UTC day (``day``: ``YYYY-MM-DD``)."""

    caller: str
    day: str
    model: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    cache_hits: int = 0

    def plus(self, other: UsageRow) -> UsageRow:
        return replace(
            self,
            requests=self.requests + other.requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            cache_hits=self.cache_hits + other.cache_hits,
        )


class UsageStore(Protocol):
    """Where rows are kept: the conversation stores implement it on their own database."""

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        """Adds each row's counts to its (caller, day, model) row, in one transaction."""
        ...

    async def read_usage(self, caller: str, *, first_day: str | None, last_day: str | None, model: str | None) -> list[UsageRow]:
        """``caller``'s rows, days inclusive (``None``: unbounded), ordered by day then model."""
        ...


def selected(row: UsageRow, caller: str, first_day: str | None, last_day: str | None, model: str | None) -> bool:
    """Whether ``row`` is in a ``read_usage`` answer (days inclusive, ``None``: unbounded)."""
    return (
        row.caller == caller
        and (first_day is None or row.day >= first_day)
        and (last_day is None or row.day <= last_day)
        and (model is None or row.model == model)
    )


def utc_day(now: float) -> str:
    return datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%d")


def merge(rows: Sequence[UsageRow]) -> list[UsageRow]:
    """Rows summed per (caller, day, model), ordered by day then model."""
    merged: dict[tuple[str, str, str], UsageRow] = {}
    for row in rows:
        key = (row.caller, row.day, row.model)
        found = merged.get(key)
        merged[key] = row if found is None else found.plus(row)
    return sorted(merged.values(), key=lambda r: (r.day, r.model, r.caller))


class UsageLedger:
    def __init__(self, store: UsageStore, *, flush_interval_s: float = FLUSH_INTERVAL_S, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._flush_interval_s = flush_interval_s
        self._clock = clock
        self._pending: dict[tuple[str, str, str], UsageRow] = {}
        self._task: asyncio.Task[None] | None = None
        # Set by close(): the flush loop ends between flushes, never in one (a flush cancelled
        # while the store writes would lose its rows, or write them twice).
        self._stopping = asyncio.Event()
        self._failing = False
        self._lock = asyncio.Lock()

    def book(
        self, caller: str, model: str, *, prompt_tokens: int, completion_tokens: int, cost_usd: float, cache_hit: bool, requests: int = 1
    ) -> None:
        """Adds one call, or a rejected attempt's usage (``requests=0``); no await: safe in a
        stream's ``finally``."""
        day = utc_day(self._clock())
        key = (caller, day, model)
        row = UsageRow(caller, day, model, requests, prompt_tokens, completion_tokens, cost_usd, int(cache_hit))
        found = self._pending.get(key)
        self._pending[key] = row if found is None else found.plus(row)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-ledger-flush")

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), self._flush_interval_s)
            except TimeoutError:
                await self.flush()

    async def flush(self) -> None:
        """Writes what is pending; on failure keeps it for the next flush."""
        async with self._lock:
            if not self._pending:
                return
            writing, self._pending = list(self._pending.values()), {}
            try:
                await self._store.add_usage(writing)
            except Exception as error:  # noqa: BLE001 - any store failure: keep the rows, try again
                if not self._failing:
                    log.warning("usage ledger: writing %d rows failed (%s); keeping them for the next flush", len(writing), error)
                self._failing = True
                for row in writing:
                    key = (row.caller, row.day, row.model)
                    found = self._pending.get(key)
                    self._pending[key] = row if found is None else row.plus(found)
            else:
                if self._failing:
                    log.info("usage ledger: writing rows works again")
                self._failing = False

    async def read(self, caller: str, *, first_day: str | None, last_day: str | None, model: str | None) -> list[UsageRow]:
        """``caller``'s rows: stored plus this process's not yet written."""
        # A flush moves rows from ``_pending`` into the store: the lock keeps one from
        # running between the two reads (a row would be counted twice or not at all).
        async with self._lock:
            unwritten = [row for row in self._pending.values() if selected(row, caller, first_day, last_day, model)]
            stored = await self._store.read_usage(caller, first_day=first_day, last_day=last_day, model=model)
        return merge([*stored, *unwritten])

    async def close(self) -> None:
        if self._task is not None:
            self._stopping.set()
            await self._task  # a flush under way finishes first
            self._task = None
        await self.flush()
