"""The usage ledger's rows in every conversation store (memory, SQLite, real PostgreSQL):
increments add up per caller, day and model (also from two replicas at once), reads are
scoped to one caller and a day range; the ledger's buffer is read through before it is written
and kept when a write fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from llm_manager_server.conversations import ConversationStore
from llm_manager_server.usage import UsageLedger, UsageRow
from llm_manager_server.usage.ledger import selected

from .conftest import StoreFactory


def row(caller: str, day: str, model: str, requests: int = 1, prompt: int = 10, completion: int = 5, cost: float = 0.001, hits: int = 0) -> UsageRow:
    return UsageRow(caller, day, model, requests, prompt, completion, cost, hits)


async def test_rows_add_up_per_caller_day_and_model(store: ConversationStore) -> None:
    await store.add_usage([row("a", "2026-12-01", "gpt-4o-mini"), row("a", "2026-12-01", "claude-sonnet-4-5", cost=0.01)])
    await store.add_usage([row("a", "2026-12-01", "gpt-4o-mini", requests=2, prompt=20, completion=10, cost=0.002, hits=1)])
    await store.add_usage([row("a", "2026-12-02", "gpt-4o-mini"), row("b", "2026-12-01", "gpt-4o-mini", requests=7)])
    rows = await store.read_usage("a", first_day=None, last_day=None, model=None)
    assert [(r.day, r.model, r.requests, r.prompt_tokens, r.completion_tokens, r.cache_hits) for r in rows] == [
        ("2026-12-01", "claude-sonnet-4-5", 1, 10, 5, 0),
        ("2026-12-01", "gpt-4o-mini", 3, 30, 15, 1),
        ("2026-12-02", "gpt-4o-mini", 1, 10, 5, 0),
    ]
    assert rows[1].cost_usd == pytest.approx(0.003)
    assert [r.day for r in await store.read_usage("a", first_day="2026-12-02", last_day=None, model=None)] == ["2026-12-02"]
    assert [r.model for r in await store.read_usage("a", first_day=None, last_day="2026-12-01", model="gpt-4o-mini")] == ["gpt-4o-mini"]
    assert [r.requests for r in await store.read_usage("b", first_day=None, last_day=None, model=None)] == [7]
    assert await store.read_usage("c", first_day=None, last_day=None, model=None) == []
    # A caller name is data, never SQL.
    assert await store.read_usage("a' OR '1'='1", first_day=None, last_day=None, model=None) == []


async def test_two_replicas_adding_at_once_lose_nothing(make_store: StoreFactory) -> None:
    first, second = await make_store(), await make_store()
    batch = [row("a", "2026-12-01", "m1"), row("a", "2026-12-01", "m2"), row("b", "2026-12-01", "m1")]
    await asyncio.gather(*(replica.add_usage(batch) for replica in (first, second) for _ in range(10)))
    rows = await second.read_usage("a", first_day=None, last_day=None, model=None)
    assert [(r.model, r.requests, r.prompt_tokens) for r in rows] == [("m1", 20, 200), ("m2", 20, 200)]


class FailingStore:
    """A usage store whose writes fail until ``healthy``."""

    def __init__(self) -> None:
        self.healthy = False
        self.rows: list[UsageRow] = []

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        if not self.healthy:
            raise OSError("database down")
        self.rows.extend(rows)

    async def read_usage(self, caller: str, *, first_day: str | None, last_day: str | None, model: str | None) -> list[UsageRow]:
        return [r for r in self.rows if selected(r, caller, first_day, last_day, model)]


async def test_the_ledger_reads_through_its_buffer_and_keeps_rows_a_failed_write_could_not_store() -> None:
    backing = FailingStore()
    now = [1_764_583_200.0]  # 2025-12-01 10:00 UTC
    ledger = UsageLedger(backing, clock=lambda: now[0])
    ledger.book("a", "m", prompt_tokens=10, completion_tokens=5, cost_usd=0.5, cache_hit=False)
    ledger.book("a", "m", prompt_tokens=0, completion_tokens=0, cost_usd=0.0, cache_hit=True)
    ledger.book("b", "m", prompt_tokens=1, completion_tokens=1, cost_usd=0.1, cache_hit=False)
    expected = [UsageRow("a", "2025-12-01", "m", 2, 10, 5, 0.5, 1)]
    assert await ledger.read("a", first_day=None, last_day=None, model=None) == expected
    await ledger.flush()  # fails: nothing lost
    assert backing.rows == [] and await ledger.read("a", first_day=None, last_day=None, model=None) == expected
    backing.healthy = True
    await ledger.flush()
    assert sorted(r.caller for r in backing.rows) == ["a", "b"]
    now[0] += 86_400
    ledger.book("a", "m", prompt_tokens=3, completion_tokens=4, cost_usd=0.25, cache_hit=False)
    read = await ledger.read("a", first_day="2025-12-02", last_day=None, model=None)
    assert read == [UsageRow("a", "2025-12-02", "m", 1, 3, 4, 0.25, 0)]
    await ledger.close()  # writes the rest
    assert len(backing.rows) == 3


class SlowStore(FailingStore):
    """Writes take a while, as a busy database's do: a shutdown arrives during one."""

    def __init__(self) -> None:
        super().__init__()
        self.healthy = True
        self.writing = asyncio.Event()

    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        self.writing.set()
        await asyncio.sleep(0.2)
        await super().add_usage(rows)


async def test_a_shutdown_during_a_flush_loses_and_doubles_nothing() -> None:
    backing = SlowStore()
    ledger = UsageLedger(backing, flush_interval_s=0.01)
    ledger.book("a", "m", prompt_tokens=10, completion_tokens=5, cost_usd=0.5, cache_hit=False)
    ledger.start()
    await asyncio.wait_for(backing.writing.wait(), 5)  # the periodic flush is writing
    await ledger.close()
    assert [(r.caller, r.requests, r.prompt_tokens) for r in backing.rows] == [("a", 1, 10)]
