"""Conversation storage: SQLite file (default), in-memory, or PostgreSQL for replicas.

``LLM_CONVERSATION_STORE`` picks it: ``sqlite:<path>`` (default ``<LLM_DATA_DIR>/
conversations.db``), ``memory``, or a ``postgres://`` / ``postgresql://`` URL.
"""

from __future__ import annotations

from .base import ConversationStore
from .memory import MemoryConversationStore
from .model import Conversation, PageCursor, StoredMessage, reply_message
from .turns import Turn, TurnCoordinator


def conversation_store_for(url: str) -> ConversationStore:
    """The store a ``LLM_CONVERSATION_STORE`` value names (not yet opened)."""
    if url == "memory":
        return MemoryConversationStore()
    if url.startswith("sqlite:"):
        from .sqlite import SqliteConversationStore

        return SqliteConversationStore(url.removeprefix("sqlite:").removeprefix("//"))
    if url.startswith(("postgres://", "postgresql://")):
        from .postgres import PostgresConversationStore

        return PostgresConversationStore(url)
    raise ValueError(f"unknown conversation store {url!r}")


__all__ = [
    "Conversation",
    "ConversationStore",
    "MemoryConversationStore",
    "PageCursor",
    "StoredMessage",
    "Turn",
    "TurnCoordinator",
    "conversation_store_for",
    "reply_message",
]
