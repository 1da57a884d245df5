"""The Python client's conversation helpers and call metadata, against the real server (the
in-process SmolLM2): list, stream a turn, delete; every call carries the client's metadata and
a request id the caller chose."""

from __future__ import annotations

from collections.abc import Callable

import grpc
import pytest

from llm_manager.client import LLMManagerClient, error_details

from .conftest import StartApp, Stubs


async def test_conversation_helpers_and_request_ids(start_app: StartApp, connect: Callable[..., Stubs]) -> None:
    stubs = connect(await start_app())
    client = LLMManagerClient(channel=stubs.channel, timeout=60, metadata=(("x-caller", "notebook"),))
    first = await client.create_conversation(system="You are terse.", metadata={"team": "sre"})
    second = await client.create_conversation()
    listed = [c.id async for c in client.list_conversations(page_size=1)]
    assert listed[:2] == [second.id, first.id]  # newest first, across pages of one
    pieces = [p async for p in client.stream_send_message(first.id, "Say hi.", max_tokens=8, temperature=0, request_id="turn-1")]
    assert "".join(p.text for p in pieces).strip() and pieces[-1].metadata.request_id == "turn-1"
    stored = await client.get_conversation(first.id)
    assert [m.content for m in stored.messages][0] == "Say hi." and len(stored.messages) == 2
    reply = await client.generate("hi", max_tokens=4, request_id="gen-42")
    assert reply.metadata.request_id == "gen-42"
    await client.delete_conversation(first.id)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.get_conversation(first.id)
    assert error_details(raised.value).reason == "CONVERSATION_NOT_FOUND"
