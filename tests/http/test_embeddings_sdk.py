"""``POST /v1/embeddings`` with the official SDK: one text and a batch, the SDK's default base64
encoding and explicit floats give the same vectors, usage, the cache, and 400s for bad input."""

from __future__ import annotations

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
