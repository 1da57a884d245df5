"""Stored conversations as the stores and the servicer see them, and page tokens."""

from __future__ import annotations

import base64
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Role


def now_us() -> int:
    """Wall-clock time in microseconds since the epoch (timestamps shared by replicas)."""
    return time.time_ns() // 1000


def new_conversation_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class StoredMessage:
    role: Role
    content: str
    create_time_us: int


@dataclass(frozen=True)
class Conversation:
    id: str
    system: str
    metadata: dict[str, str]
    create_time_us: int
    update_time_us: int
    # Oldest first; empty when read without messages (the BASIC view).
    messages: tuple[StoredMessage, ...] = field(default=())


def not_found(conversation_id: str) -> LLMError:
    return LLMError(ErrorKind.CONVERSATION_NOT_FOUND, f"conversation {conversation_id!r} does not exist")


def store_unavailable(error: BaseException) -> LLMError:
    """A storage failure the caller may retry (UNAVAILABLE); never the connection string."""
    return LLMError(ErrorKind.NETWORK_ERROR, f"the conversation store is unavailable ({type(error).__name__})")


# What a page token may carry: exactly what the stores can compare against their columns.
# update_time_us is SQLite INTEGER and PostgreSQL BIGINT, both signed 64-bit; ids are the
# stores' own (UUIDs today), so URL-safe ASCII without ':' (no extra fields) and no NUL
# (PostgreSQL TEXT cannot hold one), at most as long as any id the API accepts.
MAX_CURSOR_TIME_US = 2**63 - 1
MAX_CURSOR_ID_CHARS = 128
_CURSOR_ID = re.compile(r"[A-Za-z0-9_-]{1,%d}" % MAX_CURSOR_ID_CHARS)
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]*")
_MAX_TOKEN_CHARS = -(-4 * len(f"v1:{MAX_CURSOR_TIME_US}:{'x' * MAX_CURSOR_ID_CHARS}") // 3)


@dataclass(frozen=True)
class PageCursor:
    """Where a page ends in (update_time desc, id desc) order: the next page starts after it.

    Keyset pagination keeps tokens stable while conversations are added or deleted: no
    entry repeats and none is skipped, except one updated meanwhile (it moves to the front).
    """

    update_time_us: int
    id: str

    @classmethod
    def after(cls, conversation: Conversation) -> PageCursor:
        return cls(conversation.update_time_us, conversation.id)

    def token(self) -> str:
        raw = f"v1:{self.update_time_us}:{self.id}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def from_token(cls, token: str) -> PageCursor:
        """Raises ``ValueError`` for a token this server did not issue.

        Only a token ``token()`` would produce is accepted: unpadded URL-safe base64 of
        ``v1:<update_time_us>:<id>``, the time a canonical decimal in 0..2**63-1 and the id
        1 to 128 URL-safe ASCII characters. So no store ever sees a cursor its columns
        cannot be compared with (an out-of-range integer overflowed SQLite and asyncpg)."""
        if len(token) > _MAX_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(token):
            raise ValueError("not a page token")
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
        except (ValueError, UnicodeDecodeError):
            raise ValueError("not base64") from None
        parts = raw.split(":")
        if len(parts) != 3 or parts[0] != "v1":
            raise ValueError("not a page token")
        update_time, conversation_id = parts[1], parts[2]
        if not (update_time.isascii() and update_time.isdigit()) or not _CURSOR_ID.fullmatch(conversation_id):
            raise ValueError("not a page token")
        cursor = cls(int(update_time), conversation_id)
        # Range, and canonical form: no leading zeros, no stray padding bits in the base64.
        if cursor.update_time_us > MAX_CURSOR_TIME_US or cursor.token() != token:
            raise ValueError("not a page token")
        return cursor


def sort_key(conversation: Conversation) -> tuple[int, str]:
    return conversation.update_time_us, conversation.id


def attach_messages(conversations: Iterable[Conversation], messages: dict[str, list[StoredMessage]]) -> list[Conversation]:
    """Conversations with their messages attached (rows read in one query per page)."""
    return [
        Conversation(c.id, c.system, c.metadata, c.create_time_us, c.update_time_us, tuple(messages.get(c.id, ())))
        for c in conversations
    ]
