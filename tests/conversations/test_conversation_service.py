"""ConversationService end to end: the real server (in-process SmolLM2, SQLite by default)
called through the generated stubs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import pytest

from llm_manager.client import error_details
from llm_manager.v1 import common_pb2, conversation_service_pb2 as conv

from ..conftest import StartApp, Stubs
from ..support.services import postgres_dsn, postgres_server  # noqa: F401 - fixtures

# The default store: SQLite under the test's LLM_DATA_DIR (BASE_ENV picks memory).
SQLITE = {"LLM_CONVERSATION_STORE": ""}
SHORT = common_pb2.GenerationPreferences(max_tokens=8, temperature=0.0)
USER, ASSISTANT = common_pb2.ROLE_USER, common_pb2.ROLE_ASSISTANT


async def create(stubs: Stubs, system: str = "", **metadata: str) -> conv.Conversation:
    response = await stubs.conversations.CreateConversation(
        conv.CreateConversationRequest(conversation=conv.Conversation(system=system, metadata=metadata))
    )
    return response.conversation


async def send(stubs: Stubs, conversation_id: str, message: str, preferences: common_pb2.GenerationPreferences = SHORT) -> conv.SendMessageResponse:
    response: conv.SendMessageResponse = await stubs.conversations.SendMessage(
        conv.SendMessageRequest(conversation_id=conversation_id, message=message, preferences=preferences), timeout=60
    )
    return response


async def get(stubs: Stubs, conversation_id: str) -> conv.Conversation:
    return (await stubs.conversations.GetConversation(conv.GetConversationRequest(id=conversation_id))).conversation


def roles(conversation: conv.Conversation) -> list[int]:
    return [m.role for m in conversation.messages]


async def test_create_get_list_delete(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app(**SQLITE))
    created = await create(stubs, "Answer in one word.", service="dashboards")
    assert created.id and created.system == "Answer in one word."
    assert dict(created.metadata) == {"service": "dashboards"}
    assert created.create_time.ToMicroseconds() > 0 and created.update_time == created.create_time

    assert await get(stubs, created.id) == created
    listed = await stubs.conversations.ListConversations(conv.ListConversationsRequest())
    assert [c.id for c in listed.conversations] == [created.id] and not listed.next_page_token

    await stubs.conversations.DeleteConversation(conv.DeleteConversationRequest(id=created.id))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await get(stubs, created.id)
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.NOT_FOUND
    assert details.reason == "CONVERSATION_NOT_FOUND" and details.domain == "llm-manager"


async def test_unknown_conversations_are_not_found_everywhere(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app(**SQLITE))
    calls = (
        lambda: stubs.conversations.DeleteConversation(conv.DeleteConversationRequest(id="nope")),
        lambda: send(stubs, "nope", "hello"),
        lambda: _drain(stubs.conversations.StreamSendMessage(conv.StreamSendMessageRequest(conversation_id="nope", message="hello"))),
    )
    for call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call()
        assert error_details(raised.value).reason == "CONVERSATION_NOT_FOUND"


async def _drain(stream: object) -> list[conv.StreamSendMessageResponse]:
    return [message async for message in stream]  # type: ignore[attr-defined]


async def test_every_request_is_validated_with_field_violations(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app(**SQLITE))
    conversation = await create(stubs)
    cases = [
        (stubs.conversations.GetConversation(conv.GetConversationRequest()), {"id"}),
        (stubs.conversations.DeleteConversation(conv.DeleteConversationRequest(id="x" * 500)), {"id"}),
        (stubs.conversations.ListConversations(conv.ListConversationsRequest(page_size=-1, page_token="garbage!")), {"page_size", "page_token"}),
        (
            stubs.conversations.CreateConversation(
                conv.CreateConversationRequest(conversation=conv.Conversation(metadata={f"k{i}": "v" for i in range(65)}))
            ),
            {"conversation.metadata"},
        ),
        (
            stubs.conversations.SendMessage(
                conv.SendMessageRequest(
                    conversation_id=conversation.id,
                    message="  ",
                    task_type=99,  # type: ignore[arg-type]
                    preferences=common_pb2.GenerationPreferences(temperature=3.0, max_tokens=0),
                )
            ),
            {"message", "task_type", "preferences.temperature", "preferences.max_tokens"},
        ),
        (_drain(stubs.conversations.StreamSendMessage(conv.StreamSendMessageRequest(message="hi"))), {"conversation_id"}),
    ]
    for call, fields in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        details = error_details(raised.value)
        assert details.code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "INVALID_REQUEST"
        assert set(details.field_violations) == fields, details.field_violations
    # Nothing was stored by the refused turns.
    assert len((await get(stubs, conversation.id)).messages) == 0


async def test_send_message_replies_stores_both_turns_and_carries_the_history(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app(**SQLITE))
    conversation = await create(stubs, "You are a helpful assistant.")
    first = await send(stubs, conversation.id, "My name is Ada. Say hello.")
    assert first.text and first.model == "smollm2-135m-instruct"
    assert first.usage.prompt_tokens > 0 and 0 < first.usage.completion_tokens <= 8
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert first.metadata.model_chain == ["smollm2-135m-instruct"] and not first.metadata.cached
    assert first.metadata.provider == common_pb2.PROVIDER_LOCAL and first.metadata.request_id
    assert first.finish_reason in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH)

    second = await send(stubs, conversation.id, "What is my name?")
    # The second prompt carries the first turn: more prompt tokens than the message alone.
    assert second.usage.prompt_tokens > first.usage.prompt_tokens + 5

    stored = await get(stubs, conversation.id)
    assert roles(stored) == [USER, ASSISTANT, USER, ASSISTANT]
    assert [m.content for m in stored.messages] == ["My name is Ada. Say hello.", first.text, "What is my name?", second.text]
    assert all(m.create_time.ToMicroseconds() > 0 for m in stored.messages)
    assert stored.update_time.ToMicroseconds() > conversation.update_time.ToMicroseconds()


async def test_stream_send_message_streams_and_stores_the_whole_reply(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app(**SQLITE))
    conversation = await create(stubs)
    messages = await _drain(
        stubs.conversations.StreamSendMessage(
            conv.StreamSendMessageRequest(
                conversation_id=conversation.id,
                message="Count from 1 to 20, separated by commas.",
                preferences=common_pb2.GenerationPreferences(max_tokens=24, temperature=0.0),
            ),
            timeout=60,
        )
    )
    text_pieces = [m.text for m in messages if m.text]
    assert len(text_pieces) > 1  # incremental, not one blob
    final = messages[-1]
    assert final.usage.completion_tokens > 0 and final.metadata.model_chain == ["smollm2-135m-instruct"]
    assert final.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED
    assert final.metadata.time_to_first_token_ms <= final.metadata.latency_ms
    stored = await get(stubs, conversation.id)
    assert roles(stored) == [USER, ASSISTANT]
    assert stored.messages[1].content == "".join(text_pieces)


async def test_a_cancelled_stream_keeps_the_question_and_stores_no_partial_reply(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app(**SQLITE))
    conversation = await create(stubs)
    call = stubs.conversations.StreamSendMessage(
        conv.StreamSendMessageRequest(
            conversation_id=conversation.id,
            message="Count from 1 to 500, separated by commas.",
            preferences=common_pb2.GenerationPreferences(max_tokens=400, temperature=0.0),  # greedy: counts on
        )
    )
    async for message in call:
        if message.text:
            break
    call.cancel()
    await asyncio.sleep(0.2)
    stored = await get(stubs, conversation.id)
    assert roles(stored) == [USER]
    # The turn ended with the cancellation: the conversation takes the next message at once.
    reply = await asyncio.wait_for(send(stubs, conversation.id, "Say hi."), 30)
    assert roles(await get(stubs, conversation.id)) == [USER, USER, ASSISTANT]
    assert (await get(stubs, conversation.id)).messages[2].content == reply.text


async def test_concurrent_messages_on_one_conversation_are_ordered(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app(**SQLITE))
    conversation = await create(stubs)
    replies = await asyncio.gather(*(send(stubs, conversation.id, f"Say the number {n}.") for n in range(3)))
    stored = await get(stubs, conversation.id)
    assert roles(stored) == [USER, ASSISTANT] * 3
    asked = [m.content for m in stored.messages[::2]]
    assert sorted(asked) == [f"Say the number {n}." for n in range(3)]
    by_question = {f"Say the number {n}.": r.text for n, r in enumerate(replies)}
    assert [m.content for m in stored.messages[1::2]] == [by_question[q] for q in asked]


async def test_pages_of_conversations(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app(**SQLITE))
    created = [await create(stubs, f"c{i}") for i in range(5)]
    await send(stubs, created[1].id, "Say hi.")  # the most recently updated now
    expected = [created[1].id] + [c.id for c in reversed(created) if c.id != created[1].id]
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await stubs.conversations.ListConversations(conv.ListConversationsRequest(page_size=2, page_token=token))
        seen += [c.id for c in page.conversations]
        assert all(not c.messages for c in page.conversations)  # BASIC by default
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == expected and pages == 3
    full = await stubs.conversations.ListConversations(conv.ListConversationsRequest(page_size=1, view=conv.CONVERSATION_VIEW_FULL))
    assert len(full.conversations[0].messages) == 2
    basic = await stubs.conversations.GetConversation(conv.GetConversationRequest(id=created[1].id, view=conv.CONVERSATION_VIEW_BASIC))
    assert not basic.conversation.messages


async def test_a_conversation_survives_a_restart(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    first_app = await start_app(**SQLITE)
    stubs = connect(first_app)
    conversation = await create(stubs, "Be brief.", owner="ops")
    reply = await send(stubs, conversation.id, "Say hi.")
    await first_app.stop(grace_s=0)

    stubs = connect(await start_app(**SQLITE))  # same LLM_DATA_DIR, so the same SQLite file
    stored = await get(stubs, conversation.id)
    assert stored.system == "Be brief." and dict(stored.metadata) == {"owner": "ops"}
    assert [m.content for m in stored.messages] == ["Say hi.", reply.text]
    await send(stubs, conversation.id, "Again.")
    assert roles(await get(stubs, conversation.id)) == [USER, ASSISTANT] * 2


async def test_a_long_conversation_is_trimmed_to_the_context_window(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    # A 512-token window: five turns of ~130 tokens each would overflow it without trimming.
    stubs = connect(await start_app(**SQLITE, LLM_LOCAL_CONTEXT_LENGTH="512"))
    conversation = await create(stubs, "Reply with one word.")
    paragraph = "The quick brown fox jumps over the lazy dog. " * 11  # ~500 characters
    prompt_tokens = []
    for turn in range(5):
        reply = await send(stubs, conversation.id, f"Turn {turn}. {paragraph}")
        prompt_tokens.append(reply.usage.prompt_tokens)
    assert max(prompt_tokens) < 512
    assert prompt_tokens[-1] < prompt_tokens[0] * 5  # old turns were dropped, not all sent
    stored = await get(stubs, conversation.id)
    assert len(stored.messages) == 10  # trimming shapes the prompt only: every turn is kept


async def test_a_message_too_large_for_any_window_is_refused_before_it_is_stored(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app(**SQLITE))
    conversation = await create(stubs)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await send(stubs, conversation.id, "word " * 4000)
    details = error_details(raised.value)
    assert details.code == grpc.StatusCode.INVALID_ARGUMENT and details.reason == "CONTEXT_TOO_LARGE", details
    # Fits the window, but leaves no room for the reply asked for.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await send(stubs, conversation.id, "word " * 300, common_pb2.GenerationPreferences(max_tokens=1900))
    assert error_details(raised.value).reason == "CONTEXT_TOO_LARGE"
    assert not (await get(stubs, conversation.id)).messages


async def test_turns_through_postgres(start_app: StartApp, connect: Callable[..., Stubs], postgres_dsn: str) -> None:  # noqa: F811
    app_env = {"LLM_CONVERSATION_STORE": postgres_dsn}
    first = await start_app(**app_env)
    stubs = connect(first)
    conversation = await create(stubs, "Be brief.")
    reply = await send(stubs, conversation.id, "Say hi.")
    # A second replica on the same database sees it, and continues it.
    replica = connect(await start_app(**app_env))
    stored = await get(replica, conversation.id)
    assert [m.content for m in stored.messages] == ["Say hi.", reply.text]
    await send(replica, conversation.id, "Again.")
    assert roles(await get(stubs, conversation.id)) == [USER, ASSISTANT] * 2


async def test_a_bad_store_url_stops_start_up_with_one_line(start_app: StartApp) -> None:
    from llm_manager_server.config import ConfigError

    with pytest.raises(ConfigError) as raised:
        await start_app(LLM_CONVERSATION_STORE="postgresql://postgres:hunter2@127.0.0.1:1/none")
    assert raised.value.variable == "LLM_CONVERSATION_STORE"
    assert "hunter2" not in str(raised.value) and "\n" not in str(raised.value)
