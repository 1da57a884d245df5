"""The limiter's fixed windows, on an injected clock and in-memory counters: requests counted
before the call, tokens and spend booked after it, refusals as RESOURCE_EXHAUSTED with
QuotaFailure and RetryInfo, and a failing shared store falling back to per-process counters."""

from __future__ import annotations

import asyncio
import calendar

import grpc
import pytest
from google.rpc import error_details_pb2

from llm_manager_server.domain.caller import Caller
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.status import status_code, to_status_proto
from llm_manager_server.usage.limits import BUDGET, REQUESTS, TOKENS, Limiter, LimitStoreError, MemoryLimitStore, Windows, windows_at

# 2026-12-01 10:00:00 UTC, a minute and a day boundary.
MIDNIGHT = calendar.timegm((2026, 12, 1, 0, 0, 0))
START = MIDNIGHT + 10 * 3600


class Clock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def refused(limiter: Limiter, caller: Caller) -> LLMError:
    with pytest.raises(LLMError) as raised:
        await limiter.admit(caller)
    assert raised.value.kind is ErrorKind.QUOTA_EXCEEDED
    return raised.value


def details(error: LLMError) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.QuotaFailure, float]:
    status = to_status_proto(error)
    info, quota, retry = error_details_pb2.ErrorInfo(), error_details_pb2.QuotaFailure(), error_details_pb2.RetryInfo()
    found = {packed.TypeName(): packed for packed in status.details}
    assert found["google.rpc.ErrorInfo"].Unpack(info)
    assert found["google.rpc.QuotaFailure"].Unpack(quota)
    assert found["google.rpc.RetryInfo"].Unpack(retry)
    return info, quota, retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9


def test_windows_are_utc_minutes_and_days() -> None:
    at = windows_at(START + 59.25)
    assert at == Windows(int(START // 60), int(MIDNIGHT // 86_400), 0.75, 86_400 - 10 * 3600 - 59.25)
    assert windows_at(START + 60).minute == at.minute + 1
    assert windows_at(MIDNIGHT + 86_400).day == at.day + 1


async def test_requests_per_minute_are_counted_before_the_call_and_reset_with_the_minute() -> None:
    clock = Clock(START + 45)
    limiter = Limiter(MemoryLimitStore(), clock=clock)
    caller = Caller("dashboards", requests_per_minute=3)
    for _ in range(3):
        await limiter.admit(caller)
    error = await refused(limiter, caller)
    assert status_code(error) == grpc.StatusCode.RESOURCE_EXHAUSTED
    info, quota, retry_s = details(error)
    assert info.reason == "QUOTA_EXCEEDED" and info.metadata["limit"] == REQUESTS and info.metadata["caller"] == "dashboards"
    assert [(v.subject, v.description) for v in quota.violations] == [("dashboards", "requests_per_minute: 3 requests per minute")]
    assert retry_s == pytest.approx(15.0)
    # Refused calls are not counted; another caller has its own counter.
    await limiter.admit(Caller("alerts", requests_per_minute=1))
    clock.now = START + 60
    for _ in range(3):
        await limiter.admit(caller)
    await refused(limiter, caller)
    assert limiter.stats == {"admitted": 7, "refused": 2, "store_errors": 0}


async def test_concurrent_admissions_never_pass_the_limit_together() -> None:
    limiter = Limiter(MemoryLimitStore(), clock=Clock())
    caller = Caller("batch", requests_per_minute=5)
    outcomes = await asyncio.gather(*(limiter.admit(caller) for _ in range(20)), return_exceptions=True)
    assert sum(o is None for o in outcomes) == 5
    assert all(isinstance(o, LLMError) and o.kind is ErrorKind.QUOTA_EXCEEDED for o in outcomes if o is not None)


async def test_tokens_per_minute_refuse_once_the_booked_tokens_reach_the_limit() -> None:
    clock = Clock(START + 20)
    limiter = Limiter(MemoryLimitStore(), clock=clock)
    caller = Caller("reports", tokens_per_minute=100)
    await limiter.admit(caller)
    await limiter.book(caller, 60, 0.0)
    await limiter.admit(caller)  # 60 < 100: the next call may run
    await limiter.book(caller, 40, 0.0)
    error = await refused(limiter, caller)  # 100 >= 100
    _, quota, retry_s = details(error)
    assert quota.violations[0].description == "tokens_per_minute: 100 tokens per minute" and retry_s == pytest.approx(40.0)
    clock.now = START + 60
    await limiter.admit(caller)


async def test_the_budget_is_per_utc_day_and_retry_waits_for_midnight() -> None:
    clock = Clock(START)
    limiter = Limiter(MemoryLimitStore(), clock=clock)
    caller = Caller("analytics", budget_usd_per_day=0.01)
    await limiter.admit(caller)
    await limiter.book(caller, 5_000, 0.006)
    await limiter.admit(caller)
    await limiter.book(caller, 5_000, 0.006)
    clock.now = START + 3600  # an hour later, still the same UTC day
    error = await refused(limiter, caller)
    info, quota, retry_s = details(error)
    assert info.metadata["limit"] == BUDGET and quota.violations[0].description == "budget_usd_per_day: 0.01 USD per UTC day"
    assert retry_s == pytest.approx(13 * 3600)
    clock.now = MIDNIGHT + 86_400
    await limiter.admit(caller)


async def test_the_longest_wait_is_named_when_several_limits_are_exceeded() -> None:
    limiter = Limiter(MemoryLimitStore(), clock=Clock())
    caller = Caller("all", requests_per_minute=1, tokens_per_minute=10, budget_usd_per_day=0.001)
    await limiter.admit(caller)
    await limiter.book(caller, 10, 0.001)
    assert (await refused(limiter, caller)).metadata["limit"] == BUDGET
    tokens_only = Caller("tokens", requests_per_minute=1, tokens_per_minute=10)
    await limiter.admit(tokens_only)
    await limiter.book(tokens_only, 10, 0.5)
    assert (await refused(limiter, tokens_only)).metadata["limit"] == TOKENS


class BrokenStore:
    """A shared store that is down: every operation fails."""

    async def admit(self, caller: Caller, windows: Windows) -> str | None:
        raise LimitStoreError("redis down")

    async def book(self, caller: Caller, windows: Windows, tokens: int, cost_usd: float) -> None:
        raise LimitStoreError("redis down")

    async def close(self) -> None:
        pass


async def test_a_failing_shared_store_falls_back_to_this_process_counters(caplog: pytest.LogCaptureFixture) -> None:
    limiter = Limiter(BrokenStore(), clock=Clock())
    caller = Caller("ops", requests_per_minute=2, tokens_per_minute=50)
    await limiter.admit(caller)
    await limiter.admit(caller)
    assert (await refused(limiter, caller)).metadata["limit"] == REQUESTS
    await limiter.book(caller, 10, 0.0)
    assert limiter.stats["store_errors"] == 4
    assert sum("shared store failed" in r.getMessage() for r in caplog.records) == 1  # logged once per outage


async def test_callers_without_limits_ask_no_store() -> None:
    limiter = Limiter(BrokenStore(), clock=Clock())
    free = Caller("free")
    for _ in range(100):
        await limiter.admit(free)
        await limiter.book(free, 1_000, 1.0)
    assert limiter.stats == {"admitted": 0, "refused": 0, "store_errors": 0}
