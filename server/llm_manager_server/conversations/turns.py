"""Ordering of concurrent turns on one conversation.

Two SendMessage calls on one conversation must never lose an update, so turns run one at a
time per conversation, in arrival order: within this process they queue on an
``asyncio.Lock`` (FIFO); across processes sharing a store the store's turn lease decides,
and a turn waits (polling) until the other process's turn ends or its lease expires. A turn
that cannot start before its call's deadline fails with TIMEOUT (DEADLINE_EXCEEDED).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Message
from .base import ConversationStore
from .model import Conversation, check_new_messages, check_reply

log = logging.getLogger(__name__)

# A lease outlives its turn's deadline by this much, so it never expires under a live turn.
LEASE_MARGIN_S = 5.0
# Without a deadline (tests, internal callers) a dead holder's lease still ends.
MAX_LEASE_S = 3600.0
POLL_INTERVAL_S = 0.05


class Turn:
    """One turn in progress: the conversation with the turn's new messages stored last
    (``new_count`` of them)."""

    def __init__(self, store: ConversationStore, conversation: Conversation, turn_id: str, new_count: int) -> None:
        self.conversation = conversation
        self.turn_id = turn_id
        self.new_count = new_count
        self._store = store
        self.finished = False

    async def complete(self, reply: Message) -> None:
        """Stores the assistant's reply (text and/or tool calls; ``model.reply_message``
        builds one) and ends the turn; the reply is durable when this returns."""
        check_reply(reply)
        await self._store.end_turn(self.conversation.id, turn_id=self.turn_id, reply=reply)
        self.finished = True


class TurnCoordinator:
    def __init__(self, store: ConversationStore, *, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self._store = store
        self._poll_interval_s = poll_interval_s
        # One lock per conversation with turns waiting or running; dropped when unused.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[conversation_id] = lock
        return lock

    @staticmethod
    def _waited_too_long(conversation_id: str) -> LLMError:
        return LLMError(
            ErrorKind.TIMEOUT,
            f"the call's deadline passed while an earlier message in conversation {conversation_id!r} was being answered",
        )

    async def _release(self, conversation_id: str, turn_id: str) -> None:
        """Ends a turn without a reply. Shielded, so a cancelled call still releases its lease;
        a failure here is logged, not raised over the error that ended the turn (the lease
        then expires by itself)."""
        try:
            await asyncio.shield(self._store.end_turn(conversation_id, turn_id=turn_id, reply=None))
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the turn's own outcome is what the caller must see
            log.warning("could not release the turn lease of conversation %s", conversation_id, exc_info=True)

    async def _begin(self, conversation_id: str, new_messages: Sequence[Message], deadline: float, owner: str) -> Turn:
        loop = asyncio.get_running_loop()
        lease_s = min(max(deadline - loop.time(), 0.0), MAX_LEASE_S) + LEASE_MARGIN_S
        while True:
            turn_id = uuid.uuid4().hex
            try:
                conversation = await self._store.begin_turn(conversation_id, new_messages, turn_id=turn_id, lease_s=lease_s, owner=owner)
            except asyncio.CancelledError:
                # Cancelled after the store committed? Then the lease is ours: give it back.
                await self._release(conversation_id, turn_id)
                raise
            if conversation is not None:
                return Turn(self._store, conversation, turn_id, len(new_messages))
            if loop.time() + self._poll_interval_s >= deadline:
                raise self._waited_too_long(conversation_id)
            await asyncio.sleep(self._poll_interval_s)

    @asynccontextmanager
    async def turn(self, conversation_id: str, new_messages: Sequence[Message], deadline: float, *, owner: str = "") -> AsyncIterator[Turn]:
        """Stores the turn's new messages (tool results, then the user's message; either
        may be absent, not both) and yields the turn; if the body leaves without
        :meth:`Turn.complete` (an error, a cancellation), the turn ends with no reply and
        the new messages stay stored. Tool results that do not answer the last reply's
        calls are INVALID_REQUEST, raised before the body runs, with nothing stored. Only the
        ``owner``'s conversation takes a turn (another's is CONVERSATION_NOT_FOUND)."""
        check_new_messages(new_messages)
        new_messages = tuple(new_messages)
        lock = self._lock(conversation_id)
        try:
            async with asyncio.timeout_at(deadline):
                await lock.acquire()
        except TimeoutError:
            raise self._waited_too_long(conversation_id) from None
        try:
            turn = await self._begin(conversation_id, new_messages, deadline, owner)
            try:
                yield turn
            finally:
                if not turn.finished:
                    await self._release(conversation_id, turn.turn_id)
        finally:
            lock.release()
