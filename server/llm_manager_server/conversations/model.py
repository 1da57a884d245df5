"""Stored conversations as the stores and the servicer see them, and page tokens.

A stored message is a row: its role, its text, and for tool calling the assistant's tool
calls (``tool_calls``) or, for a ``Role.TOOL`` message, the call it answers
(``tool_call_id``; the result is ``content``). :meth:`StoredMessage.to_message` and
:meth:`StoredMessage.from_message` convert to and from the domain :class:`Message`.

What a turn may store, checked by every store inside the turn's transaction
(:func:`check_turn`): the turn's new messages are tool results first, then at most one user
message, at least one of them; tool results answer the calls of the conversation's last
reply, each call exactly once.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..domain.errors import ErrorKind, FieldViolation, LLMError, invalid_request
from ..domain.types import Message, Part, Role, TextPart, ToolCall, ToolResult


def now_us() -> int:
    """Wall-clock time in microseconds since the epoch (timestamps shared by replicas)."""
    return time.time_ns() // 1000


def new_conversation_id() -> str:
    return str(uuid.uuid4())


def reply_message(text: str, tool_calls: Sequence[ToolCall] = ()) -> Message:
    """An assistant reply as a domain message: its text (left out when empty and there are
    calls) followed by its tool calls."""
    if not tool_calls:
        return Message.of(Role.ASSISTANT, text)
    parts: tuple[Part, ...] = (TextPart(text),) if text else ()
    return Message(Role.ASSISTANT, parts + tuple(tool_calls))


@dataclass(frozen=True)
class StoredMessage:
    role: Role
    # The text; for a Role.TOOL message, the tool's result.
    content: str
    create_time_us: int
    # An assistant reply's tool calls, in the order the model made them.
    tool_calls: tuple[ToolCall, ...] = ()
    # A Role.TOOL message: the id of the call it answers.
    tool_call_id: str | None = None

    def to_message(self) -> Message:
        """The domain message: text, tool calls or the tool result as parts."""
        if self.role is Role.TOOL:
            return Message(Role.TOOL, (ToolResult(self.tool_call_id or "", self.content),))
        if self.role is Role.ASSISTANT:
            return reply_message(self.content, self.tool_calls)
        return Message.of(self.role, self.content)

    @classmethod
    def from_message(cls, message: Message, create_time_us: int) -> StoredMessage:
        """Raises ``ValueError`` for a message no store can hold: a tool message must be
        exactly one tool result, tool calls only come from the assistant, and user and
        system messages are text."""
        text = "".join(p.text for p in message.parts if isinstance(p, TextPart))
        calls = message.tool_calls
        results = [p for p in message.parts if isinstance(p, ToolResult)]
        if message.role is Role.TOOL:
            if len(results) != 1 or len(message.parts) != 1:
                raise ValueError("a tool message is exactly one tool result")
            return cls(Role.TOOL, results[0].content, create_time_us, tool_call_id=results[0].tool_call_id)
        if results:
            raise ValueError(f"a {message.role.value} message cannot carry a tool result")
        if calls and message.role is not Role.ASSISTANT:
            raise ValueError(f"a {message.role.value} message cannot carry tool calls")
        return cls(message.role, text, create_time_us, tool_calls=calls)


def tool_calls_json(calls: Sequence[ToolCall]) -> str | None:
    """The stores' column value for an assistant's tool calls (``None``: no calls)."""
    if not calls:
        return None
    return json.dumps([{"id": c.id, "name": c.name, "arguments": c.arguments} for c in calls], ensure_ascii=False)


def tool_calls_from_json(value: str | None) -> tuple[ToolCall, ...]:
    if not value:
        return ()
    return tuple(ToolCall(str(c["id"]), str(c["name"]), dict(c["arguments"])) for c in json.loads(value))


def check_new_messages(new_messages: Sequence[Message]) -> None:
    """Raises ``ValueError`` unless the messages are what one turn may add: tool results
    first, then at most one user message, and at least one message."""
    if not new_messages:
        raise ValueError("a turn adds at least one message (tool results or the user's message)")
    for position, message in enumerate(new_messages):
        if message.role is Role.USER:
            if position != len(new_messages) - 1:
                raise ValueError("the user's message comes last in a turn, after the tool results")
        elif message.role is not Role.TOOL:
            raise ValueError(f"a turn cannot add a {message.role.value} message")
        StoredMessage.from_message(message, 0)  # a tool message is one result; user text is text


def check_reply(reply: Message) -> None:
    """Raises ``ValueError`` unless ``reply`` is an assistant message a store can hold (its
    text, possibly empty, and any tool calls)."""
    if reply.role is not Role.ASSISTANT:
        raise ValueError(f"a reply is an assistant message, not a {reply.role.value} message")
    StoredMessage.from_message(reply, 0)


def pending_tool_calls(history: Sequence[StoredMessage]) -> tuple[ToolCall, ...]:
    """The calls the next turn's tool results may answer: those of the last reply, while
    only tool results (an earlier, failed attempt at answering them) have followed it."""
    for message in reversed(history):
        if message.role is Role.ASSISTANT:
            return message.tool_calls
        if message.role is not Role.TOOL:
            return ()
    return ()


def check_turn(history: Sequence[StoredMessage], new_messages: Sequence[Message]) -> None:
    """Checks a turn against the stored conversation (in the turn's transaction).

    Raises ``ValueError`` for a malformed turn (see :func:`check_new_messages`) and
    ``INVALID_REQUEST`` with field violations (``tool_results[i]...``, ``i`` counting the
    turn's tool results) when its tool results do not answer each call of the last reply
    exactly once. A turn of only a user message is always accepted: calls it leaves
    unanswered are left out of later contexts."""
    check_new_messages(new_messages)
    results = [m.tool_result for m in new_messages if m.role is Role.TOOL]
    if not results:
        return
    pending = pending_tool_calls(history)
    if not pending:
        raise invalid_request(FieldViolation("tool_results", "the conversation's last reply made no tool calls that await results"))
    pending_ids = [c.id for c in pending]
    violations: list[FieldViolation] = []
    answered: set[str] = set()
    for index, result in enumerate(results):
        assert result is not None  # check_new_messages: one result per tool message
        field_name = f"tool_results[{index}].tool_call_id"
        if result.tool_call_id not in pending_ids:
            violations.append(FieldViolation(field_name, f"{result.tool_call_id!r} is not a call of the last reply (its calls: {', '.join(pending_ids)})"))
        elif result.tool_call_id in answered:
            violations.append(FieldViolation(field_name, f"answers call {result.tool_call_id!r} a second time"))
        answered.add(result.tool_call_id)
    missing = [i for i in pending_ids if i not in answered]
    if missing:
        violations.append(FieldViolation("tool_results", f"no result for the last reply's calls {', '.join(missing)}; each call needs one"))
    if violations:
        raise invalid_request(*violations)


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
