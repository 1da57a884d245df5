"""``POST /v1/embeddings`` with the official SDK: one text and a batch, the SDK's default base64
encoding and explicit floats give the same vectors, usage, the cache, and 400s for bad input."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import openai
import pytest

from .conftest import Served

MODEL = "text-embedding-3-small"


async def test_batch_float_and_base64_agree(client: openai.AsyncOpenAI, served: Served) -> None:
    texts = ["checkout p99 latency is up", "the payments pod restarted", "disk full on db-2"]
    floats = await client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1, 2]
    assert all(len(d.embedding) == 1536 for d in floats.data)
    assert floats.usage.prompt_tokens > 0 and floats.usage.total_tokens == floats.usage.prompt_tokens
    extension = floats.model_extra["llm_manager"] if floats.model_extra else {}
    assert extension["cached"] is False and extension["model_chain"] == [MODEL]
    # The SDK's default: base64, which it decodes itself; a second identical call is cached.
    encoded = await client.embeddings.create(model=MODEL, input=texts)
    for plain, decoded in zip(floats.data, encoded.data, strict=True):
        assert decoded.embedding == pytest.approx(plain.embedding, abs=1e-6)
    assert (encoded.model_extra or {})["llm_manager"]["cached"] is True
    assert len(served.fake.embedding_requests) == 1
    assert served.fake.embedding_requests[0].body["input"] == texts


async def test_single_text(client: openai.AsyncOpenAI) -> None:
    result = await client.embeddings.create(model=MODEL, input="one text", encoding_format="float")
    assert len(result.data) == 1 and len(result.data[0].embedding) == 1536


async def test_bad_inputs_are_400_naming_the_field(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.embeddings.create(model=MODEL, input=["fine", "  "])
    assert raised.value.param == "input[1]"
    with pytest.raises(openai.BadRequestError) as raised:
        await client.embeddings.create(model=MODEL, input=[[1, 2, 3]])
    assert raised.value.param == "input"


async def test_the_llm_manager_object_is_read_by_the_chat_rules(client: openai.AsyncOpenAI, served: Served) -> None:
    """An unknown key and a no_cache that is not a boolean are 400s naming the field, as on
    chat completions (not silently ignored); a proper no_cache is honoured."""
    for extension, field in (({"no_cahce": True}, "llm_manager.no_cahce"), ({"no_cache": "yes"}, "llm_manager.no_cache"), ({"task_type": "sql_generation"}, "llm_manager.task_type")):
        with pytest.raises(openai.BadRequestError) as raised:
            await client.embeddings.create(model=MODEL, input="a text", extra_body={"llm_manager": extension})
        assert raised.value.param == field, raised.value.body
    assert served.fake.embedding_requests == []
    for _ in range(2):
        await client.embeddings.create(model=MODEL, input="a text", extra_body={"llm_manager": {"no_cache": True}})
    assert len(served.fake.embedding_requests) == 2


async def test_large_replies_and_cache_entries_are_encoded_off_the_event_loop(client: openai.AsyncOpenAI, served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """50 texts of 1536 floats (seconds of JSON at full size): the reply's JSON and the cache
    entry's encoding and decoding run in a thread, not on the loop every call shares."""
    from llm_manager_server.cache import response_cache
    from llm_manager_server.http import app as http_app

    on_loop: dict[str, list[bool]] = {"reply": [], "encode": [], "decode": []}

    def running_loop() -> bool:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return False
        return True

    def recorded(name: str, function: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def call(value: Any) -> Any:
            on_loop[name].append(running_loop())
            return function(value)

        return call

    codec = response_cache.EMBEDDINGS
    monkeypatch.setattr(http_app, "_encode", recorded("reply", http_app._encode))
    monkeypatch.setattr(response_cache, "EMBEDDINGS", replace(codec, encode=recorded("encode", codec.encode), decode=recorded("decode", codec.decode)))
    texts = [f"log line {i}" for i in range(50)]
    first = await client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    again = await client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert [d.embedding for d in again.data] == [d.embedding for d in first.data] and len(first.data[49].embedding) == 1536
    assert (again.model_extra or {})["llm_manager"]["cached"] is True and len(served.fake.embedding_requests) == 1
    assert on_loop == {"reply": [False, False], "encode": [False], "decode": [False]}
    # A small reply stays on the loop (a thread hop costs more than its encoding).
    await client.embeddings.create(model=MODEL, input="one text", encoding_format="float")
    assert on_loop["reply"] == [False, False, True]
