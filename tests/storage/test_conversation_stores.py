"""One suite for every conversation store: memory, SQLite file and a real PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from llm_manager_server.conversations import ConversationStore, PageCursor, TurnCoordinator
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import Role

from .conftest import StepClock, StoreFactory


def roles_and_texts(conversation: object) -> list[tuple[str, str]]:
    return [(m.role.value, m.content) for m in conversation.messages]  # type: ignore[attr-defined]


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
        store.begin_turn("no-such-id", "hello", turn_id="t1", lease_s=10),
    ):
        with pytest.raises(LLMError) as raised:
            await operation
        assert raised.value.kind is ErrorKind.CONVERSATION_NOT_FOUND


async def test_delete_removes_the_conversation_and_its_messages(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, "hello", turn_id="t1", lease_s=10)
    await store.end_turn(conversation.id, turn_id="t1", reply="hi")
    await store.delete(conversation.id)
    with pytest.raises(LLMError) as raised:
        await store.get(conversation.id)
    assert raised.value.kind is ErrorKind.CONVERSATION_NOT_FOUND
    assert await store.list_page(limit=10, after=None, with_messages=True) == []


async def test_a_turn_stores_the_user_message_first_and_the_reply_when_complete(store: ConversationStore) -> None:
    conversation = await store.create(system="sys", metadata={})
    begun = await store.begin_turn(conversation.id, "What is 2+2?", turn_id="t1", lease_s=10)
    assert begun is not None
    assert roles_and_texts(begun) == [("user", "What is 2+2?")]
    # Before the reply: the user's message is already durable, no reply yet.
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "What is 2+2?")]
    await store.end_turn(conversation.id, turn_id="t1", reply="4")
    stored = await store.get(conversation.id)
    assert roles_and_texts(stored) == [("user", "What is 2+2?"), ("assistant", "4")]
    assert stored.update_time_us > conversation.update_time_us
    assert stored.messages[0].create_time_us < stored.messages[1].create_time_us
    assert stored.create_time_us == conversation.create_time_us


async def test_a_turn_holds_the_conversation_until_it_ends(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    assert await store.begin_turn(conversation.id, "first", turn_id="t1", lease_s=60) is not None
    assert await store.begin_turn(conversation.id, "second", turn_id="t2", lease_s=60) is None
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "first")]  # the refused turn left nothing
    await store.end_turn(conversation.id, turn_id="t1", reply="one")
    assert await store.begin_turn(conversation.id, "second", turn_id="t2", lease_s=60) is not None


async def test_a_failed_turn_keeps_the_user_message_and_frees_the_conversation(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, "doomed", turn_id="t1", lease_s=60)
    await store.end_turn(conversation.id, turn_id="t1", reply=None)
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "doomed")]
    assert await store.begin_turn(conversation.id, "again", turn_id="t2", lease_s=60) is not None


async def test_an_expired_lease_can_be_taken_and_the_late_reply_is_refused(store: ConversationStore, clock: StepClock) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, "slow", turn_id="t1", lease_s=5)
    clock.advance(6)
    assert await store.begin_turn(conversation.id, "next", turn_id="t2", lease_s=5) is not None
    with pytest.raises(LLMError) as raised:
        await store.end_turn(conversation.id, turn_id="t1", reply="too late")
    assert raised.value.kind is ErrorKind.TIMEOUT
    await store.end_turn(conversation.id, turn_id="t2", reply="on time")
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "slow"), ("user", "next"), ("assistant", "on time")]


async def test_a_reply_to_a_deleted_conversation_is_not_found(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    await store.begin_turn(conversation.id, "hello", turn_id="t1", lease_s=60)
    await store.delete(conversation.id)
    with pytest.raises(LLMError) as raised:
        await store.end_turn(conversation.id, turn_id="t1", reply="hi")
    assert raised.value.kind is ErrorKind.CONVERSATION_NOT_FOUND
    await store.end_turn(conversation.id, turn_id="t1", reply=None)  # releasing is always safe


async def test_pages_are_most_recently_updated_first_and_tokens_are_stable(store: ConversationStore) -> None:
    created = [await store.create(system=f"c{i}", metadata={}) for i in range(7)]
    # Touch c2: it moves to the front.
    await store.begin_turn(created[2].id, "bump", turn_id="t", lease_s=60)
    await store.end_turn(created[2].id, turn_id="t", reply="ok")
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
    await store.begin_turn(conversation.id, "hello", turn_id="t", lease_s=60)
    await store.end_turn(conversation.id, turn_id="t", reply="hi")
    basic = await store.list_page(limit=10, after=None, with_messages=False)
    full = await store.list_page(limit=10, after=None, with_messages=True)
    assert basic[0].messages == ()
    assert roles_and_texts(full[0]) == [("user", "hello"), ("assistant", "hi")]
    assert (await store.get(conversation.id, with_messages=False)).messages == ()


async def test_text_survives_exactly(store: ConversationStore) -> None:
    text = "quotes ' \" ; DROP TABLE conversations; -- émoji 🙂 and\nnewlines\t\x01"
    conversation = await store.create(system=text, metadata={"k'\"": text})
    await store.begin_turn(conversation.id, text, turn_id="t", lease_s=60)
    await store.end_turn(conversation.id, turn_id="t", reply=text)
    stored = await store.get(conversation.id)
    assert stored.system == text and stored.metadata == {"k'\"": text}
    assert [m.content for m in stored.messages] == [text, text]


async def test_a_reopened_store_keeps_everything_and_migrates_once(make_store: StoreFactory) -> None:
    first = await make_store()
    conversation = await first.create(system="persist me", metadata={"a": "b"})
    await first.begin_turn(conversation.id, "hello", turn_id="t", lease_s=60)
    await first.end_turn(conversation.id, turn_id="t", reply="hi")
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
        async with turns.turn(conversation.id, text, deadline=asyncio.get_running_loop().time() + 30) as turn:
            seen_history[text] = [m.content for m in turn.conversation.messages]
            await asyncio.sleep(0.02)  # the "model" takes a moment; the other turn must wait
            await turn.complete(f"reply to {text}")

    await asyncio.gather(*(send(f"m{i}") for i in range(4)))
    stored = await store.get(conversation.id)
    assert len(stored.messages) == 8
    # Strictly alternating: each turn ran alone and saw every earlier turn whole.
    assert [m.role for m in stored.messages] == [Role.USER, Role.ASSISTANT] * 4
    for user, reply in zip(stored.messages[::2], stored.messages[1::2], strict=True):
        assert reply.content == f"reply to {user.content}"
        history = seen_history[user.content]
        assert history[-1] == user.content
        assert history[:-1] == [m.content for m in stored.messages[: stored.messages.index(user)]]


async def test_a_cancelled_turn_releases_the_conversation(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    turns = TurnCoordinator(store, poll_interval_s=0.01)
    entered = asyncio.Event()

    async def hang() -> None:
        async with turns.turn(conversation.id, "hanging", deadline=asyncio.get_running_loop().time() + 30):
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(hang())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with turns.turn(conversation.id, "next", deadline=asyncio.get_running_loop().time() + 5) as turn:
        await turn.complete("fine")
    assert roles_and_texts(await store.get(conversation.id)) == [("user", "hanging"), ("user", "next"), ("assistant", "fine")]


async def test_a_turn_that_cannot_start_before_its_deadline_times_out(store: ConversationStore) -> None:
    conversation = await store.create(system="", metadata={})
    turns = TurnCoordinator(store, poll_interval_s=0.01)
    loop = asyncio.get_running_loop()
    async with turns.turn(conversation.id, "long", deadline=loop.time() + 30):
        with pytest.raises(LLMError) as raised:
            async with turns.turn(conversation.id, "impatient", deadline=loop.time() + 0.1):
                pass
    assert raised.value.kind is ErrorKind.TIMEOUT
    assert "earlier message" in raised.value.message
