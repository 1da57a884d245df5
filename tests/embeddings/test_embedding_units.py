"""The pure parts of embeddings, table-tested: the wire mapping, the cache's key and codec,
the request rules and the model capabilities."""

from __future__ import annotations

import base64
import struct

import pytest

from llm_manager_server.cache import embedding_cache_key, embeddings_from_bytes, embeddings_to_bytes
from llm_manager_server.catalog import capabilities_for, facts_for
from llm_manager_server.config import ConfigError, load_settings
from llm_manager_server.domain.embeddings import MAX_EMBEDDING_INPUTS, EmbeddingCall, EmbeddingRequest, Embeddings, embedding_request
from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import CallMetadata, Capability, ProviderKind, RoutingStrategy, Usage
from llm_manager_server.providers.embeddings_wire import decode_reply, embeddings_body, parse_embeddings
from llm_manager_server.providers.openai_wire import http_error

from ..fakes.http_fake import fixture_json

CALL = EmbeddingCall("text-embedding-3-small", ("a", "b", "c"))


def item(index: int, vector: object) -> dict[str, object]:
    return {"object": "embedding", "index": index, "embedding": vector}


def test_the_body_asks_for_floats_or_base64_of_every_input() -> None:
    assert embeddings_body(CALL) == {"model": "text-embedding-3-small", "input": ["a", "b", "c"], "encoding_format": "float"}
    assert embeddings_body(CALL, base64_vectors=True)["encoding_format"] == "base64"


def test_base64_vectors_are_little_endian_float32s() -> None:
    packed = [base64.b64encode(struct.pack("<3f", *v)).decode() for v in ([0.5, -1.0, 2.0], [0.25, 0.0, -0.125], [1.0, 1.0, 1.0])]
    parsed = parse_embeddings({"data": [item(i, p) for i, p in enumerate(packed)]}, CALL)
    assert parsed.vectors == [[0.5, -1.0, 2.0], [0.25, 0.0, -0.125], [1.0, 1.0, 1.0]]
    with pytest.raises(LLMError):
        parse_embeddings({"data": [item(0, "not base64!"), item(1, packed[1]), item(2, packed[2])]}, CALL)


def test_a_reply_is_decoded_from_its_bytes_with_its_errors() -> None:
    ok = b'{"data": [{"index": 0, "embedding": [1, 2.5]}], "usage": {"prompt_tokens": 2, "total_tokens": 2}}'
    assert decode_reply(ok, EmbeddingCall("m", ("a",)), model=None, provider_label="openai", secrets=()).vectors == [[1.0, 2.5]]
    for raw in (b"<html>", b"[1]", b'{"error": {"message": "overloaded", "type": "server_error"}}'):
        with pytest.raises(LLMError):
            decode_reply(raw, EmbeddingCall("m", ("a",)), model=None, provider_label="openai", secrets=())


def test_the_recorded_reply_parses() -> None:
    recorded = fixture_json("openai", "embeddings.json")
    parsed = parse_embeddings(recorded, EmbeddingCall("text-embedding-3-small", ("The food was delicious",)))
    assert parsed.vectors == [recorded["data"][0]["embedding"]]
    assert (parsed.model, parsed.usage) == ("text-embedding-3-small", Usage(prompt_tokens=5, total_tokens=5))


def test_vectors_are_put_back_in_the_inputs_order_by_index() -> None:
    body = {"data": [item(2, [3.0]), item(0, [1.0]), item(1, [2])], "model": "m", "usage": {"prompt_tokens": 3, "total_tokens": 3}}
    parsed = parse_embeddings(body, CALL, model="configured-name")
    assert parsed.vectors == [[1.0], [2.0], [3.0]] and parsed.model == "configured-name"
    assert parsed.dimensions == 1


@pytest.mark.parametrize(
    "data",
    [
        [item(0, [1.0]), item(1, [2.0])],  # one missing
        [item(0, [1.0]), item(0, [2.0]), item(2, [3.0])],  # an index twice
        [item(0, [1.0]), item(1, [2.0]), item(3, [3.0])],  # out of range
        [item(0, [1.0]), item(1, []), item(2, [3.0])],  # empty vector
        [item(0, [1.0]), item(1, ["x"]), item(2, [3.0])],  # not numbers
        [item(0, [1.0]), item(1, [None]), item(2, [3.0])],  # null
        [item(0, [1.0]), item(1, {"x": 1}), item(2, [3.0])],  # an object
        "nope",
    ],
)
def test_a_malformed_reply_is_the_upstreams_failure(data: object) -> None:
    with pytest.raises(LLMError) as raised:
        parse_embeddings({"data": data}, CALL)
    assert raised.value.kind is ErrorKind.MODEL_UNAVAILABLE


def test_usage_without_total_counts_the_prompt() -> None:
    parsed = parse_embeddings({"data": [item(0, [1.0])], "usage": {"prompt_tokens": 4}}, EmbeddingCall("m", ("a",)))
    assert parsed.usage == Usage(prompt_tokens=4, total_tokens=4)


def test_stored_vectors_come_back_exactly() -> None:
    original = Embeddings(
        vectors=[[0.1, -0.2, 1e-300], [0.30000000000000004, 2.5, -0.0]],
        model="text-embedding-3-small",
        usage=Usage(prompt_tokens=7, total_tokens=7),
        cost_usd=1.4e-7,
        metadata=CallMetadata(provider=ProviderKind.OPENAI, strategy=RoutingStrategy.COST, model_chain=["x"]),
    )
    back = embeddings_from_bytes(embeddings_to_bytes(original))
    assert back.vectors == original.vectors and back.model == original.model and back.usage == original.usage
    assert back.cost_usd == original.cost_usd and back.metadata.provider is ProviderKind.OPENAI
    assert back.metadata.strategy is RoutingStrategy.COST


@pytest.mark.parametrize("data", [b"{}", b"not json", b'{"version": 2, "kind": "answer"}', b'{"version": 2, "kind": "embeddings", "vectors": ["!!"]}'])
def test_an_unreadable_entry_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        embeddings_from_bytes(data)


def test_the_key_covers_model_and_inputs_in_order_but_not_the_cache_controls() -> None:
    base = EmbeddingRequest(("a", "b"), "text-embedding-3-small")
    assert embedding_cache_key(base) == embedding_cache_key(EmbeddingRequest(("a", "b"), "text-embedding-3-small", no_cache=True, no_store=True))
    others = [
        EmbeddingRequest(("b", "a"), "text-embedding-3-small"),
        EmbeddingRequest(("a", "b"), "text-embedding-3-large"),
        EmbeddingRequest(("a", "b", "b"), "text-embedding-3-small"),
        EmbeddingRequest(("ab",), "text-embedding-3-small"),
    ]
    keys = {embedding_cache_key(r) for r in others}
    assert len(keys) == len(others) and embedding_cache_key(base) not in keys


def test_requests_are_checked_field_by_field() -> None:
    assert embedding_request(["a"], "") == EmbeddingRequest(("a",), None)
    with pytest.raises(LLMError) as raised:
        embedding_request(["", "ok", " "], "bad name")
    assert raised.value.kind is ErrorKind.INVALID_REQUEST
    assert [v.field for v in raised.value.field_violations] == ["inputs[0]", "inputs[2]", "model"]
    with pytest.raises(LLMError):
        embedding_request(["x"] * (MAX_EMBEDDING_INPUTS + 1), "m")
    assert len(embedding_request(["x"] * MAX_EMBEDDING_INPUTS, "m").inputs) == MAX_EMBEDDING_INPUTS


@pytest.mark.parametrize(
    ("model", "embeds", "chats"),
    [
        ("text-embedding-3-small", True, False),
        ("text-embedding-ada-002", True, False),
        ("gpt-4o-mini", False, True),
        ("claude-sonnet-4-5", False, True),
        ("gemini-2.5-flash", False, True),
        ("smollm2-135m-instruct", True, True),
    ],
)
def test_embedding_is_a_model_capability(model: str, embeds: bool, chats: bool) -> None:
    capabilities = capabilities_for(model)
    assert (Capability.EMBEDDINGS in capabilities) is embeds
    assert (Capability.JSON_SCHEMA in capabilities) is chats


@pytest.mark.parametrize(
    ("model", "per_million"),
    [("text-embedding-3-small", 0.02), ("text-embedding-3-large", 0.13), ("text-embedding-ada-002", 0.10), ("nomic-embed-text", 0.0)],
)
def test_embedding_prices(model: str, per_million: float) -> None:
    price = facts_for(model, local_context_window=2048).price
    assert price.cost(Usage(prompt_tokens=1_000_000, total_tokens=1_000_000)) == pytest.approx(per_million)


def test_llm_embedding_model_is_checked_at_start() -> None:
    assert load_settings({"LLM_EMBEDDING_MODEL": "text-embedding-3-large"}).embedding_model == "text-embedding-3-large"
    assert load_settings({}).embedding_model is None
    with pytest.raises(ConfigError) as raised:
        load_settings({"LLM_EMBEDDING_MODEL": "no spaces please"})
    assert "LLM_EMBEDDING_MODEL" in str(raised.value)


def test_llama_cpps_too_large_input_is_context_too_large() -> None:
    """llama.cpp server's 500 for an embedding input beyond its batch is the caller's input,
    never the model's health (it trips no breaker)."""
    body = '{"error":{"code":500,"message":"input (2301 tokens) is too large to process. increase the physical batch size (current batch size: 2048)","type":"server_error"}}'
    error = http_error(500, body, {}, model="smollm2", provider_label="local")
    assert error.kind is ErrorKind.CONTEXT_TOO_LARGE and "2301 tokens" in error.message
