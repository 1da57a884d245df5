"""Stored conversations as the stores and the servicer see them, and page tokens."""

from __future__ import annotations

import base64
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
        """Raises ``ValueError`` for a token this server did not issue."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        except (ValueError, UnicodeDecodeError):
            raise ValueError("not base64") from None
        version, _, rest = raw.partition(":")
        update_time, _, conversation_id = rest.partition(":")
        if version != "v1" or not update_time.isdigit() or not conversation_id:
            raise ValueError("not a page token")
        return cls(int(update_time), conversation_id)


def sort_key(conversation: Conversation) -> tuple[int, str]:
    return conversation.update_time_us, conversation.id


def attach_messages(conversations: Iterable[Conversation], messages: dict[str, list[StoredMessage]]) -> list[Conversation]:
    """Conversations with their messages attached (rows read in one query per page)."""
    return [
        Conversation(c.id, c.system, c.metadata, c.create_time_us, c.update_time_us, tuple(messages.get(c.id, ())))
        for c in conversations
    ]
