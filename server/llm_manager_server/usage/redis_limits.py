"""Limit counters shared by replicas, in Redis (redis-py's asyncio client).

One Lua script per operation, so each is atomic in Redis (scripts run one at a time) and
costs one round trip: ``admit`` reads the caller's day spend and minute tokens and checks and
increments its minute's request count in one step, so replicas admitting at once can never
together pass a limit. Keys expire with their window (plus a minute's slack), so nothing has
to clean up after them.

Like the response cache's Redis store: short timeouts, no client-side retries, and after a
failure the store reports itself down for ``down_for_s`` without trying; the limiter then
enforces limits per process (``Limiter``: fail-open to local counters).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from ..cache.redis_store import COMMAND_TIMEOUT_S, DOWN_FOR_S, redacted_url
from ..domain.caller import Caller
from .limits import BUDGET, DAY_S, MINUTE_S, REQUESTS, TOKENS, LimitStoreError, Windows

KEY_PREFIX = "llm-manager:limits:v1:"

# KEYS: minute requests, minute tokens, day spend. ARGV: rpm, tpm, budget (-1: no limit),
# minute and day key lifetimes in ms. Returns 0 (admitted), or 1/2/3: over requests, tokens,
# budget. The budget and tokens are checked first: they wait longest, and a refused call must
# not count as a request.
ADMIT = """
local budget = tonumber(ARGV[3])
if budget >= 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= budget then return 3 end
local tpm = tonumber(ARGV[2])
if tpm >= 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then return 2 end
local rpm = tonumber(ARGV[1])
if rpm >= 0 then
  if tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then return 1 end
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
return 0
"""

# KEYS: minute tokens, day spend. ARGV: tokens, cost (0: nothing to add), lifetimes in ms.
BOOK = """
if tonumber(ARGV[1]) > 0 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if tonumber(ARGV[2]) > 0 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 0
"""

_REFUSED = {1: REQUESTS, 2: TOKENS, 3: BUDGET}
_MINUTE_TTL_MS = 2 * MINUTE_S * 1000
_DAY_TTL_MS = (DAY_S + MINUTE_S) * 1000


def _limit(value: float | None) -> str:
    return "-1" if value is None else _number(value)


def _number(value: float) -> str:
    """Plain decimal notation: INCRBYFLOAT and Lua's tonumber both read it (no exponent)."""
    return f"{value:.12f}" if isinstance(value, float) else str(value)


class RedisLimitStore:
    def __init__(
        self,
        url: str,
        *,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        down_for_s: float = DOWN_FOR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url_for_logs = redacted_url(url)
        self._down_for_s = down_for_s
        self._clock = clock
        self._down_until: float | None = None
        # Connections open lazily on the first command, so start-up never waits on Redis.
        self._client = Redis.from_url(
            url,
            socket_connect_timeout=command_timeout_s,
            socket_timeout=command_timeout_s,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=30,
        )
        self._admit = self._client.register_script(ADMIT)
        self._book = self._client.register_script(BOOK)

    @staticmethod
    def _keys(caller: Caller, windows: Windows) -> tuple[str, str, str]:
        base = f"{KEY_PREFIX}{caller.name}:"
        return f"{base}r:{windows.minute}", f"{base}t:{windows.minute}", f"{base}usd:{windows.day}"

    def _check_available(self) -> None:
        if self._down_until is not None and self._clock() < self._down_until:
            raise LimitStoreError(f"redis {self._url_for_logs} is marked down")

    def _failed(self, error: BaseException) -> LimitStoreError:
        self._down_until = self._clock() + self._down_for_s
        return LimitStoreError(f"redis {self._url_for_logs}: {type(error).__name__}")

    async def admit(self, caller: Caller, windows: Windows) -> str | None:
        self._check_available()
        requests, tokens, spent = self._keys(caller, windows)
        args = (_limit(caller.requests_per_minute), _limit(caller.tokens_per_minute), _limit(caller.budget_usd_per_day), _MINUTE_TTL_MS, _DAY_TTL_MS)
        try:
            outcome = await self._admit(keys=(requests, tokens, spent), args=args)
        except (RedisError, OSError, TimeoutError) as error:
            raise self._failed(error) from None
        self._down_until = None
        return _REFUSED.get(int(outcome))

    async def book(self, caller: Caller, windows: Windows, tokens: int, cost_usd: float) -> None:
        self._check_available()
        _, token_key, spent = self._keys(caller, windows)
        try:
            await self._book(keys=(token_key, spent), args=(tokens, _number(cost_usd), _MINUTE_TTL_MS, _DAY_TTL_MS))
        except (RedisError, OSError, TimeoutError) as error:
            raise self._failed(error) from None
        self._down_until = None

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass  # closing a dead connection has nothing left to release
