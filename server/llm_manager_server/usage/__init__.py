"""Callers' usage: limits and budgets (``limits``; Redis-shared in ``redis_limits``), the
usage ledger (``ledger``) and the engine's hook for both (``meter``)."""

from __future__ import annotations

from opentelemetry.metrics import Meter

from .ledger import UsageLedger, UsageRow, UsageStore, merge, utc_day
from .limits import LimitStore, Limiter, MemoryLimitStore, quota_exceeded, windows_at
from .meter import UsageMeter


def limit_store_for(url: str) -> LimitStore:
    """The store a ``LLM_LIMITS_STORE`` value names: ``memory`` or a ``redis://`` URL."""
    if url == "memory":
        return MemoryLimitStore()
    from .redis_limits import RedisLimitStore

    return RedisLimitStore(url)


def build_limiter(url: str, meter: Meter | None = None) -> Limiter:
    return Limiter(limit_store_for(url), meter=meter)


__all__ = [
    "LimitStore",
    "Limiter",
    "MemoryLimitStore",
    "UsageLedger",
    "UsageMeter",
    "UsageRow",
    "UsageStore",
    "build_limiter",
    "limit_store_for",
    "merge",
    "quota_exceeded",
    "utc_day",
    "windows_at",
]
