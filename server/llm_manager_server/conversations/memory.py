"""Conversations in this process's memory: for tests and throwaway runs (lost on exit)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Message, ToolCall
from .model import (
    Conversation,
    PageCursor,
    StoredMessage,
    check_new_messages,
    check_reply,
    check_turn,
    new_conversation_id,
    not_found,
    now_us,
    sort_key,
    tool_calls_from_json,
    tool_calls_json,
)


@dataclass
class _Record:
    conversation: Conversation
    owner: str
    messages: list[StoredMessage] = field(default_factory=list)
    turn_id: str | None = None
    turn_expires_us: int = 0


class MemoryConversationStore:
    """Every method runs without awaiting, so each is atomic on the event loop."""

    def __init__(self, *, clock: Callable[[], int] = now_us) -> None:
        self._clock = clock
        self._records: dict[str, _Record] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def _record(self, conversation_id: str, owner: str) -> _Record:
        record = self._records.get(conversation_id)
        if record is None or record.owner != owner:
            raise not_found(conversation_id)
        return record

    @staticmethod
    def _view(record: _Record, with_messages: bool) -> Conversation:
        return replace(record.conversation, messages=tuple(record.messages) if with_messages else ())

    async def create(self, *, system: str, metadata: Mapping[str, str], owner: str = "") -> Conversation:
        now = self._clock()
        conversation = Conversation(new_conversation_id(), system, dict(metadata), now, now)
        self._records[conversation.id] = _Record(conversation, owner)
        return conversation

    async def get(self, conversation_id: str, *, with_messages: bool = True, owner: str = "") -> Conversation:
        return self._view(self._record(conversation_id, owner), with_messages)

    async def list_page(self, *, limit: int, after: PageCursor | None, with_messages: bool, owner: str = "") -> list[Conversation]:
        owned = (r for r in self._records.values() if r.owner == owner)
        ordered = sorted(owned, key=lambda r: sort_key(r.conversation), reverse=True)
        if after is not None:
            ordered = [r for r in ordered if sort_key(r.conversation) < (after.update_time_us, after.id)]
        return [self._view(r, with_messages) for r in ordered[:limit]]

    async def delete(self, conversation_id: str, *, owner: str = "") -> None:
        self._record(conversation_id, owner)
        del self._records[conversation_id]

    def _touch(self, record: _Record, now: int) -> None:
        record.conversation = replace(record.conversation, update_time_us=now)

    async def begin_turn(
        self, conversation_id: str, new_messages: Sequence[Message], *, turn_id: str, lease_s: float, owner: str = ""
    ) -> Conversation | None:
        check_new_messages(new_messages)
        record = self._record(conversation_id, owner)
        now = self._clock()
        if record.turn_id is not None and record.turn_expires_us > now:
            return None
        check_turn(record.messages, new_messages)  # before anything changes, like a rollback
        added = [StoredMessage.from_message(m, now) for m in new_messages]
        record.turn_id = turn_id
        record.turn_expires_us = now + int(lease_s * 1_000_000)
        record.messages.extend(added)
        self._touch(record, now)
        return self._view(record, True)

    async def end_turn(self, conversation_id: str, *, turn_id: str, reply: Message | None) -> None:
        calls: tuple[ToolCall, ...] = ()
        if reply is not None:
            check_reply(reply)
            # Through JSON like the other stores: the same values read back, no aliasing.
            calls = tool_calls_from_json(tool_calls_json(reply.tool_calls))
        record = self._records.get(conversation_id)
        if record is None:
            if reply is not None:
                raise not_found(conversation_id)
            return
        if record.turn_id != turn_id:
            if reply is not None:
                raise LLMError(ErrorKind.TIMEOUT, "the reply took longer than the turn's lease; it was not stored")
            return
        record.turn_id = None
        if reply is not None:
            now = self._clock()
            record.messages.append(replace(StoredMessage.from_message(reply, now), tool_calls=calls))
            self._touch(record, now)
