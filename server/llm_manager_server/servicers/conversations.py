"""``llm_manager.v1.ConversationService``: stored conversations and their turns.

A turn (SendMessage / StreamSendMessage) validates the request, plans the route to learn
the context window, stores the user's message, sends the conversation so far (trimmed, see
``conversations.context``) through the same ``Generator`` as Generate, stores the complete
reply, and answers with text, usage and metadata like Generate's. Turns bypass the response
cache: SendMessage has no cache control, and a conversation's reply should be generated
for it, not replayed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from google.protobuf import timestamp_pb2
from grpc import aio

from llm_manager.v1 import common_pb2, conversation_service_pb2, conversation_service_pb2_grpc

from ..conversations import Conversation, ConversationStore, PageCursor, TurnCoordinator
from ..conversations.context import check_fits, context_messages, prompt_budget
from ..domain.errors import FieldViolation, invalid_request
from ..domain.types import CallMetadata, GenerationRequest, Message, Role
from ..domain.call_context import deadline_var, request_id_var
from . import convert
from .llm_manager import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, Generator

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
        messages=[
            common_pb2.ChatMessage(role=convert.ROLE_TO_PROTO[m.role], content=m.content, create_time=_timestamp(m.create_time_us))
            for m in conversation.messages
        ],
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
        self._generator = generator
        self._turns = TurnCoordinator(store)

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
        if len(request.conversation.system) > convert.MAX_REQUEST_CHARS:
            violations.append(FieldViolation("conversation.system", f"must be at most {convert.MAX_REQUEST_CHARS} characters"))
        _raise_if(violations)
        conversation = await self._store.create(system=request.conversation.system, metadata=metadata)
        return conversation_service_pb2.CreateConversationResponse(conversation=conversation_to_proto(conversation))

    async def GetConversation(
        self, request: conversation_service_pb2.GetConversationRequest, context: aio.ServicerContext[Any, Any]
    ) -> conversation_service_pb2.GetConversationResponse:
        violations: list[FieldViolation] = []
        _check_id(request.id, "id", violations)
        full = _full_view(request.view, True, violations)
        _raise_if(violations)
        conversation = await self._store.get(request.id, with_messages=full)
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
        page = await self._store.list_page(limit=size + 1, after=after, with_messages=full)
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
        await self._store.delete(request.id)
        return conversation_service_pb2.DeleteConversationResponse()

    # --- turns ----------------------------------------------------------------------------

    async def _prepare(self, request: SendLike) -> tuple[GenerationRequest, int]:
        """Validates a turn and checks it can fit; returns the request template (messages
        still empty) and the prompt's token budget. Nothing is stored yet."""
        violations: list[FieldViolation] = []
        _check_id(request.conversation_id, "conversation_id", violations)
        if not request.message.strip():
            violations.append(FieldViolation("message", "must not be empty"))
        elif len(request.message) > convert.MAX_REQUEST_CHARS:
            violations.append(FieldViolation("message", f"must be at most {convert.MAX_REQUEST_CHARS} characters"))
        task = convert.task_from_proto(request.task_type, violations)
        sampling, strategy = convert.sampling_from_proto(request.preferences, violations)
        convert.unsupported_tools(request, violations)
        if request.tool_results:
            violations.append(FieldViolation("tool_results", "tool calling is not supported by this server version yet"))
        _raise_if(violations)
        conversation = await self._store.get(request.conversation_id, with_messages=False)
        template = GenerationRequest(
            messages=(),
            task_type=task,
            sampling=sampling,
            model=request.preferences.model or None,
            strategy=strategy,
            no_cache=True,
            no_store=True,
        )
        probe = [Message(Role.SYSTEM, conversation.system)] if conversation.system else []
        probe.append(Message(Role.USER, request.message))
        window = self._generator.context_window(replace(template, messages=tuple(probe)))
        budget = prompt_budget(window, sampling.max_tokens)
        check_fits(conversation.system, request.message, budget)
        return template, budget

    async def SendMessage(
        self, request: conversation_service_pb2.SendMessageRequest, context: aio.ServicerContext[Any, Any]
    ) -> conversation_service_pb2.SendMessageResponse:
        reply = convert.Reply()
        template, budget = await self._prepare(request)
        metadata = CallMetadata()
        async with self._turns.turn(request.conversation_id, request.message, deadline_var.get()) as turn:
            messages = context_messages(turn.conversation.system, turn.conversation.messages, budget)
            text, model, usage, finish = await self._generator.generate(replace(template, messages=messages), metadata)
            await turn.complete(text)
        reply.complete(model, usage, finish)
        return conversation_service_pb2.SendMessageResponse(**reply.fields(metadata, request_id=request_id_var.get(), text=text))

    async def StreamSendMessage(
        self, request: conversation_service_pb2.StreamSendMessageRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[conversation_service_pb2.StreamSendMessageResponse]:
        reply = convert.Reply()
        template, budget = await self._prepare(request)
        metadata = CallMetadata()
        # A cancelled call (the caller went away) raises CancelledError out of the stream:
        # nothing here catches it, the turn ends without a reply (the user's message stays)
        # and the upstream generation is stopped by the cancellation itself.
        async with self._turns.turn(request.conversation_id, request.message, deadline_var.get()) as turn:
            messages = context_messages(turn.conversation.system, turn.conversation.messages, budget)
            pieces: list[str] = []
            async with aclosing(self._generator.stream(replace(template, messages=messages), metadata)) as stream:
                async for text, model, usage, finish in stream:
                    reply.piece(text, model, usage, finish)
                    if text:
                        pieces.append(text)
                        yield conversation_service_pb2.StreamSendMessageResponse(text=text, model=model)
            # The reply is durable before the caller sees the stream end.
            await turn.complete("".join(pieces))
        yield conversation_service_pb2.StreamSendMessageResponse(**reply.fields(metadata, request_id=request_id_var.get()))
