"""Trimming a conversation to the context window: oldest turns first, system prompt kept."""

from __future__ import annotations

import pytest

from llm_manager_server.conversations import StoredMessage
from llm_manager_server.conversations.context import (
    check_fits,
    context_messages,
    estimate_tokens,
    prompt_budget,
    reply_reserve,
)
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import Message, Role
from llm_manager_server.routing.strategy import estimate_prompt_tokens


def history(*texts: tuple[Role, str]) -> list[StoredMessage]:
    return [StoredMessage(role, text, index) for index, (role, text) in enumerate(texts)]


U, A = Role.USER, Role.ASSISTANT
# 40 characters: 10 tokens of text + 4 of overhead.
LINE = "x" * 40
LINE_TOKENS = 14


def test_estimates_agree_with_the_router() -> None:
    assert estimate_tokens(LINE) == LINE_TOKENS
    assert estimate_tokens("abcde") == 1 + 4
    messages = [Message(U, LINE), Message(A, "abcde"), Message(U, "")]
    assert estimate_prompt_tokens([]) + sum(estimate_tokens(m.content) for m in messages) == estimate_prompt_tokens(messages)


def test_the_reply_reserve_is_max_tokens_or_a_quarter_of_the_window() -> None:
    assert reply_reserve(2048, 16) == 16
    assert reply_reserve(2048, None) == 512
    assert reply_reserve(1_000_000, None) == 4096
    assert reply_reserve(2048, 100_000) == 100_000
    assert prompt_budget(2048, 16) == 2048 - 16 - estimate_prompt_tokens([])


def test_everything_is_kept_when_it_fits() -> None:
    turns = history((U, "a"), (A, "b"), (U, "c"))
    assert context_messages("sys", turns, 1000) == (
        Message(Role.SYSTEM, "sys"), Message(U, "a"), Message(A, "b"), Message(U, "c"),
    )


def test_oldest_whole_turns_go_first_and_the_system_prompt_stays() -> None:
    turns = history((U, LINE), (A, LINE), (U, LINE), (A, LINE), (U, LINE))
    system_tokens = estimate_tokens("sys")
    # Room for the system prompt and three messages: the newest turn (1) and the one before (2).
    kept = context_messages("sys", turns, system_tokens + 3 * LINE_TOKENS)
    assert [m.role for m in kept] == [Role.SYSTEM, U, A, U]
    # One token less: the middle turn no longer fits whole, so it goes whole.
    kept = context_messages("sys", turns, system_tokens + 3 * LINE_TOKENS - 1)
    assert [m.role for m in kept] == [Role.SYSTEM, U]


def test_the_context_never_starts_with_an_orphaned_reply() -> None:
    turns = history((U, LINE), (A, LINE * 3), (U, LINE))
    kept = context_messages("", turns, 2 * LINE_TOKENS)
    assert kept == (Message(U, LINE),)


def test_unanswered_user_messages_are_turns_of_their_own() -> None:
    turns = history((U, "failed earlier"), (U, "retry"), (A, "answer"), (U, "next"))
    kept = context_messages("", turns, estimate_tokens("retry") + estimate_tokens("answer") + estimate_tokens("next"))
    assert [m.content for m in kept] == ["retry", "answer", "next"]


def test_empty_messages_are_not_sent() -> None:
    turns = history((U, "a"), (A, ""), (U, "b"))
    assert [m.content for m in context_messages("", turns, 1000)] == ["a", "b"]


def test_a_new_message_that_cannot_fit_is_context_too_large() -> None:
    with pytest.raises(LLMError) as raised:
        check_fits("s" * 400, "m" * 400, 150)
    assert raised.value.kind is ErrorKind.CONTEXT_TOO_LARGE
    assert raised.value.metadata == {"estimated_tokens": str(104 + 104), "limit_tokens": "150"}
    check_fits("s" * 400, "m" * 400, 208)
    with pytest.raises(LLMError):
        check_fits("", "hello", prompt_budget(2048, 5000))  # the reply alone would not fit
    with pytest.raises(LLMError):
        context_messages("", history((U, "m" * 400)), 100)
