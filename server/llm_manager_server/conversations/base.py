"""The conversation store contract shared by the memory, SQLite and PostgreSQL stores.

Durability rules every store keeps:

- ``begin_turn`` stores the turn's new messages (tool results answering the last reply's
  calls, then the user's message; either may be absent, not both) and takes the
  conversation's *turn lease* in one transaction, before the model is called; a crash
  after it keeps the messages.
- ``end_turn`` stores the reply (if any: text and/or tool calls) and releases the lease in
  one transaction, so a reply is either absent or whole: a crash mid-reply leaves no
  half-written turn.
- While one turn holds the lease, no other turn can begin on that conversation (in any
  process sharing the store), so concurrent turns are ordered and none is lost. The lease
  expires on its own (after the turn's deadline) in case its holder died.

Ownership: a conversation belongs to the caller that created it (``owner``, the caller's
name; ``""`` with authentication off). Every read and every turn names the owner and finds
only that owner's conversations: another caller's id is CONVERSATION_NOT_FOUND, exactly like
an id that never existed, so ids cannot be probed. (``end_turn`` needs no owner: only the
holder of the turn's lease, which ``begin_turn`` gave out after checking it, can end it.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from ..domain.types import Message
from .model import Conversation, PageCursor


class ConversationStore(Protocol):
    async def open(self) -> None:
        """Connects and runs schema migrations; called once before serving."""

    async def close(self) -> None: ...

    async def create(self, *, system: str, metadata: Mapping[str, str], owner: str = "") -> Conversation: ...

    async def get(self, conversation_id: str, *, with_messages: bool = True, owner: str = "") -> Conversation:
        """Raises ``LLMError(CONVERSATION_NOT_FOUND)`` for an unknown id (or another owner's)."""
        ...

    async def list_page(self, *, limit: int, after: PageCursor | None, with_messages: bool, owner: str = "") -> list[Conversation]:
        """Up to ``limit`` of the owner's conversations after the cursor, most recently updated first."""
        ...

    async def delete(self, conversation_id: str, *, owner: str = "") -> None:
        """Deletes a conversation and its messages; raises CONVERSATION_NOT_FOUND."""
        ...

    async def begin_turn(
        self, conversation_id: str, new_messages: Sequence[Message], *, turn_id: str, lease_s: float, owner: str = ""
    ) -> Conversation | None:
        """Takes the turn lease and stores ``new_messages`` in order; returns the conversation
        with every message (the new ones last), or ``None`` while another turn holds the
        lease. Raises CONVERSATION_NOT_FOUND; ``ValueError`` for messages no turn may add
        (``model.check_new_messages``); INVALID_REQUEST, storing nothing, when the tool
        results do not answer each call of the last reply once (``model.check_turn``)."""
        ...

    async def end_turn(self, conversation_id: str, *, turn_id: str, reply: Message | None) -> None:
        """Stores the assistant's ``reply`` (its text, possibly empty, and tool calls;
        ``None``: no reply, the turn failed) and releases the lease. With a reply, raises
        CONVERSATION_NOT_FOUND if the conversation was deleted meanwhile, and TIMEOUT if
        the lease had expired (the reply is not stored)."""
        ...
