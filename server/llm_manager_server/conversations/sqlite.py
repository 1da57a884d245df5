"""Conversations in a SQLite file: the default store, for one server process.

aiosqlite runs every statement on its own thread, so the event loop never waits on disk.
One connection serves the process; an ``asyncio.Lock`` makes each transaction exclusive on
it (SQLite serializes writers anyway). WAL journal with ``synchronous=FULL``: a committed
transaction survives a crash, even of the machine, and readers do not block the writer.

The file belongs to one process: on open, turn leases left by a crashed predecessor are
cleared so its conversations are usable at once. Several replicas need PostgreSQL.

Migrations run on open, each in the one ``BEGIN IMMEDIATE`` transaction that records its
version, so a database is at one version or the next, never in between, and a second
opener waits for the first and then finds nothing left to do. Version 2 (tool calling)
rebuilds the messages table, since SQLite cannot change a ``CHECK`` constraint in place.
Version 3 (callers) adds each conversation's owner, ``''`` for conversations made before it
(they belong to no caller once API keys are on), and lists by owner.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiosqlite

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
                metadata TEXT NOT NULL,
                create_time_us INTEGER NOT NULL,
                update_time_us INTEGER NOT NULL,
                turn_id TEXT,
                turn_expires_us INTEGER
            )""",
            "CREATE INDEX conversations_recent ON conversations (update_time_us DESC, id DESC)",
            """CREATE TABLE conversation_messages (
                conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
                content TEXT NOT NULL,
                create_time_us INTEGER NOT NULL,
                PRIMARY KEY (conversation_id, seq)
            )""",
        ),
    ),
    (
        2,
        (
            # Tool calling: an assistant reply's calls (a JSON array of {id, name, arguments})
            # and the call a tool message answers; role 'tool' allowed. Old rows keep their
            # values and get NULL in both new columns.
            """CREATE TABLE conversation_messages_v2 (
                conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                role TEXT NOT NULL CHECK (role IN ('user', 'assistant', 'tool')),
                content TEXT NOT NULL,
                create_time_us INTEGER NOT NULL,
                tool_calls TEXT CHECK (tool_calls IS NULL OR role = 'assistant'),
                tool_call_id TEXT CHECK ((tool_call_id IS NOT NULL) = (role = 'tool')),
                PRIMARY KEY (conversation_id, seq)
            )""",
            "INSERT INTO conversation_messages_v2 (conversation_id, seq, role, content, create_time_us) "
            "SELECT conversation_id, seq, role, content, create_time_us FROM conversation_messages",
            "DROP TABLE conversation_messages",
            "ALTER TABLE conversation_messages_v2 RENAME TO conversation_messages",
        ),
    ),
    (
        3,
        (
            # Callers: the caller that created the conversation (its API key's caller name;
            # '' with authentication off). Every read filters on it.
            "ALTER TABLE conversations ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
            "CREATE INDEX conversations_owner_recent ON conversations (owner, update_time_us DESC, id DESC)",
            "DROP INDEX conversations_recent",
        ),
    ),
)

_COLUMNS = "id, system, metadata, create_time_us, update_time_us"


def _conversation(row: Sequence[Any]) -> Conversation:
    return Conversation(str(row[0]), str(row[1]), dict(json.loads(row[2])), int(row[3]), int(row[4]))


class SqliteConversationStore:
    def __init__(self, path: str, *, clock: Callable[[], int] = now_us) -> None:
        self._path = path
        self._clock = clock
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; each one is an explicit BEGIN.
        self._db = await aiosqlite.connect(self._path, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON", "busy_timeout=5000"):
            await self._db.execute(f"PRAGMA {pragma}")
        async with self._transaction() as db:
            await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_us INTEGER NOT NULL)")
            async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cursor:
                row = await cursor.fetchone()
            current = int(row[0]) if row else 0
            newest = MIGRATIONS[-1][0]
            if current > newest:
                raise RuntimeError(f"the conversation database {self._path!r} has schema version {current}, newer than this server's {newest}")
            for version, statements in MIGRATIONS:
                if version > current:
                    for statement in statements:
                        await db.execute(statement)
                    await db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, self._clock()))
            await db.execute("UPDATE conversations SET turn_id = NULL, turn_expires_us = NULL WHERE turn_id IS NOT NULL")

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @asynccontextmanager
    async def _transaction(self, *, write: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        if self._db is None:
            raise RuntimeError("the conversation store is not open")
        db = self._db
        async with self._lock:
            try:
                # IMMEDIATE takes the write lock up front, so a read-then-write cannot fail
                # half-way on a lock upgrade; DEFERRED suffices for a consistent read.
                await db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                yield db
                await db.execute("COMMIT")
            except BaseException as error:
                if db.in_transaction:
                    await db.execute("ROLLBACK")
                if isinstance(error, sqlite3.OperationalError):
                    raise store_unavailable(error) from error
                raise

    @staticmethod
    async def _one(db: aiosqlite.Connection, sql: str, parameters: Sequence[Any]) -> Any:
        async with db.execute(sql, parameters) as cursor:
            return await cursor.fetchone()

    @staticmethod
    async def _messages(db: aiosqlite.Connection, ids: Sequence[str]) -> dict[str, list[StoredMessage]]:
        found: dict[str, list[StoredMessage]] = {conversation_id: [] for conversation_id in ids}
        if not ids:
            return found
        marks = ", ".join("?" for _ in ids)
        sql = (
            "SELECT conversation_id, role, content, create_time_us, tool_calls, tool_call_id FROM conversation_messages "
            f"WHERE conversation_id IN ({marks}) ORDER BY conversation_id, seq"
        )
        async with db.execute(sql, tuple(ids)) as cursor:
            async for row in cursor:
                found[str(row[0])].append(
                    StoredMessage(Role(row[1]), str(row[2]), int(row[3]), tool_calls_from_json(row[4]), None if row[5] is None else str(row[5]))
                )
        return found

    async def _read(self, db: aiosqlite.Connection, conversation_id: str, with_messages: bool, owner: str | None) -> Conversation:
        """The conversation, if it exists and is ``owner``'s (``None``: whoever's, for a turn
        that already holds the lease)."""
        if owner is None:
            row = await self._one(db, f"SELECT {_COLUMNS} FROM conversations WHERE id = ?", (conversation_id,))
        else:
            row = await self._one(db, f"SELECT {_COLUMNS} FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner))
        if row is None:
            raise not_found(conversation_id)
        conversation = _conversation(row)
        if not with_messages:
            return conversation
        return attach_messages([conversation], await self._messages(db, [conversation.id]))[0]

    async def create(self, *, system: str, metadata: Mapping[str, str], owner: str = "") -> Conversation:
        now = self._clock()
        conversation = Conversation(new_conversation_id(), system, dict(metadata), now, now)
        async with self._transaction() as db:
            await db.execute(
                f"INSERT INTO conversations ({_COLUMNS}, owner) VALUES (?, ?, ?, ?, ?, ?)",
                (conversation.id, system, json.dumps(conversation.metadata), now, now, owner),
            )
        return conversation

    async def get(self, conversation_id: str, *, with_messages: bool = True, owner: str = "") -> Conversation:
        async with self._transaction(write=False) as db:
            return await self._read(db, conversation_id, with_messages, owner)

    async def list_page(self, *, limit: int, after: PageCursor | None, with_messages: bool, owner: str = "") -> list[Conversation]:
        where = "WHERE owner = ?"
        parameters: list[int | str] = [owner, limit]
        if after is not None:
            where += " AND (update_time_us < ? OR (update_time_us = ? AND id < ?))"
            parameters = [owner, after.update_time_us, after.update_time_us, after.id, limit]
        sql = f"SELECT {_COLUMNS} FROM conversations {where} ORDER BY update_time_us DESC, id DESC LIMIT ?"
        async with self._transaction(write=False) as db:
            async with db.execute(sql, parameters) as cursor:
                page = [_conversation(row) async for row in cursor]
            if not with_messages:
                return page
            return attach_messages(page, await self._messages(db, [c.id for c in page]))

    async def delete(self, conversation_id: str, *, owner: str = "") -> None:
        async with self._transaction() as db:
            # The owner's row first: another caller's id deletes nothing (and rolls back).
            cursor = await db.execute("DELETE FROM conversations WHERE id = ? AND owner = ?", (conversation_id, owner))
            if cursor.rowcount == 0:
                raise not_found(conversation_id)
            await db.execute("DELETE FROM conversation_messages WHERE conversation_id = ?", (conversation_id,))

    @staticmethod
    async def _append(db: aiosqlite.Connection, conversation_id: str, message: StoredMessage) -> None:
        await db.execute(
            "INSERT INTO conversation_messages (conversation_id, seq, role, content, create_time_us, tool_calls, tool_call_id) "
            "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ?, ? FROM conversation_messages WHERE conversation_id = ?",
            (
                conversation_id,
                message.role.value,
                message.content,
                message.create_time_us,
                tool_calls_json(message.tool_calls),
                message.tool_call_id,
                conversation_id,
            ),
        )

    async def begin_turn(
        self, conversation_id: str, new_messages: Sequence[Message], *, turn_id: str, lease_s: float, owner: str = ""
    ) -> Conversation | None:
        check_new_messages(new_messages)
        now = self._clock()
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE conversations SET turn_id = ?, turn_expires_us = ?, update_time_us = ? "
                "WHERE id = ? AND owner = ? AND (turn_id IS NULL OR turn_expires_us <= ?)",
                (turn_id, now + int(lease_s * 1_000_000), now, conversation_id, owner, now),
            )
            if cursor.rowcount == 0:
                await self._read(db, conversation_id, False, owner)  # raises NOT_FOUND if it is gone (or not the owner's)
                return None
            conversation = await self._read(db, conversation_id, True, owner)
            check_turn(conversation.messages, new_messages)  # raising rolls the lease back too
            added = tuple(StoredMessage.from_message(m, now) for m in new_messages)
            for message in added:
                await self._append(db, conversation_id, message)
            return replace(conversation, messages=conversation.messages + added)

    async def end_turn(self, conversation_id: str, *, turn_id: str, reply: Message | None) -> None:
        now = self._clock()
        stored = None
        if reply is not None:
            check_reply(reply)
            stored = StoredMessage.from_message(reply, now)
            tool_calls_json(stored.tool_calls)  # arguments that are not JSON fail here, before the transaction
        async with self._transaction() as db:
            if stored is None:
                await db.execute("UPDATE conversations SET turn_id = NULL, turn_expires_us = NULL WHERE id = ? AND turn_id = ?", (conversation_id, turn_id))
                return
            cursor = await db.execute(
                "UPDATE conversations SET turn_id = NULL, turn_expires_us = NULL, update_time_us = ? WHERE id = ? AND turn_id = ?",
                (now, conversation_id, turn_id),
            )
            if cursor.rowcount == 0:
                await self._read(db, conversation_id, False, None)
                raise LLMError(ErrorKind.TIMEOUT, "the reply took longer than the turn's lease; it was not stored")
            await self._append(db, conversation_id, stored)
