"""Per-caller limits: requests and tokens per minute, a budget in US dollars per day.

Windows are fixed and aligned to UTC: a minute is ``floor(unix_time / 60)``, a day is the UTC
calendar day. Fixed windows need one counter per caller and window, which Redis updates
atomically in one round trip, and tell a refused caller exactly when it may retry (the
window's end: ``RetryInfo``). Their known cost: a caller can spend up to twice its per-minute
limit across a window boundary (the end of one minute and the start of the next); a sliding
window or GCRA would smooth that at the price of more state per call, which these limits
(guards against runaway spend, not traffic shaping) do not need.

- ``requests_per_minute``: checked and counted before the upstream call, atomically, so N
  concurrent calls can never all pass a limit of N-1.
- ``tokens_per_minute``: prompt + completion tokens from the provider's usage, booked after the
  call in the minute it ended; a call is refused while that minute's booked tokens are at or
  over the limit (a call's own tokens are not known before it runs, so the call that crosses
  the limit is answered, the next ones are refused).
- ``budget_usd_per_day``: cost booked after the call (the price table's), refused while the
  UTC day's spend is at or over the budget.

A caller without limits (and every call with authentication off) costs nothing here: no store
is asked. Refused calls are not counted. Replicas sharing Redis must keep their clocks in sync
(NTP): each computes the window from its own clock, so a skew shifts windows by as much.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.metrics import Meter

from ..domain.caller import Caller
from ..domain.errors import ErrorKind, LLMError, QuotaViolation

log = logging.getLogger(__name__)

MINUTE_S = 60
DAY_S = 86_400

REQUESTS = "requests_per_minute"
TOKENS = "tokens_per_minute"
BUDGET = "budget_usd_per_day"


class LimitStoreError(Exception):
    """The shared store could not answer (Redis down or slow)."""


@dataclass(frozen=True, slots=True)
class Windows:
    """The windows a moment falls in: epoch minute and epoch day numbers (UTC), and the
    seconds until each ends."""

    minute: int
    day: int
    minute_left_s: float
    day_left_s: float


def windows_at(now: float) -> Windows:
    minute, in_minute = divmod(now, MINUTE_S)
    day, in_day = divmod(now, DAY_S)
    return Windows(int(minute), int(day), MINUTE_S - in_minute, DAY_S - in_day)


def has_limits(caller: Caller) -> bool:
    return caller.requests_per_minute is not None or caller.tokens_per_minute is not None or caller.budget_usd_per_day is not None


class LimitStore(Protocol):
    """Counters per caller and window. Both methods are atomic per caller."""

    async def admit(self, caller: Caller, windows: Windows) -> str | None:
        """Refuses the call, returning the limit it is over (``BUDGET``, then ``TOKENS``, then
        ``REQUESTS``: the longest wait first), or counts one request in ``windows.minute``
        and returns ``None``."""
        ...

    async def book(self, caller: Caller, windows: Windows, tokens: int, cost_usd: float) -> None:
        """Adds a finished call's tokens to the minute and its cost to the day."""
        ...

    async def close(self) -> None: ...


class MemoryLimitStore:
    """This process's counters (the default, and the fallback while Redis is down). Methods
    never await, so each is atomic on the event loop. Only the current minute's and day's
    counters are kept: older ones are dropped when a new window starts."""

    def __init__(self) -> None:
        self._minute = -1
        self._day = -1
        self._requests: dict[str, int] = {}
        self._tokens: dict[str, int] = {}
        self._spent: dict[str, float] = {}

    def _roll(self, windows: Windows) -> None:
        if windows.minute != self._minute:
            self._minute = windows.minute
            self._requests.clear()
            self._tokens.clear()
        if windows.day != self._day:
            self._day = windows.day
            self._spent.clear()

    async def admit(self, caller: Caller, windows: Windows) -> str | None:
        self._roll(windows)
        name = caller.name
        if caller.budget_usd_per_day is not None and self._spent.get(name, 0.0) >= caller.budget_usd_per_day:
            return BUDGET
        if caller.tokens_per_minute is not None and self._tokens.get(name, 0) >= caller.tokens_per_minute:
            return TOKENS
        if caller.requests_per_minute is not None:
            counted = self._requests.get(name, 0)
            if counted >= caller.requests_per_minute:
                return REQUESTS
            self._requests[name] = counted + 1
        return None

    async def book(self, caller: Caller, windows: Windows, tokens: int, cost_usd: float) -> None:
        self._roll(windows)
        name = caller.name
        if caller.tokens_per_minute is not None and tokens:
            self._tokens[name] = self._tokens.get(name, 0) + tokens
        if caller.budget_usd_per_day is not None and cost_usd:
            self._spent[name] = self._spent.get(name, 0.0) + cost_usd

    async def close(self) -> None:
        pass


def quota_exceeded(caller: Caller, limit: str, windows: Windows) -> LLMError:
    """The status a caller over ``limit`` gets: RESOURCE_EXHAUSTED / QUOTA_EXCEEDED, with a
    QuotaFailure naming the caller and the limit and a RetryInfo for the window's end."""
    if limit == BUDGET:
        allowed = f"{caller.budget_usd_per_day:g} USD per UTC day"
        retry_after = windows.day_left_s
    else:
        allowed = f"{caller.tokens_per_minute if limit == TOKENS else caller.requests_per_minute} {'tokens' if limit == TOKENS else 'requests'} per minute"
        retry_after = windows.minute_left_s
    description = f"{limit}: {allowed}"
    return LLMError(
        ErrorKind.QUOTA_EXCEEDED,
        f"caller {caller.name!r} is over its {description}; it resets in {retry_after:.0f} s",
        retry_after_s=retry_after,
        quota_violations=(QuotaViolation(subject=caller.name, description=description),),
        metadata={"caller": caller.name, "limit": limit},
    )


class Limiter:
    """Admits and books calls against their caller's limits, in ``store``.

    Shared store down (``LimitStoreError``): **fail-open to this process's counters**. The
    limits then hold per replica (with N replicas a caller may get up to N times its limit)
    until Redis answers again, instead of refusing every call (fail-closed would turn a Redis
    outage into an API outage) or dropping limits altogether. Each such call is counted
    (``llm_manager.limits.store_errors``, and ``stats``) and the outage is logged once."""

    def __init__(self, store: LimitStore, *, clock: Callable[[], float] = time.time, meter: Meter | None = None) -> None:
        self._store = store
        self._local = store if isinstance(store, MemoryLimitStore) else MemoryLimitStore()
        self._clock = clock
        self._degraded = False
        self.stats = {"admitted": 0, "refused": 0, "store_errors": 0}
        self._refusals = meter.create_counter("llm_manager.limits.refusals", unit="{call}", description="Calls refused by a caller's limit, by limit") if meter else None
        self._errors = meter.create_counter("llm_manager.limits.store_errors", unit="{error}", description="Limit checks answered by this process's counters because the shared store failed") if meter else None

    def _failed(self, error: LimitStoreError) -> None:
        self.stats["store_errors"] += 1
        if self._errors is not None:
            self._errors.add(1)
        if not self._degraded:
            self._degraded = True
            log.warning("limits: shared store failed (%s); enforcing limits per process until it answers", error)

    def _recovered(self) -> None:
        if self._degraded:
            self._degraded = False
            log.info("limits: shared store answers again")

    async def admit(self, caller: Caller) -> None:
        """Counts the call in, or raises QUOTA_EXCEEDED; a caller without limits passes free."""
        if not has_limits(caller):
            return
        windows = windows_at(self._clock())
        try:
            refused = await self._store.admit(caller, windows)
            self._recovered()
        except LimitStoreError as error:
            self._failed(error)
            refused = await self._local.admit(caller, windows)
        if refused is None:
            self.stats["admitted"] += 1
            return
        self.stats["refused"] += 1
        if self._refusals is not None:
            self._refusals.add(1, {"limit": refused})
        raise quota_exceeded(caller, refused, windows)

    async def book(self, caller: Caller, tokens: int, cost_usd: float) -> None:
        # Only what some limit of this caller counts.
        tokens = tokens if caller.tokens_per_minute is not None else 0
        cost_usd = cost_usd if caller.budget_usd_per_day is not None else 0.0
        if tokens <= 0 and cost_usd <= 0:
            return
        windows = windows_at(self._clock())
        try:
            await self._store.book(caller, windows, tokens, cost_usd)
            self._recovered()
        except LimitStoreError as error:
            self._failed(error)
            await self._local.book(caller, windows, tokens, cost_usd)

    async def close(self) -> None:
        await self._store.close()
