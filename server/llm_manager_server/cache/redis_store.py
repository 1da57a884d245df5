"""A response cache shared by replicas, in Redis (redis-py's asyncio client).

Redis being slow or down must never fail or stall a call: every command has a short
timeout and no client-side retries, and after a failure the store reports itself down for
``down_for_s`` without trying (so a dead Redis costs each call nothing instead of a connect
timeout). The first failure and the recovery are logged once each, not per call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .keys import KEY_VERSION
from .stores import CacheStoreError

log = logging.getLogger(__name__)

# Loopback or same-zone Redis answers in well under a millisecond; past this, skip it.
COMMAND_TIMEOUT_S = 0.5
DOWN_FOR_S = 5.0
KEY_PREFIX = f"llm-manager:response:v{KEY_VERSION}:"


def redacted_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))



def redis_client(url: str, command_timeout_s: float) -> Redis:
    """The client every Redis user here opens (the cache, the limits): connections open lazily
    on the first command, so start-up never waits on Redis; a command that does not answer in
    ``command_timeout_s`` fails at once, without retries (the caller falls back and counts it)."""
    return Redis.from_url(
        url,
        socket_connect_timeout=command_timeout_s,
        socket_timeout=command_timeout_s,
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )

class RedisCacheStore:
    def __init__(
        self,
        url: str,
        *,
        ttl_s: float,
        max_entry_bytes: int,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        down_for_s: float = DOWN_FOR_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url_for_logs = redacted_url(url)
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._max_entry_bytes = max_entry_bytes
        self._down_for_s = down_for_s
        self._clock = clock
        self._down_until: float | None = None
        self._client = redis_client(url, command_timeout_s)

    @property
    def evictions(self) -> int:
        return 0  # Redis evicts by its own maxmemory policy and the TTL

    @property
    def available(self) -> bool:
        return self._down_until is None or self._clock() >= self._down_until

    def _check_available(self) -> None:
        if not self.available:
            raise CacheStoreError(f"redis {self._url_for_logs} is marked down")

    def _failed(self, error: BaseException) -> CacheStoreError:
        if self._down_until is None:
            log.warning(
                "response cache: redis %s unreachable (%s: %s); answering uncached, retrying in %.0f s",
                self._url_for_logs, type(error).__name__, error, self._down_for_s,
            )
        self._down_until = self._clock() + self._down_for_s
        return CacheStoreError(f"redis {self._url_for_logs}: {type(error).__name__}")

    def _succeeded(self) -> None:
        if self._down_until is not None:
            log.info("response cache: redis %s is reachable again", self._url_for_logs)
            self._down_until = None

    async def get(self, key: str) -> bytes | None:
        self._check_available()
        try:
            value = await self._client.get(KEY_PREFIX + key)
        except (RedisError, OSError, TimeoutError) as error:
            raise self._failed(error) from None
        self._succeeded()
        return value if isinstance(value, bytes) else None

    async def set(self, key: str, value: bytes) -> bool:
        if len(value) > self._max_entry_bytes:
            return False
        self._check_available()
        try:
            await self._client.set(KEY_PREFIX + key, value, px=self._ttl_ms)
        except (RedisError, OSError, TimeoutError) as error:
            raise self._failed(error) from None
        self._succeeded()
        return True

    async def close(self) -> None:
        try:
            await self._client.aclose()
        except (RedisError, OSError):
            pass  # closing a dead connection has nothing left to release
