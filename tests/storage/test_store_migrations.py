"""Upgrading conversation databases written by the previous release (schema version 1).

The old databases are written by the old release's own store code: ``schema_v1/`` holds
``sqlite.py`` and ``postgres.py`` of commit 87d22c7 (unchanged since 2715188, which
introduced them), byte for byte, loaded as modules of today's ``conversations`` package (so
their relative imports resolve; they only use what ``model.py`` still offers the same way).
Each test writes conversations with that code, opens the database with today's store (which
migrates it on open) and checks that the old messages read back unchanged and that tool
turns can be written and read. PostgreSQL is the session's private server: if it is
missing the tests fail, never skip.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg
import pytest

from llm_manager_server.conversations import Conversation, ConversationStore, reply_message
from llm_manager_server.conversations.postgres import PostgresConversationStore
from llm_manager_server.conversations.sqlite import SqliteConversationStore
from llm_manager_server.domain.types import Message, Role, ToolCall, ToolResult

from .conftest import StepClock

V1_COMMIT = "87d22c712e32b8f5188e2589a681f2d8e6020053"
V1_SOURCES = Path(__file__).parent / "schema_v1"
REPO = Path(__file__).resolve().parents[2]
ODD_TEXT = "quotes ' \" ; DROP TABLE conversation_messages; -- émoji 🙂\nand\ttabs \x01"

CALL_A = ToolCall("call_a", "lookup", {"query": "p99 latency", "window": {"minutes": 15}, "services": ["api", "db"]})
CALL_B = ToolCall("call_b", "lookup", {"query": ODD_TEXT, "limit": 10, "exact": True, "ratio": 0.25, "none": None})


def load_v1(name: str) -> ModuleType:
    """The old release's ``conversations/<name>.py`` as a module of today's package."""
    module_name = f"llm_manager_server.conversations._schema_v1_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = V1_SOURCES / f"{name}.py.txt"
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "llm_manager_server.conversations"
    sys.modules[module_name] = module
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)  # noqa: S102 - our own old source
    return module


def text_turn(text: str) -> list[Message]:
    return [Message.of(Role.USER, text)]


def result(call_id: str, content: str) -> Message:
    return Message(Role.TOOL, (ToolResult(call_id, content),))


async def write_with_v1(old: Any) -> tuple[list[Conversation], str]:
    """Conversations as version 1 leaves them: answered turns, a failed turn, a turn cut
    off mid-reply (its lease still held), odd text, an empty conversation. Returns them as
    version 1 reads them back, and the id of the conversation with the held lease."""
    answered = await old.create(system="Answer tersely.", metadata={"team": "obs", "k'\"": ODD_TEXT})
    await old.begin_turn(answered.id, "What is 2+2?", turn_id="t1", lease_s=60)
    await old.end_turn(answered.id, turn_id="t1", reply="4")
    await old.begin_turn(answered.id, "doomed", turn_id="t2", lease_s=60)
    await old.end_turn(answered.id, turn_id="t2", reply=None)
    await old.begin_turn(answered.id, ODD_TEXT, turn_id="t3", lease_s=60)
    await old.end_turn(answered.id, turn_id="t3", reply=ODD_TEXT)
    cut_off = await old.create(system="", metadata={})
    await old.begin_turn(cut_off.id, "interrupted", turn_id="t4", lease_s=3600)
    await old.create(system="empty", metadata={})
    return await old.list_page(limit=10, after=None, with_messages=True), cut_off.id


async def check_upgraded(new: ConversationStore, before: list[Conversation], cut_off_id: str) -> None:
    """The old conversations read back unchanged, and tool turns can be written and read."""
    assert await new.list_page(limit=10, after=None, with_messages=True) == before
    for conversation in before:
        assert await new.get(conversation.id) == conversation
        assert all(m.tool_calls == () and m.tool_call_id is None for m in conversation.messages)
    answered = next(c for c in before if c.system == "Answer tersely.")
    assert [(m.role, m.content) for m in answered.messages] == [
        (Role.USER, "What is 2+2?"), (Role.ASSISTANT, "4"), (Role.USER, "doomed"), (Role.USER, ODD_TEXT), (Role.ASSISTANT, ODD_TEXT),
    ]

    # A tool round trip appended to the old conversation.
    assert await new.begin_turn(answered.id, text_turn("Why is the API slow?"), turn_id="n1", lease_s=60) is not None
    await new.end_turn(answered.id, turn_id="n1", reply=reply_message("", [CALL_A, CALL_B]))
    assert await new.begin_turn(answered.id, [result("call_a", "p99 = 2.3 s"), result("call_b", ODD_TEXT)], turn_id="n2", lease_s=60) is not None
    await new.end_turn(answered.id, turn_id="n2", reply=reply_message("The database is slow.", ()))
    stored = await new.get(answered.id)
    assert stored.messages[: len(answered.messages)] == answered.messages
    assert [m.to_message() for m in stored.messages[len(answered.messages):]] == [
        Message.of(Role.USER, "Why is the API slow?"),
        Message(Role.ASSISTANT, (CALL_A, CALL_B)),
        result("call_a", "p99 = 2.3 s"),
        result("call_b", ODD_TEXT),
        Message.of(Role.ASSISTANT, "The database is slow."),
    ]

    # The conversation whose turn was cut off: its user message is there, no reply.
    cut_off = await new.get(cut_off_id)
    assert [(m.role, m.content) for m in cut_off.messages] == [(Role.USER, "interrupted")]


# --- the copies are the old release's code -------------------------------------------------


@pytest.mark.parametrize("name", ["sqlite", "postgres"])
def test_the_version_1_sources_are_the_old_release_verbatim(name: str) -> None:
    shown = subprocess.run(
        ["git", "show", f"{V1_COMMIT}:server/llm_manager_server/conversations/{name}.py"], cwd=REPO, capture_output=True
    )
    if shown.returncode != 0:
        pytest.skip(f"commit {V1_COMMIT[:7]} is not in this checkout: {shown.stderr.decode(errors='replace').strip()}")
    assert (V1_SOURCES / f"{name}.py.txt").read_bytes() == shown.stdout
    assert [version for version, _ in load_v1(name).MIGRATIONS] == [1]


# --- SQLite --------------------------------------------------------------------------------


def sqlite_schema(path: Path) -> tuple[list[int], list[str]]:
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]
        columns = [row[1] for row in db.execute("PRAGMA table_info(conversation_messages)")]
    return versions, columns


async def test_sqlite_upgrades_a_version_1_database(tmp_path: Path, clock: StepClock) -> None:
    path = tmp_path / "conversations.db"
    old = load_v1("sqlite").SqliteConversationStore(str(path), clock=clock)
    await old.open()
    before, cut_off_id = await write_with_v1(old)
    await old.close()
    assert sqlite_schema(path) == ([1], ["conversation_id", "seq", "role", "content", "create_time_us"])

    new = SqliteConversationStore(str(path), clock=clock)
    await new.open()
    try:
        assert sqlite_schema(path) == (
            [1, 2, 3], ["conversation_id", "seq", "role", "content", "create_time_us", "tool_calls", "tool_call_id"],
        )
        await check_upgraded(new, before, cut_off_id)
        # SQLite's store owns its file: the cut-off turn's lease was cleared on open.
        assert await new.begin_turn(cut_off_id, text_turn("again"), turn_id="n3", lease_s=60) is not None
        await new.end_turn(cut_off_id, turn_id="n3", reply=reply_message("ok"))
        after = await new.list_page(limit=10, after=None, with_messages=True)
        deleted = before[-1].id
        await new.delete(deleted)  # the rebuilt table still cascades and deletes
    finally:
        await new.close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        assert [(row[2], row[3], row[4], row[6]) for row in db.execute("PRAGMA foreign_key_list(conversation_messages)")] == [
            ("conversations", "conversation_id", "id", "CASCADE"),
        ]
        assert db.execute("SELECT COUNT(*) FROM conversation_messages WHERE conversation_id = ?", (deleted,)).fetchone() == (0,)
        # The new constraints hold: a tool row needs the call it answers, calls only on replies.
        some_id = before[0].id
        for bad in (
            ("tool", None, None),
            ("user", None, "call_a"),
            ("user", '[{"id": "x", "name": "y", "arguments": {}}]', None),
            ("system", None, None),
        ):
            with pytest.raises(sqlite3.IntegrityError):
                db.execute(
                    "INSERT INTO conversation_messages VALUES (?, 1000, ?, 'x', 1, ?, ?)", (some_id, bad[0], bad[1], bad[2])
                )

    # Reopening migrates nothing again; version 1's code refuses the newer database.
    applied = sqlite3.connect(path).execute("SELECT version, applied_us FROM schema_migrations").fetchall()
    again = SqliteConversationStore(str(path), clock=clock)
    await again.open()
    try:
        assert await again.list_page(limit=10, after=None, with_messages=True) == [c for c in after if c.id != deleted]
    finally:
        await again.close()
    assert sqlite3.connect(path).execute("SELECT version, applied_us FROM schema_migrations").fetchall() == applied
    refused = load_v1("sqlite").SqliteConversationStore(str(path), clock=clock)
    with pytest.raises(RuntimeError, match="newer than this server's 1"):
        await refused.open()
    await refused.close()


async def test_sqlite_two_stores_opening_a_version_1_database_at_once_migrate_it_once(tmp_path: Path, clock: StepClock) -> None:
    path = tmp_path / "conversations.db"
    old = load_v1("sqlite").SqliteConversationStore(str(path), clock=clock)
    await old.open()
    before, _ = await write_with_v1(old)
    await old.close()
    stores = [SqliteConversationStore(str(path), clock=clock) for _ in range(2)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert sqlite_schema(path)[0] == [1, 2, 3]
        for store in stores:
            assert await store.list_page(limit=10, after=None, with_messages=True) == before
    finally:
        for store in stores:
            await store.close()


# --- PostgreSQL ----------------------------------------------------------------------------


async def postgres_schema(dsn: str) -> tuple[list[int], list[tuple[str, str, str]], list[str]]:
    connection = await asyncpg.connect(dsn)
    try:
        versions = [r[0] for r in await connection.fetch("SELECT version FROM llm_manager_schema_migrations ORDER BY version")]
        columns = [
            (r[0], r[1], r[2])
            for r in await connection.fetch(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                "WHERE table_name = 'conversation_messages' ORDER BY ordinal_position"
            )
        ]
        checks = [
            r[0]
            for r in await connection.fetch(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = 'conversation_messages'::regclass AND contype = 'c' ORDER BY conname"
            )
        ]
    finally:
        await connection.close()
    return versions, columns, checks


V1_COLUMNS = [
    ("conversation_id", "text", "NO"),
    ("seq", "integer", "NO"),
    ("role", "text", "NO"),
    ("content", "text", "NO"),
    ("create_time_us", "bigint", "NO"),
]
V2_COLUMNS = V1_COLUMNS + [("tool_calls", "text", "YES"), ("tool_call_id", "text", "YES")]


async def test_postgres_upgrades_a_version_1_database(postgres_dsn: str, clock: StepClock) -> None:
    old = load_v1("postgres").PostgresConversationStore(postgres_dsn, clock=clock)
    await old.open()
    try:
        before, cut_off_id = await write_with_v1(old)
    finally:
        await old.close()
    versions, columns, checks = await postgres_schema(postgres_dsn)
    assert (versions, columns) == ([1], V1_COLUMNS)
    assert checks == ["CHECK ((role = ANY (ARRAY['user'::text, 'assistant'::text])))"]

    new = PostgresConversationStore(postgres_dsn, clock=clock)
    await new.open()
    try:
        versions, columns, checks = await postgres_schema(postgres_dsn)
        assert (versions, columns) == ([1, 2, 3], V2_COLUMNS)
        assert len(checks) == 2 and "'tool'::text" in checks[0] and "tool_call_id IS NOT NULL" in checks[1]
        await check_upgraded(new, before, cut_off_id)
        # Replicas share PostgreSQL: a lease is never cleared on open, it expires.
        assert await new.begin_turn(cut_off_id, text_turn("again"), turn_id="n3", lease_s=60) is None
    finally:
        await new.close()

    connection = await asyncpg.connect(postgres_dsn)
    try:
        for bad in (("tool", None, None), ("user", None, "call_a"), ("user", "[]", None), ("system", None, None)):
            with pytest.raises(asyncpg.CheckViolationError):
                await connection.execute(
                    "INSERT INTO conversation_messages VALUES ($1, 1000, $2, 'x', 1, $3, $4)", before[0].id, *bad
                )
        applied = await connection.fetch("SELECT version, applied_us FROM llm_manager_schema_migrations ORDER BY version")
    finally:
        await connection.close()

    # Reopening migrates nothing again; version 1's code refuses the newer database.
    again = PostgresConversationStore(postgres_dsn, clock=clock)
    await again.open()
    await again.close()
    connection = await asyncpg.connect(postgres_dsn)
    try:
        assert await connection.fetch("SELECT version, applied_us FROM llm_manager_schema_migrations ORDER BY version") == applied
    finally:
        await connection.close()
    refused = load_v1("postgres").PostgresConversationStore(postgres_dsn, clock=clock)
    with pytest.raises(RuntimeError, match="newer than this server's 1"):
        await refused.open()
    await refused.close()


async def test_postgres_replicas_opening_a_version_1_database_at_once_migrate_it_once(postgres_dsn: str, clock: StepClock) -> None:
    old = load_v1("postgres").PostgresConversationStore(postgres_dsn, clock=clock)
    await old.open()
    try:
        before, _ = await write_with_v1(old)
    finally:
        await old.close()
    replicas = [PostgresConversationStore(postgres_dsn, clock=clock) for _ in range(4)]
    try:
        await asyncio.gather(*(r.open() for r in replicas))
        versions, columns, checks = await postgres_schema(postgres_dsn)
        assert (versions, columns, len(checks)) == ([1, 2, 3], V2_COLUMNS, 2)
        for replica in replicas:
            assert await replica.list_page(limit=10, after=None, with_messages=True) == before
    finally:
        for replica in replicas:
            await replica.close()


async def test_postgres_a_version_1_replica_keeps_serving_text_turns_during_the_upgrade(postgres_dsn: str, clock: StepClock) -> None:
    """A rolling upgrade: a replica still running version 1 (connected before the
    migration) goes on storing and reading text turns, and the new replicas read them."""
    old = load_v1("postgres").PostgresConversationStore(postgres_dsn, clock=clock)
    await old.open()
    new = PostgresConversationStore(postgres_dsn, clock=clock)
    try:
        conversation = await old.create(system="", metadata={})
        await old.begin_turn(conversation.id, "before", turn_id="o1", lease_s=60)
        await old.end_turn(conversation.id, turn_id="o1", reply="one")
        await old.get(conversation.id)  # its statements are prepared and cached before the change
        await new.open()
        await old.begin_turn(conversation.id, "after", turn_id="o2", lease_s=60)
        await old.end_turn(conversation.id, turn_id="o2", reply="two")
        seen_by_old = await old.get(conversation.id)
        assert [m.content for m in seen_by_old.messages] == ["before", "one", "after", "two"]
        assert await new.get(conversation.id) == seen_by_old
    finally:
        await old.close()
        await new.close()
