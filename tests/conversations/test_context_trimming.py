"""Trimming a conversation to the context window: oldest turns first, system prompt kept,
tool calls and their results together."""

from __future__ import annotations

import random

import pytest

from llm_manager_server.conversations import StoredMessage
from llm_manager_server.conversations.context import (
    check_fits,
    context_messages,
    estimate_message_tokens,
    estimate_tokens,
    prompt_budget,
    reply_reserve,
)
from llm_manager_server.conversations.model import check_turn
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import Message, Role, TextPart, ToolCall, ToolResult
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
    messages = [Message.of(U, LINE), Message.of(A, "abcde"), Message.of(U, "")]
    assert estimate_prompt_tokens([]) + sum(estimate_tokens(m.content) for m in messages) == estimate_prompt_tokens(messages)


def test_the_reply_reserve_is_max_tokens_or_a_quarter_of_the_window() -> None:
    assert reply_reserve(2048, 16) == 16
    assert reply_reserve(2048, None) == 512
    assert reply_reserve(1_000_000, None) == 4096
    assert reply_reserve(2048, 100_000) == 100_000
    assert prompt_budget(2048, 16) == 2048 - 16 - estimate_prompt_tokens([])


def test_everything_is_kept_when_it_fits() -> None:
    turns = history((U, "a"), (A, "b"), (U, "c"))
    assert context_messages("sys", turns, 1000, new_count=1) == (
        Message.of(Role.SYSTEM, "sys"), Message.of(U, "a"), Message.of(A, "b"), Message.of(U, "c"),
    )


def test_oldest_whole_turns_go_first_and_the_system_prompt_stays() -> None:
    turns = history((U, LINE), (A, LINE), (U, LINE), (A, LINE), (U, LINE))
    system_tokens = estimate_tokens("sys")
    # Room for the system prompt and three messages: the newest turn (1) and the one before (2).
    kept = context_messages("sys", turns, system_tokens + 3 * LINE_TOKENS, new_count=1)
    assert [m.role for m in kept] == [Role.SYSTEM, U, A, U]
    # One token less: the middle turn no longer fits whole, so it goes whole.
    kept = context_messages("sys", turns, system_tokens + 3 * LINE_TOKENS - 1, new_count=1)
    assert [m.role for m in kept] == [Role.SYSTEM, U]


def test_the_context_never_starts_with_an_orphaned_reply() -> None:
    turns = history((U, LINE), (A, LINE * 3), (U, LINE))
    kept = context_messages("", turns, 2 * LINE_TOKENS, new_count=1)
    assert kept == (Message.of(U, LINE),)


def test_unanswered_user_messages_are_turns_of_their_own() -> None:
    turns = history((U, "failed earlier"), (U, "retry"), (A, "answer"), (U, "next"))
    kept = context_messages("", turns, estimate_tokens("retry") + estimate_tokens("answer") + estimate_tokens("next"), new_count=1)
    assert [m.content for m in kept] == ["retry", "answer", "next"]


def test_empty_messages_are_not_sent() -> None:
    turns = history((U, "a"), (A, ""), (U, "b"))
    assert [m.content for m in context_messages("", turns, 1000, new_count=1)] == ["a", "b"]


def test_a_new_message_that_cannot_fit_is_context_too_large() -> None:
    with pytest.raises(LLMError) as raised:
        check_fits("s" * 400, [Message.of(U, "m" * 400)], 150)
    assert raised.value.kind is ErrorKind.CONTEXT_TOO_LARGE
    assert raised.value.metadata == {"estimated_tokens": str(104 + 104), "limit_tokens": "150"}
    check_fits("s" * 400, [Message.of(U, "m" * 400)], 208)
    with pytest.raises(LLMError):
        check_fits("", [Message.of(U, "hello")], prompt_budget(2048, 5000))  # the reply alone would not fit
    with pytest.raises(LLMError):
        context_messages("", history((U, "m" * 400)), 100, new_count=1)


# --- tool calls and tool results ---------------------------------------------------------------

T = Role.TOOL


def u(text: str) -> StoredMessage:
    return StoredMessage(U, text, 0)


def a(text: str, *calls: ToolCall) -> StoredMessage:
    return StoredMessage(A, text, 0, calls)


def t(call_id: str, content: str = "ok") -> StoredMessage:
    return StoredMessage(T, content, 0, tool_call_id=call_id)


def c(call_id: str, **arguments: object) -> ToolCall:
    return ToolCall(call_id, "lookup", dict(arguments))


C1, C2 = c("c1", q="p99"), c("c2", q="errors")


def show(messages: tuple[Message, ...]) -> list[str]:
    """Messages in a compact notation: ``user q``, ``assistant text [c1 c2]``, ``tool c1: r``."""
    shown = []
    for message in messages:
        if message.role is T:
            assert message.parts == (message.tool_result,)
            shown.append(f"tool {message.tool_result.tool_call_id}: {message.content}")  # type: ignore[union-attr]
        else:
            calls = " ".join(call.id for call in message.tool_calls)
            shown.append(" ".join(x for x in (message.role.value, message.content, f"[{calls}]" if calls else "") if x))
    return shown


def cost(*messages: StoredMessage) -> int:
    return sum(estimate_message_tokens(m.to_message()) for m in messages)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        pytest.param(
            [u("q"), a("", C1, C2), t("c1", "r1"), t("c2", "r2"), a("done"), u("next")],
            ["user q", "assistant [c1 c2]", "tool c1: r1", "tool c2: r2", "assistant done", "user next"],
            id="answered-calls-go-with-their-results",
        ),
        pytest.param(
            [u("q"), a("", C1, C2), t("c2", "r2"), t("c1", "r1"), u("next")],
            ["user q", "assistant [c1 c2]", "tool c1: r1", "tool c2: r2", "user next"],
            id="results-follow-in-the-calls-order",
        ),
        pytest.param(
            [u("q"), a("checking", C1), u("never mind")],
            ["user q", "assistant checking", "user never mind"],
            id="an-unanswered-call-is-left-out-its-text-stays",
        ),
        pytest.param(
            [u("q"), a("", C1), u("never mind")],
            ["user q", "user never mind"],
            id="a-reply-of-only-unanswered-calls-is-left-out",
        ),
        pytest.param(
            [u("q"), a("", C1, C2), t("c2", "r2"), u("next")],
            ["user q", "assistant [c2]", "tool c2: r2", "user next"],
            id="a-partly-answered-reply-keeps-the-answered-call",
        ),
        pytest.param(
            [u("q"), a("", C1), u("other"), t("c1", "late"), u("next")],
            ["user q", "user other", "user next"],
            id="a-result-not-right-after-its-call-is-left-out",
        ),
        pytest.param(
            [u("q"), a("", C1), t("c1", "r1"), t("c9", "stray"), u("next")],
            ["user q", "assistant [c1]", "tool c1: r1", "user next"],
            id="a-result-for-an-unknown-call-is-left-out",
        ),
        pytest.param(
            [u("q"), a("", C1), t("c1", "first try"), t("c1", "second try")],
            ["user q", "assistant [c1]", "tool c1: second try"],
            id="a-retried-result-replaces-the-earlier-one",
        ),
        pytest.param(
            [u("q"), a("", C1), t("c1", "")],
            ["user q", "assistant [c1]", "tool c1: "],
            id="an-empty-result-is-still-sent",
        ),
        pytest.param([t("c1", "orphan"), u("q")], ["user q"], id="a-history-starting-with-a-result"),
    ],
)
def test_the_context_pairs_every_tool_call_with_its_result(stored: list[StoredMessage], expected: list[str]) -> None:
    assert show(context_messages("", stored, 100_000, new_count=1)) == expected


def test_tool_content_is_sent_as_parts() -> None:
    with_text = a("Let me look.", C1, C2)
    kept = context_messages("sys", [u("q"), with_text, t("c1", "r1"), t("c2", "r2")], 1000, new_count=2)
    assert kept == (
        Message.of(Role.SYSTEM, "sys"),
        Message.of(U, "q"),
        Message(A, (TextPart("Let me look."), C1, C2)),
        Message(T, (ToolResult("c1", "r1"),)),
        Message(T, (ToolResult("c2", "r2"),)),
    )


OLD_TOOL_TURN = [u("q1"), a("", C1), t("c1", LINE), a(LINE)]
NEW_TOOL_TURN = [u("q2"), a("", c("c3", q="x")), t("c3", LINE)]


@pytest.mark.parametrize(
    ("stored", "new_count", "budget", "expected"),
    [
        pytest.param(
            OLD_TOOL_TURN + [u("next")], 1, cost(u("next"), t("c1", LINE), a(LINE)),
            ["user next"],
            id="room-for-the-old-turns-result-and-reply-but-not-its-call-drops-it-whole",
        ),
        pytest.param(
            OLD_TOOL_TURN + [u("next")], 1, cost(*OLD_TOOL_TURN, u("next")),
            ["user q1", "assistant [c1]", f"tool c1: {LINE}", f"assistant {LINE}", "user next"],
            id="the-old-tool-turn-fits-whole",
        ),
        pytest.param(
            OLD_TOOL_TURN + NEW_TOOL_TURN, 1, cost(*NEW_TOOL_TURN),
            ["user q2", "assistant [c3]", f"tool c3: {LINE}"],
            id="new-results-keep-their-call-and-its-question",
        ),
        pytest.param(
            OLD_TOOL_TURN + NEW_TOOL_TURN, 1, cost(*NEW_TOOL_TURN) - 1, None,
            id="new-results-whose-turn-cannot-fit-are-refused",
        ),
        pytest.param(
            OLD_TOOL_TURN + NEW_TOOL_TURN + [u("more")], 2, cost(*NEW_TOOL_TURN, u("more")),
            ["user q2", "assistant [c3]", f"tool c3: {LINE}", "user more"],
            id="results-and-user-text-keep-both-turns",
        ),
        pytest.param(
            OLD_TOOL_TURN + NEW_TOOL_TURN + [u("more")], 2, cost(*NEW_TOOL_TURN, u("more")) - 1, None,
            id="results-and-user-text-are-refused-although-the-text-alone-would-fit",
        ),
        pytest.param(
            [u("q1"), a("", c("c1", blob="y" * 4000)), t("c1", "r"), a("ok"), u("next")], 1,
            cost(u("q1"), a(""), t("c1", "r"), a("ok"), u("next")) + 100,
            ["user next"],
            id="tool-call-arguments-count-towards-the-budget",
        ),
        pytest.param(
            [u("q1"), a("", C1), t("c1", "z" * 4000), a("ok"), u("next")], 1,
            cost(u("q1"), a("", C1), t("c1", ""), a("ok"), u("next")) + 100,
            ["user next"],
            id="tool-results-count-towards-the-budget",
        ),
    ],
)
def test_trimming_keeps_tool_calls_and_results_together(
    stored: list[StoredMessage], new_count: int, budget: int, expected: list[str] | None
) -> None:
    if expected is None:
        with pytest.raises(LLMError) as raised:
            context_messages("", stored, budget, new_count=new_count)
        assert raised.value.kind is ErrorKind.CONTEXT_TOO_LARGE
        assert raised.value.metadata["limit_tokens"] == str(budget)
    else:
        assert show(context_messages("", stored, budget, new_count=new_count)) == expected


@pytest.mark.parametrize(
    ("message", "chars"),
    [
        pytest.param(Message.of(U, LINE), 40, id="text"),
        pytest.param(Message(A, (TextPart("abcd"), ToolCall("id-not-counted", "f", {"x": 1}))), 4 + 1 + len('{"x":1}'), id="text-and-a-call"),
        pytest.param(Message(A, (ToolCall("1", "get", {"city": "Zürich"}), ToolCall("2", "get", {}))), 3 + len('{"city":"Zürich"}') + 3 + 2, id="two-calls"),
        pytest.param(Message(T, (ToolResult("id-not-counted", "r" * 40),)), 40, id="a-result"),
        pytest.param(Message(A, ()), 0, id="nothing"),
    ],
)
def test_estimates_count_tool_calls_and_results(message: Message, chars: int) -> None:
    assert estimate_message_tokens(message) == estimate_tokens("x" * chars)


def test_check_fits_counts_the_new_tool_results_and_text() -> None:
    new = [Message(T, (ToolResult("c1", "r" * 400),)), Message.of(U, "m" * 400)]
    check_fits("", new, 208)
    with pytest.raises(LLMError) as raised:
        check_fits("", new, 207)
    assert raised.value.metadata == {"estimated_tokens": "208", "limit_tokens": "207"}
    check_fits("", new[:1], 104)  # results alone, no user text


def test_a_turn_has_new_messages() -> None:
    with pytest.raises(ValueError):
        context_messages("", [u("q")], 100, new_count=0)


def random_history(rng: random.Random) -> tuple[list[StoredMessage], int]:
    """A history the stores accept (each turn passes ``check_turn``), ending with a turn's
    new messages: answered, partly retried and abandoned tool calls, failed turns."""
    history: list[StoredMessage] = []
    pending: list[ToolCall] = []
    turns = rng.randint(1, 7)
    for turn in range(turns):
        new: list[Message] = []
        if pending and rng.random() < 0.75:
            order = list(pending)
            rng.shuffle(order)
            new += [Message(T, (ToolResult(call.id, "r" * rng.randint(0, 80)),)) for call in order]
        if not new or rng.random() < 0.4:
            new.append(Message.of(U, "u" * rng.randint(1, 80)))
        check_turn(history, new)
        history += [StoredMessage.from_message(m, len(history)) for m in new]
        if turn == turns - 1:
            return history, len(new)
        if rng.random() < 0.15:  # the model failed: no reply; results stay answerable again
            pending = pending if new[-1].role is T else []
            continue
        pending = [ToolCall(f"t{turn}c{i}", "f", {"k": "v" * rng.randint(0, 60)}) for i in range(rng.choice([0, 0, 1, 2, 3]))]
        history.append(StoredMessage(A, "a" * rng.choice([0, rng.randint(1, 80)]) if pending else "a" * rng.randint(0, 80), len(history), tuple(pending)))
    raise AssertionError("unreachable")


def test_any_trimmed_context_is_one_a_provider_accepts() -> None:
    outcomes = {"trimmed": 0, "whole": 0, "refused": 0, "with tool results": 0}
    for seed in range(500):
        try:
            outcomes[check_a_random_context(seed)] += 1
        except AssertionError as failure:
            raise AssertionError(f"seed {seed}: {failure}") from failure
    # The histories exercise every case, not just one.
    assert min(outcomes.values()) >= 25, outcomes


def check_a_random_context(seed: int) -> str:
    rng = random.Random(seed)
    stored, new_count = random_history(rng)
    everything = context_messages("", stored, 1_000_000, new_count=new_count)
    budget = rng.randint(0, sum(estimate_message_tokens(m) for m in everything) + 10)
    try:
        kept = context_messages("", stored, budget, new_count=new_count)
    except LLMError as error:
        assert error.kind is ErrorKind.CONTEXT_TOO_LARGE
        return "refused"
    assert sum(estimate_message_tokens(m) for m in kept) <= budget
    # Trimming only drops a prefix of whole turns: the context starts with a user message.
    assert kept == everything[len(everything) - len(kept):]
    assert kept and kept[0].role is U
    # The turn's new messages are all there.
    assert all(m.to_message() in kept for m in stored[len(stored) - new_count:])
    # Each reply's calls are followed by exactly one result for each, and results only there.
    position = 0
    while position < len(kept):
        message = kept[position]
        assert message.role is not T, f"a result without its call at {position}: {show(kept)}"
        assert message.content or message.tool_calls or message.role is T
        if message.tool_calls:
            block = kept[position + 1: position + 1 + len(message.tool_calls)]
            assert [m.role for m in block] == [T] * len(message.tool_calls)
            assert sorted(m.tool_result.tool_call_id for m in block) == sorted(call.id for call in message.tool_calls)  # type: ignore[union-attr]
            position += len(message.tool_calls)
        position += 1
    if any(m.role is T for m in kept):
        return "with tool results"
    return "whole" if kept == everything else "trimmed"
