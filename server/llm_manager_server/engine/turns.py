"""A conversation turn: store what the caller adds (tool results, a message), send the
conversation so far (trimmed to the chosen model's window, see ``conversations.context``)
through the same ``Generator`` as Generate, store the complete reply (text and tool calls),
and answer like Generate. Turns bypass the response cache: a conversation's reply should be
generated for it, not replayed. Tool results must answer the calls of the conversation's last
reply, each once: the store checks that inside the turn's transaction (``begin_turn``). Only
the ``owner``'s conversations (the calling caller's) take turns."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import replace

from ..conversations import ConversationStore, TurnCoordinator, reply_message
from ..conversations.context import check_fits, context_messages, prompt_budget
from ..domain.call_context import deadline_var
from ..domain.types import Answer, GenerationRequest, Message, Role, StreamDelta
from .generator import Generator


class ConversationTurns:
    def __init__(self, store: ConversationStore, generator: Generator) -> None:
        self._store = store
        self._generator = generator
        self._turns = TurnCoordinator(store)

    async def _prepare(self, conversation_id: str, new_messages: Sequence[Message], template: GenerationRequest, owner: str) -> int:
        """Checks the turn can be served and fits; returns the prompt's token budget."""
        conversation = await self._store.get(conversation_id, with_messages=False, owner=owner)
        probe = [Message.of(Role.SYSTEM, conversation.system)] if conversation.system else []
        probe.extend(new_messages)
        window = self._generator.context_window(replace(template, messages=tuple(probe)))
        budget = prompt_budget(window, template.sampling.max_tokens)
        check_fits(conversation.system, new_messages, budget)
        return budget

    async def send(self, conversation_id: str, new_messages: Sequence[Message], template: GenerationRequest, *, owner: str = "") -> Answer:
        budget = await self._prepare(conversation_id, new_messages, template, owner)
        async with self._turns.turn(conversation_id, new_messages, deadline_var.get(), owner=owner) as turn:
            messages = context_messages(turn.conversation.system, turn.conversation.messages, budget, new_count=len(new_messages))
            answer = await self._generator.generate(replace(template, messages=messages))
            await turn.complete(reply_message(answer.text, answer.tool_calls))
        return answer

    async def stream(
        self, conversation_id: str, new_messages: Sequence[Message], template: GenerationRequest, *, owner: str = ""
    ) -> AsyncGenerator[StreamDelta, None]:
        """The reply as it arrives. A cancelled call (the caller went away) raises
        CancelledError out of the stream: the turn ends without a reply (what the caller added
        stays) and the upstream generation is stopped by the cancellation itself. The reply is
        durable before the caller sees the stream end."""
        budget = await self._prepare(conversation_id, new_messages, template, owner)
        async with self._turns.turn(conversation_id, new_messages, deadline_var.get(), owner=owner) as turn:
            messages = context_messages(turn.conversation.system, turn.conversation.messages, budget, new_count=len(new_messages))
            async with aclosing(self._generator.stream(replace(template, messages=messages))) as stream:
                async for delta in stream:
                    if delta.answer is not None:
                        await turn.complete(reply_message(delta.answer.text, delta.answer.tool_calls))
                    yield delta
