"""Conversations in PostgreSQL (asyncpg), shared by several server replicas.

Migrations run on open under a transaction-scoped advisory lock, so replicas starting
together apply each migration once. Turn leases live in the conversation row: the
conditional ``UPDATE`` that takes one is atomic under READ COMMITTED (the row lock makes a
second taker re-check the condition), so two replicas can never both begin a turn.
Timestamps are microseconds from the server's clock, like the other stores.

Each migration runs in the transaction that records its version, under that lock: a
database is at one version or the next, never in between, and a replica that opens it
while another migrates waits, then finds nothing left to do. The statements are
idempotent as well (``IF NOT EXISTS`` / ``IF EXISTS``). Version 2 (tool calling) only adds
nullable columns and swaps ``CHECK`` constraints, so replicas still running version 1 can
go on writing text turns while the rest are upgraded (they cannot read tool turns, and
refuse to start on a version-2 database). Version 3 (callers) adds each conversation's
owner with a default (``''``: conversations made before it belong to no caller once API keys
are on) and lists by owner.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace

import asyncpg

from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Message, Role
from .model import (
    Conversation,
    PageCursor,
    StoredMessage,
    attach_messages,
    check_new_messages,
    check_reply,
    check_turn,
    new_conversation_id,
    not_found,
    now_us,
    store_unavailable,
    tool_calls_from_json,
    tool_calls_json,
)

# Each entry: (version, statements). Append only; never edit an applied migration.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE conversations (
                id TEXT PRIMARY KEY,
                system TEXT NOT NULL,
                metadata JSONB NOT NULL,
                create_time_us BIGINT NOT NULL,
                update_time_us BIGINT NOT NULL,
                turn_id TEXT,
                turn_expires_us BIGINT
            )""",
            "CREATE INDEX conversations_recent ON conversations (update_time_us DESC, id DESC)",
            """CREATE TABLE conversation_messages (
                conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
                content TEXT NOT NULL,
                create_time_us BIGINT NOT NULL,
                PRIMARY KEY (conversation_id, seq)
            )""",
        ),
    ),
    (
        2,
        (
            # Tool calling: an assistant reply's calls (JSON text, an array of {id, name,
            # arguments}, kept exactly as written) and the call a tool message answers; role
            # 'tool' allowed. Old rows keep their values and get NULL in both new columns.
            "ALTER TABLE conversation_messages ADD COLUMN IF NOT EXISTS tool_calls TEXT, "
            "ADD COLUMN IF NOT EXISTS tool_call_id TEXT",
            # Version 1's inline CHECK on role has PostgreSQL's generated name.
            "ALTER TABLE conversation_messages DROP CONSTRAINT IF EXISTS conversation_messages_role_check, "
            "ADD CONSTRAINT conversation_messages_role_check CHECK (role IN ('user', 'assistant', 'tool'))",
            "ALTER TABLE conversation_messages DROP CONSTRAINT IF EXISTS conversation_messages_tool_check, "
            "ADD CONSTRAINT conversation_messages_tool_check CHECK ("
            "(tool_calls IS NULL OR role = 'assistant') AND ((tool_call_id IS NOT NULL) = (role = 'tool')))",
        ),
    ),
    (
        3,
        (
            # Callers: the caller that created the conversation (its API key's caller name;
            # '' with authentication off). Every read filters on it.
            "ALTER TABLE conversations ADD COLUMN IF NOT EXISTS owner TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX IF NOT EXISTS conversations_owner_recent ON conversations (owner, update_time_us DESC, id DESC)",
            "DROP INDEX IF EXISTS conversations_recent",
        ),
    ),
)

# Any constant shared by all replicas; names the advisory lock that serializes migrations.
MIGRATION_LOCK_ID = 0x11A_C0_17E5
_COLUMNS = "id, system, metadata::text, create_time_us, update_time_us"
# Failures worth a retry by the caller (UNAVAILABLE), not a bug.
_UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.CannotConnectNowError)


def _conversation(row: asyncpg.Record) -> Conversation:
    return Conversation(row[0], row[1], dict(json.loads(row[2])), row[3], row[4])


class PostgresConversationStore:
    def __init__(self, dsn: str, *, clock: Callable[[], int] = now_us, min_connections: int = 1, max_connections: int = 10) -> None:
        self._dsn = dsn
        self._clock = clock
        self._min_connections = min_connections
        self._max_connections = max_connections
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=self._min_connections, max_size=self._max_connections, command_timeout=30
        )
        async with self._transaction() as connection:
            await connection.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_ID)
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS llm_manager_schema_migrations (version INTEGER PRIMARY KEY, applied_us BIGINT NOT NULL)"
            )
            current = await connection.fetchval("SELECT COALESCE(MAX(version), 0) FROM llm_manager_schema_migrations")
            newest = MIGRATIONS[-1][0]
            if current > newest:
                raise RuntimeError(f"the conversation database has schema version {current}, newer than this server's {newest}")
            for version, statements in MIGRATIONS:
                if version > current:
                    for statement in statements:
                        await connection.execute(statement)
                    await connection.execute("INSERT INTO llm_manager_schema_migrations VALUES ($1, $2)", version, self._clock())

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy]:
        if self._pool is None:
            raise RuntimeError("the conversation store is not open")
        try:
            async with self._pool.acquire() as connection, connection.transaction():
                yield connection
        except _UNAVAILABLE as error:
            raise store_unavailable(error) from error

    @staticmethod
    async def _messages(connection: asyncpg.pool.PoolConnectionProxy, ids: Sequence[str]) -> dict[str, list[StoredMessage]]:
        found: dict[str, list[StoredMessage]] = {conversation_id: [] for conversation_id in ids}
        if ids:
            rows = await connection.fetch(
                "SELECT conversation_id, role, content, create_time_us, tool_calls, tool_call_id FROM conversation_messages "
                "WHERE conversation_id = ANY($1::text[]) ORDER BY conversation_id, seq",
                list(ids),
            )
            for row in rows:
                found[row[0]].append(StoredMessage(Role(row[1]), row[2], row[3], tool_calls_from_json(row[4]), row[5]))
        return found

    async def _read(self, connection: asyncpg.pool.PoolConnectionProxy, conversation_id: str, with_messages: bool, owner: str | None) -> Conversation:
        """The conversation, if it exists and is ``owner``'s (``None``: whoever's, for a turn
        that already holds the lease)."""
        if owner is None:
            row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM conversations WHERE id = $1", conversation_id)
        else:
            row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM conversations WHERE id = $1 AND owner = $2", conversation_id, owner)
        if row is None:
            raise not_found(conversation_id)
        conversation = _conversation(row)
        if not with_messages:
            return conversation
        return attach_messages([conversation], await self._messages(connection, [conversation.id]))[0]

    async def create(self, *, system: str, metadata: Mapping[str, str], owner: str = "") -> Conversation:
        now = self._clock()
        conversation = Conversation(new_conversation_id(), system, dict(metadata), now, now)
        async with self._transaction() as connection:
            await connection.execute(
                "INSERT INTO conversations (id, system, metadata, create_time_us, update_time_us, owner) VALUES ($1, $2, $3::jsonb, $4, $5, $6)",
                conversation.id, system, json.dumps(conversation.metadata), now, now, owner,
            )
        return conversation

    async def get(self, conversation_id: str, *, with_messages: bool = True, owner: str = "") -> Conversation:
        async with self._transaction() as connection:
            return await self._read(connection, conversation_id, with_messages, owner)

    async def list_page(self, *, limit: int, after: PageCursor | None, with_messages: bool, owner: str = "") -> list[Conversation]:
        async with self._transaction() as connection:
            if after is None:
                rows = await connection.fetch(
                    f"SELECT {_COLUMNS} FROM conversations WHERE owner = $1 ORDER BY update_time_us DESC, id DESC LIMIT $2", owner, limit
                )
            else:
                rows = await connection.fetch(
                    f"SELECT {_COLUMNS} FROM conversations WHERE owner = $1 AND (update_time_us, id) < ($2, $3) "
                    "ORDER BY update_time_us DESC, id DESC LIMIT $4",
                    owner, after.update_time_us, after.id, limit,
                )
            page = [_conversation(row) for row in rows]
            if not with_messages:
                return page
            return attach_messages(page, await self._messages(connection, [c.id for c in page]))

    async def delete(self, conversation_id: str, *, owner: str = "") -> None:
        async with self._transaction() as connection:
            deleted = await connection.fetchval("DELETE FROM conversations WHERE id = $1 AND owner = $2 RETURNING id", conversation_id, owner)
            if deleted is None:
                raise not_found(conversation_id)

    @staticmethod
    async def _append(connection: asyncpg.pool.PoolConnectionProxy, conversation_id: str, message: StoredMessage) -> None:
        await connection.execute(
            "INSERT INTO conversation_messages (conversation_id, seq, role, content, create_time_us, tool_calls, tool_call_id) "
            "SELECT $1, COALESCE(MAX(seq), 0) + 1, $2, $3, $4, $5, $6 FROM conversation_messages WHERE conversation_id = $1",
            conversation_id,
            message.role.value,
            message.content,
            message.create_time_us,
            tool_calls_json(message.tool_calls),
            message.tool_call_id,
        )

    async def begin_turn(
        self, conversation_id: str, new_messages: Sequence[Message], *, turn_id: str, lease_s: float, owner: str = ""
    ) -> Conversation | None:
        check_new_messages(new_messages)
        now = self._clock()
        async with self._transaction() as connection:
            taken = await connection.fetchval(
                "UPDATE conversations SET turn_id = $1, turn_expires_us = $2, update_time_us = $3 "
                "WHERE id = $4 AND owner = $5 AND (turn_id IS NULL OR turn_expires_us <= $3) RETURNING id",
                turn_id, now + int(lease_s * 1_000_000), now, conversation_id, owner,
            )
            if taken is None:
                await self._read(connection, conversation_id, False, owner)  # raises NOT_FOUND if it is gone (or not the owner's)
                return None
            conversation = await self._read(connection, conversation_id, True, owner)
            check_turn(conversation.messages, new_messages)  # raising rolls the lease back too
            added = tuple(StoredMessage.from_message(m, now) for m in new_messages)
            for message in added:
                await self._append(connection, conversation_id, message)
            return replace(conversation, messages=conversation.messages + added)

    async def end_turn(self, conversation_id: str, *, turn_id: str, reply: Message | None) -> None:
        now = self._clock()
        stored = None
        if reply is not None:
            check_reply(reply)
            stored = StoredMessage.from_message(reply, now)
            tool_calls_json(stored.tool_calls)  # arguments that are not JSON fail here, before the transaction
        async with self._transaction() as connection:
            if stored is None:
                await connection.execute(
                    "UPDATE conversations SET turn_id = NULL, turn_expires_us = NULL WHERE id = $1 AND turn_id = $2",
                    conversation_id, turn_id,
                )
                return
            released = await connection.fetchval(
                "UPDATE conversations SET turn_id = NULL, turn_expires_us = NULL, update_time_us = $1 "
                "WHERE id = $2 AND turn_id = $3 RETURNING id",
                now, conversation_id, turn_id,
            )
            if released is None:
                await self._read(connection, conversation_id, False, None)
                raise LLMError(ErrorKind.TIMEOUT, "the reply took longer than the turn's lease; it was not stored")
            await self._append(connection, conversation_id, stored)
