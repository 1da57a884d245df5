"""``llm_manager.v1.ConversationService``: stored conversations and their turns.

Each conversation belongs to the calling caller (``current_caller_name()``; ``""`` with
authentication off): the store finds only the caller's own, another's id is NOT_FOUND.

Proto <-> domain only: a turn (SendMessage / StreamSendMessage) is validated here and run by
``engine.ConversationTurns`` (store what the turn adds, answer with the conversation so far,
store the reply), which answers with text, tool calls, usage and metadata like Generate's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from google.protobuf import timestamp_pb2
from grpc import aio

from llm_manager.v1 import common_pb2, conversation_service_pb2, conversation_service_pb2_grpc

from ..conversations import Conversation, ConversationStore, PageCursor
from ..conversations.model import StoredMessage
from ..domain.call_context import request_id_var
from ..domain.caller import current_caller_name
from ..domain.errors import FieldViolation, invalid_request
from ..domain.types import GenerationRequest, Message, Role
from ..domain.validation import MAX_REQUEST_CHARS
from ..engine import ConversationTurns, Generator
from . import convert
from .llm_manager import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

MAX_ID_CHARS = 128
MAX_METADATA_ENTRIES = 64
MAX_METADATA_KEY_CHARS = 128
MAX_METADATA_VALUE_CHARS = 1024

_VIEWS = {
    conversation_service_pb2.CONVERSATION_VIEW_UNSPECIFIED,
    conversation_service_pb2.CONVERSATION_VIEW_BASIC,
    conversation_service_pb2.CONVERSATION_VIEW_FULL,
}

SendLike = conversation_service_pb2.SendMessageRequest | conversation_service_pb2.StreamSendMessageRequest


def _timestamp(micros: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromMicroseconds(micros)
    return stamp


def conversation_to_proto(conversation: Conversation) -> conversation_service_pb2.Conversation:
    return conversation_service_pb2.Conversation(
        id=conversation.id,
        system=conversation.system,
        metadata=conversation.metadata,
        create_time=_timestamp(conversation.create_time_us),
        update_time=_timestamp(conversation.update_time_us),
        messages=[_message_to_proto(m) for m in conversation.messages],
    )


def _message_to_proto(stored: StoredMessage) -> common_pb2.ChatMessage:
    message = stored.to_message()
    result = message.tool_result
    return common_pb2.ChatMessage(
        role=convert.ROLE_TO_PROTO[message.role],
        content=message.content,
        create_time=_timestamp(stored.create_time_us),
        tool_calls=[convert.tool_call_to_proto(c) for c in message.tool_calls],
        tool_call_id=result.tool_call_id if result is not None else "",
    )


def _check_id(value: str, field: str, violations: list[FieldViolation]) -> None:
    if not value:
        violations.append(FieldViolation(field, "is required"))
    elif len(value) > MAX_ID_CHARS:
        violations.append(FieldViolation(field, f"must be at most {MAX_ID_CHARS} characters"))


def _full_view(view: int, default_full: bool, violations: list[FieldViolation]) -> bool:
    if view not in _VIEWS:
        violations.append(FieldViolation("view", f"unknown view {view}"))
    if view == conversation_service_pb2.CONVERSATION_VIEW_UNSPECIFIED:
        return default_full
    return view == conversation_service_pb2.CONVERSATION_VIEW_FULL


def _raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        raise invalid_request(*violations)


class ConversationServicer(conversation_service_pb2_grpc.ConversationServiceServicer):
    def __init__(self, store: ConversationStore, generator: Generator) -> None:
        self._store = store
        self._turns = ConversationTurns(store, generator)

    # --- standard methods -----------------------------------------------------------------

    async def CreateConversation(
        self, request: conversation_service_pb2.CreateConversationRequest, context: aio.ServicerContext[Any, Any]
    ) -> conversation_service_pb2.CreateConversationResponse:
        violations: list[FieldViolation] = []
        metadata = dict(request.conversation.metadata)
        if len(metadata) > MAX_METADATA_ENTRIES:
            violations.append(FieldViolation("conversation.metadata", f"at most {MAX_METADATA_ENTRIES} entries, got {len(metadata)}"))
        for key, value in metadata.items():
            if not key.strip() or len(key) > MAX_METADATA_KEY_CHARS:
                violations.append(FieldViolation(f"conversation.metadata[{key!r}]", f"keys must be 1 to {MAX_METADATA_KEY_CHARS} characters, not blank"))
            if len(value) > MAX_METADATA_VALUE_CHARS:
                violations.append(FieldViolation(f"conversation.metadata[{key!r}]", f"values must be at most {MAX_METADATA_VALUE_CHARS} characters"))
        if len(request.conversation.system) > MAX_REQUEST_CHARS:
            violations.append(FieldViolation("conversation.system", f"must be at most {MAX_REQUEST_CHARS} characters"))
        _raise_if(violations)
        conversation = await self._store.create(system=request.conversation.system, metadata=metadata, owner=current_caller_name())
        return conversation_service_pb2.CreateConversationResponse(conversation=conversation_to_proto(conversation))

    async def GetConversation(
        self, request: conversation_service_pb2.GetConversationRequest, context: aio.ServicerContext[Any, Any]
    ) -> conversation_service_pb2.GetConversationResponse:
        violations: list[FieldViolation] = []
        _check_id(request.id, "id", violations)
        full = _full_view(request.view, True, violations)
        _raise_if(violations)
        conversation = await self._store.get(request.id, with_messages=full, owner=current_caller_name())
        return conversation_service_pb2.GetConversationResponse(conversation=conversation_to_proto(conversation))

    async def ListConversations(
        self, request: conversation_service_pb2.ListConversationsRequest, context: aio.ServicerContext[Any, Any]
    ) -> conversation_service_pb2.ListConversationsResponse:
        violations: list[FieldViolation] = []
        if request.page_size < 0:
            violations.append(FieldViolation("page_size", f"must not be negative, got {request.page_size}"))
        after: PageCursor | None = None
        if request.page_token:
            try:
                after = PageCursor.from_token(request.page_token)
            except ValueError:
                violations.append(FieldViolation("page_token", "is not a token this server issued"))
        full = _full_view(request.view, False, violations)
        _raise_if(violations)
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        # One more than asked tells whether another page follows.
        page = await self._store.list_page(limit=size + 1, after=after, with_messages=full, owner=current_caller_name())
        more = len(page) > size
        page = page[:size]
        return conversation_service_pb2.ListConversationsResponse(
            conversations=[conversation_to_proto(c) for c in page],
            next_page_token=PageCursor.after(page[-1]).token() if more else "",
        )

    async def DeleteConversation(
        self, request: conversation_service_pb2.DeleteConversationRequest, context: aio.ServicerContext[Any, Any]
    ) -> conversation_service_pb2.DeleteConversationResponse:
        violations: list[FieldViolation] = []
        _check_id(request.id, "id", violations)
        _raise_if(violations)
        await self._store.delete(request.id, owner=current_caller_name())
        return conversation_service_pb2.DeleteConversationResponse()

    # --- turns ----------------------------------------------------------------------------

    @staticmethod
    def _turn_request(request: SendLike) -> tuple[list[Message], GenerationRequest]:
        """Validates a turn: the messages it adds (tool results, then the user's message) and
        the request template (messages still empty). Nothing is stored yet."""
        violations: list[FieldViolation] = []
        _check_id(request.conversation_id, "conversation_id", violations)
        new_messages = convert.tool_results_from_proto(request.tool_results, violations)
        if len(request.message) > MAX_REQUEST_CHARS:
            violations.append(FieldViolation("message", f"must be at most {MAX_REQUEST_CHARS} characters"))
        elif request.message.strip():
            new_messages.append(Message.of(Role.USER, request.message))
        elif not request.tool_results:
            violations.append(FieldViolation("message", "must not be empty (unless the turn gives tool_results)"))
        task = convert.task_from_proto(request.task_type, violations)
        sampling, strategy = convert.sampling_from_proto(request.preferences, violations)
        tools, tool_choice = convert.tools_from_proto(request, violations)
        _raise_if(violations)
        template = GenerationRequest(
            messages=(),
            task_type=task,
            sampling=sampling,
            model=request.preferences.model or None,
            strategy=strategy,
            no_cache=True,
            no_store=True,
            tools=tools,
            tool_choice=tool_choice,
        )
        return new_messages, template

    async def SendMessage(
        self, request: conversation_service_pb2.SendMessageRequest, context: aio.ServicerContext[Any, Any]
    ) -> conversation_service_pb2.SendMessageResponse:
        reply = convert.Reply()
        new_messages, template = self._turn_request(request)
        answer = await self._turns.send(request.conversation_id, new_messages, template, owner=current_caller_name())
        return conversation_service_pb2.SendMessageResponse(**reply.fields(answer, request_id=request_id_var.get()))

    async def StreamSendMessage(
        self, request: conversation_service_pb2.StreamSendMessageRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[conversation_service_pb2.StreamSendMessageResponse]:
        reply = convert.Reply()
        new_messages, template = self._turn_request(request)
        async with aclosing(self._turns.stream(request.conversation_id, new_messages, template, owner=current_caller_name())) as stream:
            async for delta in stream:
                if delta.answer is not None:
                    yield conversation_service_pb2.StreamSendMessageResponse(
                        **reply.fields(delta.answer, request_id=request_id_var.get(), text="", tool_calls=())
                    )
                elif delta.text or delta.tool_calls:
                    reply.output_arrived()
                    yield conversation_service_pb2.StreamSendMessageResponse(**convert.piece_fields(delta.text, delta.model, delta.tool_calls))
