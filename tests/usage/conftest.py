"""Fixtures of the limits and usage suites: the session's real Redis and PostgreSQL."""

from __future__ import annotations

from ..support.services import postgres_dsn, postgres_server, redis_server, redis_url  # noqa: F401 - fixtures
