"""One suite for every conversation store: memory, SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from llm_manager_server.conversations import ConversationStore, PageCursor, StoredMessage, TurnCoordinator, reply_message
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import Message, Role, TextPart, ToolCall, ToolResult

from .conftest import StepClock, StoreFactory


def roles_and_texts(conversation: object) -> list[tuple[str, str]]:
    return [(m.role.value, m.content) for m in conversation.messages]  # type: ignore[attr-defined]


def user(text: str) -> list[Message]:
    """A turn's new messages: the user's text alone."""
    return [Message.of(Role.USER, text)]


def reply(text: str) -> Message:
    return Message.of(Role.ASSISTANT, text)


def result(call_id: str, content: str) -> Message:
    return Message(Role.TOOL, (ToolResult(call_id, content),))


# Arguments that test the JSON column: nesting, unicode, quotes, numbers, booleans, null.
WEATHER_PARIS = ToolCall("call_1", "get_weather", {"city": "Paris", "units": "celsius", "days": 3})
WEATHER_ROME = ToolCall(
    "call_2",
    "get_weather",
    {"city": "Roma 🏛 \"caput mundi\"", "units": None, "hours": [0, 6.5, 12], "detail": {"wind": True, "rain": False}, "big": 2**62},
)


def messages_of(conversation: object) -> list[Message]:
    return [m.to_message() for m in conversation.messages]  # type: ignore[attr-defined]


async def start_tool_round(store: ConversationStore, conversation_id: str) -> None:
    """A user's question answered by a reply of two tool calls (no text)."""
    await store.begin_turn(conversation_id, user("Weather in Paris and Rome?"), turn_id="t1", lease_s=60)
    await store.end_turn(conversation_id, turn_id="t1", reply=reply_message("", [WEATHER_PARIS, WEATHER_ROME]))


async def test_create_then_get_round_trips(store: ConversationStore) -> None:
    created = await store.create(system="Answer tersely.", metadata={"service": "dashboards", "team": "obs"})
    fetched = await store.get(created.id)
    assert fetched == created
    assert fetched.system == "Answer tersely."
    assert fetched.metadata == {"service": "dashboards", "team": "obs"}
    assert fetched.create_time_us == fetched.update_time_us > 0
    assert fetched.messages == ()


async def test_unknown_id_is_conversation_not_found(store: ConversationStore) -> None:
    for operation in (
        store.get("no-such-id"),
        store.delete("no-such-id"),
        store.begin_turn("no-such-id", user("hello"), turn_id="t1", lease_s=10),
    ):
        with pytest.raises(LLMError) as raised:
            await operation
        assert raised.value.kind is ErrorKind.CONVERSATION_NOT_FOUND


async def test_delete_removes_the_conversation_and_its_messages(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, user("hello"), turn_id="t1", lease_s=10)
    await store.end_turn(conversation.id, turn_id="t1", reply=reply("hi"))
    await store.delete(conversation.id)
    with pytest.raises(LLMError) as raised:
        await store.get(conversation.id)
    assert raised.value.kind is ErrorKind.CONVERSATION_NOT_FOUND
    assert await store.list_page(limit=10, after=None, with_messages=True) == []


async def test_a_turn_stores_the_user_message_first_and_the_reply_when_complete(store: ConversationStore) -> None:
    conversation = await store.create(system="sys", metadata={})
    begun = await store.begin_turn(conversation.id, user("What is 2+2?"), turn_id="t1", lease_s=10)
    assert begun is not None
    assert roles_and_texts(begun) == [("user", "What is 2+2?")]
    # Before the reply: the user's message is already durable, no reply yet.
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "What is 2+2?")]
    await store.end_turn(conversation.id, turn_id="t1", reply=reply("4"))
    stored = await store.get(conversation.id)
    assert roles_and_texts(stored) == [("user", "What is 2+2?"), ("assistant", "4")]
    assert stored.update_time_us > conversation.update_time_us
    assert stored.messages[0].create_time_us < stored.messages[1].create_time_us
    assert stored.create_time_us == conversation.create_time_us


async def test_a_turn_holds_the_conversation_until_it_ends(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    assert await store.begin_turn(conversation.id, user("first"), turn_id="t1", lease_s=60) is not None
    assert await store.begin_turn(conversation.id, user("second"), turn_id="t2", lease_s=60) is None
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "first")]  # the refused turn left nothing
    await store.end_turn(conversation.id, turn_id="t1", reply=reply("one"))
    assert await store.begin_turn(conversation.id, user("second"), turn_id="t2", lease_s=60) is not None


async def test_a_failed_turn_keeps_the_user_message_and_frees_the_conversation(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, user("doomed"), turn_id="t1", lease_s=60)
    await store.end_turn(conversation.id, turn_id="t1", reply=None)
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "doomed")]
    assert await store.begin_turn(conversation.id, user("again"), turn_id="t2", lease_s=60) is not None


async def test_an_expired_lease_can_be_taken_and_the_late_reply_is_refused(store: ConversationStore, clock: StepClock) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, user("slow"), turn_id="t1", lease_s=5)
    clock.advance(6)
    assert await store.begin_turn(conversation.id, user("next"), turn_id="t2", lease_s=5) is not None
    with pytest.raises(LLMError) as raised:
        await store.end_turn(conversation.id, turn_id="t1", reply=reply("too late"))
    assert raised.value.kind is ErrorKind.TIMEOUT
    await store.end_turn(conversation.id, turn_id="t2", reply=reply("on time"))
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "slow"), ("user", "next"), ("assistant", "on time")]


async def test_a_reply_to_a_deleted_conversation_is_not_found(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, user("hello"), turn_id="t1", lease_s=60)
    await store.delete(conversation.id)
    with pytest.raises(LLMError) as raised:
        await store.end_turn(conversation.id, turn_id="t1", reply=reply("hi"))
    assert raised.value.kind is ErrorKind.CONVERSATION_NOT_FOUND
    await store.end_turn(conversation.id, turn_id="t1", reply=None)  # releasing is always safe


async def test_pages_are_most_recently_updated_first_and_tokens_are_stable(store: ConversationStore) -> None:
    created = [await store.create(system=f"c{i}", metadata={}) for i in range(7)]
    # Touch c2: it moves to the front.
    await store.begin_turn(created[2].id, user("bump"), turn_id="t", lease_s=60)
    await store.end_turn(created[2].id, turn_id="t", reply=reply("ok"))
    expected = [created[2].id] + [c.id for c in reversed(created) if c.id != created[2].id]

    first = await store.list_page(limit=3, after=None, with_messages=False)
    assert [c.id for c in first] == expected[:3]
    token = PageCursor.after(first[-1]).token()
    # Added between pages: appears at the front, does not shift the next page.
    await store.create(system="late", metadata={})
    second = await store.list_page(limit=3, after=PageCursor.from_token(token), with_messages=False)
    assert [c.id for c in second] == expected[3:6]
    # The same token gives the same page again.
    again = await store.list_page(limit=3, after=PageCursor.from_token(token), with_messages=False)
    assert [c.id for c in again] == expected[3:6]
    third = await store.list_page(limit=3, after=PageCursor.after(second[-1]), with_messages=False)
    assert [c.id for c in third] == expected[6:]


async def test_listing_returns_messages_only_when_asked(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, user("hello"), turn_id="t", lease_s=60)
    await store.end_turn(conversation.id, turn_id="t", reply=reply("hi"))
    basic = await store.list_page(limit=10, after=None, with_messages=False)
    full = await store.list_page(limit=10, after=None, with_messages=True)
    assert basic[0].messages == ()
    assert roles_and_texts(full[0]) == [("user", "hello"), ("assistant", "hi")]
    assert (await store.get(conversation.id, with_messages=False)).messages == ()


async def test_text_survives_exactly(store: ConversationStore) -> None:
    text = "quotes ' \" ; DROP TABLE conversations; -- émoji 🙂 and\nnewlines\t\x01"
    conversation = await store.create(system=text, metadata={"k'\"": text})
    await store.begin_turn(conversation.id, user(text), turn_id="t", lease_s=60)
    await store.end_turn(conversation.id, turn_id="t", reply=reply(text))
    stored = await store.get(conversation.id)
    assert stored.system == text and stored.metadata == {"k'\"": text}
    assert [m.content for m in stored.messages] == [text, text]


async def test_a_reopened_store_keeps_everything_and_migrates_once(make_store: StoreFactory) -> None:
    first = await make_store()
    conversation = await first.create(system="persist me", metadata={"a": "b"})
    await first.begin_turn(conversation.id, user("hello"), turn_id="t", lease_s=60)
    await first.end_turn(conversation.id, turn_id="t", reply=reply("hi"))
    await first.close()
    reopened = await make_store()  # runs the migrations again: they must be a no-op
    stored = await reopened.get(conversation.id)
    assert stored.system == "persist me" and stored.metadata == {"a": "b"}
    assert roles_and_texts(stored) == [("user", "hello"), ("assistant", "hi")]


async def test_concurrent_turns_on_one_conversation_are_ordered_not_lost(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    turns = TurnCoordinator(store, poll_interval_s=0.01)
    seen_history: dict[str, list[str]] = {}

    async def send(text: str) -> None:
        async with turns.turn(conversation.id, user(text), deadline=asyncio.get_running_loop().time() + 30) as turn:
            seen_history[text] = [m.content for m in turn.conversation.messages]
            await asyncio.sleep(0.02)  # the "model" takes a moment; the other turn must wait
            await turn.complete(reply(f"reply to {text}"))

    await asyncio.gather(*(send(f"m{i}") for i in range(4)))
    stored = await store.get(conversation.id)
    assert len(stored.messages) == 8
    # Strictly alternating: each turn ran alone and saw every earlier turn whole.
    assert [m.role for m in stored.messages] == [Role.USER, Role.ASSISTANT] * 4
    for asked, answered in zip(stored.messages[::2], stored.messages[1::2], strict=True):
        assert answered.content == f"reply to {asked.content}"
        history = seen_history[asked.content]
        assert history[-1] == asked.content
        assert history[:-1] == [m.content for m in stored.messages[: stored.messages.index(asked)]]


async def test_a_cancelled_turn_releases_the_conversation(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    turns = TurnCoordinator(store, poll_interval_s=0.01)
    entered = asyncio.Event()

    async def hang() -> None:
        async with turns.turn(conversation.id, user("hanging"), deadline=asyncio.get_running_loop().time() + 30):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(hang())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with turns.turn(conversation.id, user("next"), deadline=asyncio.get_running_loop().time() + 5) as turn:
        await turn.complete(reply("fine"))
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "hanging"), ("user", "next"), ("assistant", "fine")]


async def test_a_turn_that_cannot_start_before_its_deadline_times_out(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    turns = TurnCoordinator(store, poll_interval_s=0.01)
    loop = asyncio.get_running_loop()
    async with turns.turn(conversation.id, user("long"), deadline=loop.time() + 30):
        with pytest.raises(LLMError) as raised:
            async with turns.turn(conversation.id, user("impatient"), deadline=loop.time() + 0.1):
                pass
    assert raised.value.kind is ErrorKind.TIMEOUT
    assert "earlier message" in raised.value.message


# --- tool calls and tool results -------------------------------------------------------------


async def test_a_tool_round_trip_is_stored_in_order_with_ids_and_arguments_intact(make_store: StoreFactory) -> None:
    store = await make_store()
    conversation = await store.create(system="Use the tools.", metadata={})
    await start_tool_round(store, conversation.id)
    # The next turn: the two results (in another order than the calls), no user text.
    begun = await store.begin_turn(
        conversation.id, [result("call_2", "18 °C, cloudy"), result("call_1", "")], turn_id="t2", lease_s=60
    )
    assert begun is not None
    assert [m.role for m in begun.messages] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.TOOL]
    await store.end_turn(conversation.id, turn_id="t2", reply=reply("Paris: no data; Rome: 18 °C and cloudy."))

    expected = [
        Message.of(Role.USER, "Weather in Paris and Rome?"),
        Message(Role.ASSISTANT, (WEATHER_PARIS, WEATHER_ROME)),
        Message(Role.TOOL, (ToolResult("call_2", "18 °C, cloudy"),)),
        Message(Role.TOOL, (ToolResult("call_1", ""),)),
        Message.of(Role.ASSISTANT, "Paris: no data; Rome: 18 °C and cloudy."),
    ]
    stored = await store.get(conversation.id)
    assert messages_of(stored) == expected
    assert stored.messages[1].content == "" and stored.messages[1].tool_calls == (WEATHER_PARIS, WEATHER_ROME)
    assert [(m.tool_call_id, m.content) for m in stored.messages[2:4]] == [("call_2", "18 °C, cloudy"), ("call_1", "")]
    assert stored.messages[1].tool_calls[1].arguments["big"] == 2**62
    assert all(m.tool_calls == () for i, m in enumerate(stored.messages) if i != 1)
    assert [m.tool_call_id for m in stored.messages] == [None, None, "call_2", "call_1", None]
    # The same through a listing and, for the persistent stores, after a restart.
    listed = await store.list_page(limit=10, after=None, with_messages=True)
    assert messages_of(listed[0]) == expected
    await store.close()
    reopened = await make_store()
    assert messages_of(await reopened.get(conversation.id)) == expected


async def test_a_reply_may_carry_text_and_tool_calls_and_results_may_come_with_user_text(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, user("Look it up."), turn_id="t1", lease_s=60)
    with_text = Message(Role.ASSISTANT, (TextPart("Let me check."), WEATHER_PARIS))
    await store.end_turn(conversation.id, turn_id="t1", reply=with_text)
    begun = await store.begin_turn(
        conversation.id, [result("call_1", "21 °C"), Message.of(Role.USER, "And tomorrow?")], turn_id="t2", lease_s=60
    )
    assert begun is not None
    assert messages_of(begun)[-2:] == [result("call_1", "21 °C"), Message.of(Role.USER, "And tomorrow?")]
    stored = await store.get(conversation.id)
    assert messages_of(stored) == [Message.of(Role.USER, "Look it up."), with_text, result("call_1", "21 °C"), Message.of(Role.USER, "And tomorrow?")]
    assert stored.messages[1] == StoredMessage(Role.ASSISTANT, "Let me check.", stored.messages[1].create_time_us, (WEATHER_PARIS,))


@pytest.mark.parametrize(
    ("results", "violations"),
    [
        pytest.param([("call_1", "a"), ("call_9", "b")], ["tool_results[1].tool_call_id", "tool_results"], id="unknown-id"),
        pytest.param([("call_1", "a"), ("call_1", "b")], ["tool_results[1].tool_call_id", "tool_results"], id="answered-twice"),
        pytest.param([("call_2", "b")], ["tool_results"], id="a-call-unanswered"),
    ],
)
async def test_tool_results_must_answer_each_call_of_the_last_reply_once(
    store: ConversationStore, results: list[tuple[str, str]], violations: list[str]
) -> None:
    conversation = await store.create(system="", metadata={})
    await start_tool_round(store, conversation.id)
    with pytest.raises(LLMError) as raised:
        await store.begin_turn(conversation.id, [result(i, c) for i, c in results], turn_id="t2", lease_s=60)
    assert raised.value.kind is ErrorKind.INVALID_REQUEST
    assert [v.field for v in raised.value.field_violations] == violations
    # Nothing was stored and the lease was not kept: the right answer goes through at once.
    assert len((await store.get(conversation.id)).messages) == 2
    assert await store.begin_turn(conversation.id, [result("call_1", "a"), result("call_2", "b")], turn_id="t3", lease_s=60) is not None


async def test_tool_results_without_calls_awaiting_them_are_refused(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    for turn_id in ("t1", "t2"):  # no reply yet, then a reply without calls
        with pytest.raises(LLMError) as raised:
            await store.begin_turn(conversation.id, [result("call_1", "x")], turn_id=turn_id, lease_s=60)
        assert raised.value.kind is ErrorKind.INVALID_REQUEST
        assert [v.field for v in raised.value.field_violations] == ["tool_results"]
        await store.begin_turn(conversation.id, user("hi"), turn_id=turn_id, lease_s=60)
        await store.end_turn(conversation.id, turn_id=turn_id, reply=reply("hello"))
    # Calls the user moved on from (a new message instead of results) cannot be answered later.
    await start_tool_round(store, conversation.id)
    await store.begin_turn(conversation.id, user("never mind"), turn_id="t3", lease_s=60)
    await store.end_turn(conversation.id, turn_id="t3", reply=None)
    with pytest.raises(LLMError) as raised:
        await store.begin_turn(conversation.id, [result("call_1", "a"), result("call_2", "b")], turn_id="t4", lease_s=60)
    assert raised.value.kind is ErrorKind.INVALID_REQUEST


async def test_a_failed_tool_result_turn_can_be_retried_with_the_same_results(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await start_tool_round(store, conversation.id)
    answers = [result("call_1", "20 °C"), result("call_2", "18 °C")]
    await store.begin_turn(conversation.id, answers, turn_id="t2", lease_s=60)
    await store.end_turn(conversation.id, turn_id="t2", reply=None)  # the model failed
    assert await store.begin_turn(conversation.id, answers, turn_id="t3", lease_s=60) is not None
    await store.end_turn(conversation.id, turn_id="t3", reply=reply("Both mild."))
    assert [m.role for m in (await store.get(conversation.id)).messages] == [
        Role.USER, Role.ASSISTANT, Role.TOOL, Role.TOOL, Role.TOOL, Role.TOOL, Role.ASSISTANT,
    ]


@pytest.mark.parametrize(
    "new_messages",
    [
        pytest.param([], id="nothing"),
        pytest.param([Message.of(Role.USER, "q"), result("call_1", "a")], id="result-after-user-text"),
        pytest.param([Message.of(Role.USER, "a"), Message.of(Role.USER, "b")], id="two-user-messages"),
        pytest.param([Message.of(Role.ASSISTANT, "a")], id="an-assistant-message"),
        pytest.param([Message.of(Role.SYSTEM, "a")], id="a-system-message"),
        pytest.param([Message(Role.TOOL, (TextPart("a"),))], id="tool-message-without-result"),
        pytest.param([Message(Role.TOOL, (ToolResult("call_1", "a"), ToolResult("call_2", "b")))], id="two-results-in-one"),
        pytest.param([Message(Role.USER, (TextPart("a"), WEATHER_PARIS))], id="user-with-a-tool-call"),
    ],
)
async def test_malformed_turns_are_programming_errors_and_store_nothing(store: ConversationStore, new_messages: list[Message]) -> None:
    conversation = await store.create(system="", metadata={})
    await start_tool_round(store, conversation.id)
    with pytest.raises(ValueError):
        await store.begin_turn(conversation.id, new_messages, turn_id="t2", lease_s=60)
    assert len((await store.get(conversation.id)).messages) == 2
    assert await store.begin_turn(conversation.id, user("fine"), turn_id="t3", lease_s=60) is not None


@pytest.mark.parametrize(
    "bad_reply",
    [
        pytest.param(Message.of(Role.USER, "a"), id="a-user-message"),
        pytest.param(result("call_1", "a"), id="a-tool-result"),
        pytest.param(Message(Role.ASSISTANT, (TextPart("a"), ToolResult("call_1", "a"))), id="assistant-with-a-result"),
    ],
)
async def test_a_reply_is_an_assistant_message(store: ConversationStore, bad_reply: Message) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, user("hi"), turn_id="t1", lease_s=60)
    with pytest.raises(ValueError):
        await store.end_turn(conversation.id, turn_id="t1", reply=bad_reply)
    await store.end_turn(conversation.id, turn_id="t1", reply=reply("ok"))  # the lease was still held
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "hi"), ("assistant", "ok")]


async def test_an_empty_reply_without_calls_is_stored_as_before(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, user("hi"), turn_id="t1", lease_s=60)
    await store.end_turn(conversation.id, turn_id="t1", reply=reply_message(""))
    assert messages_of(await store.get(conversation.id)) == [Message.of(Role.USER, "hi"), Message.of(Role.ASSISTANT, "")]


async def test_the_coordinator_runs_a_tool_round_trip(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    turns = TurnCoordinator(store, poll_interval_s=0.01)
    loop = asyncio.get_running_loop()
    async with turns.turn(conversation.id, user("Weather in Paris?"), deadline=loop.time() + 30) as turn:
        assert turn.new_count == 1
        await turn.complete(reply_message("", [WEATHER_PARIS]))
    async with turns.turn(conversation.id, [result("call_1", "20 °C")], deadline=loop.time() + 30) as turn:
        assert turn.new_count == 1
        assert messages_of(turn.conversation)[-2:] == [Message(Role.ASSISTANT, (WEATHER_PARIS,)), result("call_1", "20 °C")]
        await turn.complete(reply("20 °C in Paris."))
    with pytest.raises(LLMError) as raised:  # refused before the body runs; the lock and lease are free again
        async with turns.turn(conversation.id, [result("call_1", "again")], deadline=loop.time() + 30):
            raise AssertionError("the body must not run")
    assert raised.value.kind is ErrorKind.INVALID_REQUEST
    async with turns.turn(conversation.id, user("thanks"), deadline=loop.time() + 5) as turn:
        await turn.complete(reply("You're welcome."))
    assert [m.role for m in (await store.get(conversation.id)).messages] == [Role.USER, Role.ASSISTANT, Role.TOOL, Role.ASSISTANT, Role.USER, Role.ASSISTANT]
