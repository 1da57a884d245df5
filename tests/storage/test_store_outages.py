"""PostgreSQL-specific: replicas migrating at once, and the database going away."""

from __future__ import annotations

import asyncio

import pytest

from llm_manager_server.conversations.postgres import PostgresConversationStore
from llm_manager_server.domain.errors import ErrorKind, LLMError

from ..support.services import PostgresServer


async def test_replicas_starting_together_migrate_once(postgres_dsn: str) -> None:
    stores = [PostgresConversationStore(postgres_dsn) for _ in range(4)]
    await asyncio.gather(*(store.open() for store in stores))
    try:
        conversation = await stores[0].create(system="", metadata={})
        assert (await stores[3].get(conversation.id)).id == conversation.id
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_a_lost_database_is_unavailable_not_an_internal_error() -> None:
    server = PostgresServer().start()
    try:
        server.sql("CREATE DATABASE outage")
        store = PostgresConversationStore(server.dsn("outage"))
        await store.open()
        conversation = await store.create(system="", metadata={})
        server.stop()
        with pytest.raises(LLMError) as raised:
            await store.get(conversation.id)
        assert raised.value.kind is ErrorKind.NETWORK_ERROR
        assert "unavailable" in raised.value.message and "outage" not in raised.value.message
        await store.close()
    finally:
        server.stop()
