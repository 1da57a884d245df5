"""The OpenAI embeddings wire format (``POST /v1/embeddings``), spoken by OpenAI, llama.cpp's
server, LM Studio, Ollama's ``/v1`` and vLLM, and emitted by the in-process engine.

Request: ``{"model", "input": [texts], "encoding_format": "float" | "base64"}``. Reply:
``{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [floats] or
base64 of little-endian float32s}], "model", "usage": {"prompt_tokens", "total_tokens"}}``;
``data`` is put back in the inputs' order by ``index`` (the API promises nothing about the
order it lists them in). OpenAI is asked for base64, as its own SDK asks: a full batch (2048
vectors of 1536) is 17 MB instead of 70 MB of JSON and decodes about seven times faster.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from array import array
from collections.abc import Mapping
from typing import Any

from ..domain.embeddings import EmbeddingCall, Embeddings
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Usage
from .openai_wire import parse_usage, stream_error


# Replies at least this large are decoded on a thread, not on the event loop.
DECODE_IN_THREAD_BYTES = 1 << 20


def embeddings_body(call: EmbeddingCall, *, base64_vectors: bool = False) -> dict[str, Any]:
    """The request; floats unless ``base64_vectors`` (every compatible server speaks floats)."""
    return {"model": call.model, "input": list(call.inputs), "encoding_format": "base64" if base64_vectors else "float"}


def decode_reply(raw: bytes, call: EmbeddingCall, *, model: str | None, provider_label: str, secrets: tuple[str, ...]) -> Embeddings:
    """A reply body as :class:`Embeddings` (see :func:`parse_embeddings`); an error object
    inside a 200 (some proxies send one) or a body that is not a JSON object is an LLMError."""
    try:
        payload = json.loads(raw)
    except ValueError:
        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{provider_label} model {call.model!r} sent a reply that is not JSON", model=call.model) from None
    if not isinstance(payload, dict):
        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{provider_label} model {call.model!r} sent an unexpected reply", model=call.model)
    if isinstance(payload.get("error"), Mapping):
        raise stream_error(payload["error"], model=call.model, provider_label=provider_label, secrets=secrets)
    return parse_embeddings(payload, call, model=model)


def parse_embeddings(body: Mapping[str, Any], call: EmbeddingCall, *, model: str | None = None) -> Embeddings:
    """A reply as :class:`Embeddings`, one vector per input in order. ``model`` replaces the
    reply's model name (local servers name a file; callers know the configured name). A reply
    that does not hold exactly one numeric vector per input is the upstream's failure."""
    data = body.get("data")
    count = len(call.inputs)
    if not isinstance(data, list) or len(data) != count:
        got = len(data) if isinstance(data, list) else "no"
        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"model {call.model!r} sent {got} embeddings for {count} inputs", model=call.model)
    vectors: list[list[float] | None] = [None] * count
    for position, item in enumerate(data):
        index = item.get("index", position) if isinstance(item, dict) else None
        vector = _vector(item.get("embedding")) if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None or not vector:
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"model {call.model!r} sent a malformed embedding (item {position})", model=call.model)
        vectors[index] = vector
    usage = parse_usage(body.get("usage")) or Usage()
    return Embeddings(
        vectors=[v for v in vectors if v is not None],
        model=model or str(body.get("model") or call.model),
        usage=Usage(prompt_tokens=usage.prompt_tokens, total_tokens=usage.total_tokens or usage.prompt_tokens),
    )


def _vector(value: object) -> list[float] | None:
    """A list of numbers, or base64 of little-endian float32s, as floats; None for anything
    else. (``array`` checks and converts in C: a full batch is millions of numbers.)"""
    try:
        if isinstance(value, str):
            packed = array("f", base64.b64decode(value, validate=True))
            if sys.byteorder != "little":
                packed.byteswap()
            return packed.tolist()
        if isinstance(value, list):
            return array("d", value).tolist()
    except (TypeError, ValueError, binascii.Error, OverflowError):
        return None
    return None
