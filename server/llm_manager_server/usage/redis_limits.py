"""Limit counters shared by replicas, in Redis (redis-py's asyncio client), with leases.

A Redis round trip costs a call about as much CPU as a tenth of the call itself (redis-py's
asyncio client), so a replica does not ask Redis on every call. It takes a **lease**: a block
of request permits, claimed atomically by one Lua script that also adds what the replica
booked since its last visit (tokens, cost), gives back the permits it did not use, and reads
the caller's minute tokens and day spend. Calls are then admitted from the lease, in this
process, until it is used up or ``LEASE_S`` old; then the next call claims a new one.

- Requests: a lease holds at most ``1/LEASE_SHARE`` of the caller's requests per minute (at
  least one), and permits are claimed atomically, so replicas together never admit more than
  the limit. Small limits (under ``LEASE_SHARE`` per minute) are claimed one permit per call:
  exact. With larger ones a replica may hold up to one block unused while another is refused;
  unused permits go back at the next claim.
- Tokens and budget: booked here, sent with the next claim or within ``LEASE_S`` (a timer);
  checked against the totals the last claim read plus this replica's own bookings. So another
  replica's bookings count at most ``LEASE_S`` late: a caller crossing its token or budget limit
  may get up to a second of extra calls on other replicas.

Keys expire with their window (plus a minute's slack), so nothing has to clean up after them.
Like the response cache's Redis store: short timeouts, no client-side retries, and after a
failure the store reports itself down for ``down_for_s`` without trying; the limiter then
enforces limits per process (``Limiter``: fail-open to local counters).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from ..cache.redis_store import COMMAND_TIMEOUT_S, DOWN_FOR_S, redacted_url, redis_client
from ..domain.caller import Caller
from .limits import BUDGET, DAY_S, MINUTE_S, REQUESTS, TOKENS, LimitStoreError, Windows

log = logging.getLogger(__name__)

KEY_PREFIX = "llm-manager:limits:v1:"
# A lease is renewed after this many seconds at the latest (and its bookings sent).
LEASE_S = 1.0
# A lease holds at most this share of a caller's requests per minute.
LEASE_SHARE = 50
# Calls admitted from one lease for a caller without a request limit (then time bounds it).
UNLIMITED_LEASE = 1000

# KEYS: minute requests, minute tokens, day spend. ARGV: rpm, tpm, budget (-1: no limit),
# permits wanted, permits given back, tokens and cost to add (booked since the last claim),
# minute and day key lifetimes in ms. Returns {status, permits granted, minute tokens, day
# spend (a string: Lua would truncate the number)}; status 0 granted, 1/2/3 over requests,
# tokens, budget (the budget and tokens are checked first: they wait longest).
CLAIM = """
if tonumber(ARGV[6]) > 0 then
  redis.call('INCRBY', KEYS[2], ARGV[6])
  redis.call('PEXPIRE', KEYS[2], ARGV[8])
end
if tonumber(ARGV[7]) > 0 then
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[7])
  redis.call('PEXPIRE', KEYS[3], ARGV[9])
end
local rpm, tpm, budget, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if rpm >= 0 and tonumber(ARGV[5]) > 0 then redis.call('DECRBY', KEYS[1], ARGV[5]) end
local tokens = tonumber(redis.call('GET', KEYS[2]) or '0')
local spent = redis.call('GET', KEYS[3]) or '0'
if budget >= 0 and tonumber(spent) >= budget then return {3, 0, tokens, spent} end
if tpm >= 0 and tokens >= tpm then return {2, 0, tokens, spent} end
if rpm < 0 then return {0, want, tokens, spent} end
local grant = math.min(want, rpm - tonumber(redis.call('GET', KEYS[1]) or '0'))
if grant <= 0 then return {1, 0, tokens, spent} end
redis.call('INCRBY', KEYS[1], grant)
redis.call('PEXPIRE', KEYS[1], ARGV[8])
return {0, grant, tokens, spent}
"""

_REFUSED = {1: REQUESTS, 2: TOKENS, 3: BUDGET}
_MINUTE_TTL_MS = 2 * MINUTE_S * 1000
_DAY_TTL_MS = (DAY_S + MINUTE_S) * 1000


def _limit(value: float | None) -> str:
    return "-1" if value is None else _number(value)


def _number(value: float) -> str:
    """Plain decimal notation: INCRBYFLOAT and Lua's tonumber both read it (no exponent)."""
    return f"{value:.12f}" if isinstance(value, float) else str(value)


@dataclass
class _Lease:
    """One caller's lease in this replica, for one minute (and its day)."""

    minute: int
    day: int
    permits: int = 0  # requests this replica may still admit without asking Redis
    claimed_at: float = -math.inf
    tokens: int = 0  # the minute's tokens, every replica, as of the last claim
    spent: float = 0.0  # the day's spend, every replica, as of the last claim
    pending_tokens: int = 0  # booked here since the last claim
    pending_usd: float = 0.0
    refused: str | None = None  # the last claim's refusal, repeated without asking until it is LEASE_S old

    def allows(self, caller: Caller) -> bool:
        """What this replica knows allows one more call."""
        if caller.budget_usd_per_day is not None and self.spent + self.pending_usd >= caller.budget_usd_per_day:
            return False
        return caller.tokens_per_minute is None or self.tokens + self.pending_tokens < caller.tokens_per_minute


def _wanted(caller: Caller) -> int:
    if caller.requests_per_minute is None:
        return UNLIMITED_LEASE
    return max(1, caller.requests_per_minute // LEASE_SHARE)


class RedisLimitStore:
    def __init__(
        self,
        url: str,
        *,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        down_for_s: float = DOWN_FOR_S,
        lease_s: float = LEASE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url_for_logs = redacted_url(url)
        self._down_for_s = down_for_s
        self._lease_s = lease_s
        self._clock = clock
        self._down_until: float | None = None
        self._leases: dict[str, tuple[Caller, _Lease]] = {}
        # One claim at a time per caller: calls arriving meanwhile wait for its permits
        # instead of each asking Redis.
        self._claiming: dict[str, asyncio.Lock] = {}
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._client = redis_client(url, command_timeout_s)
        self._claim = self._client.register_script(CLAIM)

    def _lease(self, caller: Caller, windows: Windows) -> _Lease:
        """The caller's lease for ``windows``: a new minute starts without permits (the old
        ones expire with their window) and without the old minute's tokens; a new day without
        the old day's spend."""
        found = self._leases.get(caller.name)
        lease = None if found is None else found[1]
        if lease is None or lease.minute != windows.minute or lease.day != windows.day:
            same_day = lease is not None and lease.day == windows.day
            lease = _Lease(windows.minute, windows.day, spent=lease.spent if lease and same_day else 0.0,
                           pending_usd=lease.pending_usd if lease and same_day else 0.0)
        self._leases[caller.name] = (caller, lease)
        return lease

    def _check_available(self) -> None:
        if self._down_until is not None and self._clock() < self._down_until:
            raise LimitStoreError(f"redis {self._url_for_logs} is marked down")

    def _failed(self, error: BaseException) -> LimitStoreError:
        self._down_until = self._clock() + self._down_for_s
        return LimitStoreError(f"redis {self._url_for_logs}: {type(error).__name__}")

    async def _sync(self, caller: Caller, lease: _Lease, want: int) -> str | None:
        """Claims up to ``want`` permits, sending the lease's bookings and unused permits."""
        self._check_available()
        base = f"{KEY_PREFIX}{caller.name}:"
        keys = (f"{base}r:{lease.minute}", f"{base}t:{lease.minute}", f"{base}usd:{lease.day}")
        # Taken out before the round trip, so a concurrent claim cannot send them twice.
        give_back, tokens, usd = lease.permits, lease.pending_tokens, lease.pending_usd
        lease.permits, lease.pending_tokens, lease.pending_usd = 0, 0, 0.0
        args = (
            _limit(caller.requests_per_minute), _limit(caller.tokens_per_minute), _limit(caller.budget_usd_per_day),
            want, give_back, tokens, _number(usd), _MINUTE_TTL_MS, _DAY_TTL_MS,
        )
        try:
            status, granted, minute_tokens, day_spent = await self._claim(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as error:
            # Bookings are kept for the next claim; the unused permits are dropped (Redis still
            # counts them as used: on the safe side).
            lease.pending_tokens += tokens
            lease.pending_usd += usd
            raise self._failed(error) from None
        self._down_until = None
        lease.claimed_at = self._clock()
        lease.tokens, lease.spent = int(minute_tokens), float(day_spent)
        lease.permits += int(granted)
        lease.refused = _REFUSED.get(int(status)) if want else None
        return lease.refused

    def _from_lease(self, caller: Caller, lease: _Lease) -> tuple[bool, str | None]:
        """(decided, refusal) from what this replica holds, without asking Redis."""
        if self._clock() - lease.claimed_at >= self._lease_s:
            return False, None
        if lease.refused is not None:
            return True, lease.refused
        if lease.permits > 0 and lease.allows(caller):
            lease.permits -= 1
            return True, None
        return False, None

    async def admit(self, caller: Caller, windows: Windows) -> str | None:
        lease = self._lease(caller, windows)
        decided, refused = self._from_lease(caller, lease)
        if decided:
            return refused
        lock = self._claiming.setdefault(caller.name, asyncio.Lock())
        async with lock:
            lease = self._lease(caller, windows)
            decided, refused = self._from_lease(caller, lease)  # the claim we waited for may do
            if decided:
                return refused
            refused = await self._sync(caller, lease, _wanted(caller))
            if refused is None:
                lease.permits -= 1
            return refused

    async def book(self, caller: Caller, windows: Windows, tokens: int, cost_usd: float) -> None:
        """Adds to the lease; Redis gets it with the next claim, or within ``LEASE_S``."""
        lease = self._lease(caller, windows)
        lease.pending_tokens += tokens
        lease.pending_usd += cost_usd
        if self._flush_timer is None:
            self._flush_timer = asyncio.get_running_loop().call_later(self._lease_s, self._start_flush)

    def _start_flush(self) -> None:
        self._flush_timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        """Sends every lease's bookings now (claiming no permits)."""
        for caller, lease in list(self._leases.values()):
            if lease.pending_tokens or lease.pending_usd:
                try:
                    await self._sync(caller, lease, 0)
                except LimitStoreError as error:
                    log.debug("limits: bookings kept for the next claim (%s)", error)

    async def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        await asyncio.gather(*self._flushing, return_exceptions=True)
        await self.flush()
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass  # closing a dead connection has nothing left to release
