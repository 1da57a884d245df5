"""Upgrading conversation databases of schema version 2 (tool calling) to version 3 (each
conversation's owner, for API keys).

``schema_v2/`` holds ``sqlite.py`` and ``postgres.py`` of commit 2c0cb5f (unchanged until
the owner column), byte for byte, loaded like ``test_store_migrations``'s version-1 copies.
Conversations written by that code belong to no caller after the upgrade (owner ``""``): with
authentication off they read back unchanged; a caller with a key sees none of them.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import asyncpg
import pytest

from llm_manager_server.conversations import reply_message
from llm_manager_server.conversations.postgres import PostgresConversationStore
from llm_manager_server.conversations.sqlite import SqliteConversationStore
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import Message, Role

from .conftest import StepClock

V2_COMMIT = "2c0cb5f51aa77aac953a53e1811ad784e863b448"
V2_SOURCES = Path(__file__).parent / "schema_v2"
REPO = Path(__file__).resolve().parents[2]


def load_v2(name: str) -> ModuleType:
    module_name = f"llm_manager_server.conversations._schema_v2_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    path = V2_SOURCES / f"{name}.py.txt"
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "llm_manager_server.conversations"
    sys.modules[module_name] = module
    exec(compile(path.read_text(), str(path), "exec"), module.__dict__)  # noqa: S102 - our own old source
    return module


@pytest.mark.parametrize("name", ["sqlite", "postgres"])
def test_the_version_2_sources_are_the_old_release_verbatim(name: str) -> None:
    shown = subprocess.run(["git", "show", f"{V2_COMMIT}:server/llm_manager_server/conversations/{name}.py"], cwd=REPO, capture_output=True)
    assert shown.returncode == 0, shown.stderr
    assert (V2_SOURCES / f"{name}.py.txt").read_bytes() == shown.stdout
    assert [version for version, _ in load_v2(name).MIGRATIONS] == [1, 2]


async def _write_with_v2(old: object) -> list[str]:
    first = await old.create(system="old", metadata={"k": "v"})  # type: ignore[attr-defined]
    await old.begin_turn(first.id, [Message.of(Role.USER, "hello")], turn_id="t1", lease_s=60)  # type: ignore[attr-defined]
    await old.end_turn(first.id, turn_id="t1", reply=reply_message("hi"))  # type: ignore[attr-defined]
    second = await old.create(system="", metadata={})  # type: ignore[attr-defined]
    return [first.id, second.id]


async def _check_upgraded(new: SqliteConversationStore | PostgresConversationStore, ids: list[str]) -> None:
    # Authentication off (owner ""): everything as before.
    listed = await new.list_page(limit=10, after=None, with_messages=True)
    assert sorted(c.id for c in listed) == sorted(ids)
    first = await new.get(ids[0])
    assert [(m.role, m.content) for m in first.messages] == [(Role.USER, "hello"), (Role.ASSISTANT, "hi")]
    # A caller with a key: none of them, in any method.
    assert await new.list_page(limit=10, after=None, with_messages=False, owner="alice") == []
    for call in (
        new.get(ids[0], owner="alice"),
        new.delete(ids[0], owner="alice"),
        new.begin_turn(ids[0], [Message.of(Role.USER, "mine?")], turn_id="x", lease_s=60, owner="alice"),
    ):
        with pytest.raises(LLMError) as raised:
            await call
        assert raised.value.kind is ErrorKind.CONVERSATION_NOT_FOUND
    # Alice's own conversation is hers alone.
    hers = await new.create(system="", metadata={}, owner="alice")
    assert [c.id for c in await new.list_page(limit=10, after=None, with_messages=False, owner="alice")] == [hers.id]
    assert hers.id not in [c.id for c in await new.list_page(limit=10, after=None, with_messages=False)]
    assert (await new.get(ids[0])).id == ids[0]  # still there after alice's attempts


def _sqlite_versions(path: Path) -> list[int]:
    with sqlite3.connect(path) as db:
        return [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]


async def test_sqlite_upgrades_a_version_2_database(tmp_path: Path, clock: StepClock) -> None:
    path = tmp_path / "conversations.db"
    old = load_v2("sqlite").SqliteConversationStore(str(path), clock=clock)
    await old.open()
    ids = await _write_with_v2(old)
    await old.close()
    assert _sqlite_versions(path) == [1, 2]
    new = SqliteConversationStore(str(path), clock=clock)
    await new.open()
    try:
        assert _sqlite_versions(path) == [1, 2, 3]
        await _check_upgraded(new, ids)
    finally:
        await new.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        indexes = {row[1] for row in db.execute("PRAGMA index_list(conversations)")}
        assert "conversations_owner_recent" in indexes and "conversations_recent" not in indexes
    refused = load_v2("sqlite").SqliteConversationStore(str(path), clock=clock)
    with pytest.raises(RuntimeError, match="newer than this server's 2"):
        await refused.open()
    await refused.close()


async def test_postgres_upgrades_a_version_2_database(postgres_dsn: str, clock: StepClock) -> None:
    old = load_v2("postgres").PostgresConversationStore(postgres_dsn, clock=clock)
    await old.open()
    try:
        ids = await _write_with_v2(old)
        new = PostgresConversationStore(postgres_dsn, clock=clock)
        await new.open()
        try:
            await _check_upgraded(new, ids)
            # A replica still on version 2 during the rolling upgrade keeps working; what it
            # creates belongs to no caller.
            third = await old.create(system="during", metadata={})
            assert third.id in [c.id for c in await new.list_page(limit=10, after=None, with_messages=False)]
            assert third.id not in [c.id for c in await new.list_page(limit=10, after=None, with_messages=False, owner="alice")]
        finally:
            await new.close()
    finally:
        await old.close()
    connection = await asyncpg.connect(postgres_dsn)
    try:
        versions = [r[0] for r in await connection.fetch("SELECT version FROM llm_manager_schema_migrations ORDER BY version")]
        indexes = {r[0] for r in await connection.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'conversations'")}
    finally:
        await connection.close()
    assert versions == [1, 2, 3] and "conversations_owner_recent" in indexes and "conversations_recent" not in indexes
