"""The OpenAI embeddings wire format (``POST /v1/embeddings``), spoken by OpenAI, llama.cpp's
server, LM Studio, Ollama's ``/v1`` and vLLM, and emitted by the in-process engine.

Request: ``{"model", "input": [texts], "encoding_format": "float"}``. Reply: ``{"object":
"list", "data": [{"object": "embedding", "index": i, "embedding": [floats]}], "model",
"usage": {"prompt_tokens", "total_tokens"}}``; ``data`` is put back in the inputs' order by
``index`` (the API promises nothing about the order it lists them in).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..domain.embeddings import EmbeddingCall, Embeddings
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Usage
from .openai_wire import parse_usage


def embeddings_body(call: EmbeddingCall) -> dict[str, Any]:
    # Floats, not base64: every compatible server speaks them (base64 is an OpenAI extra).
    return {"model": call.model, "input": list(call.inputs), "encoding_format": "float"}


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
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None or not _is_vector(vector):
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"model {call.model!r} sent a malformed embedding (item {position})", model=call.model)
        vectors[index] = [float(v) for v in vector]  # type: ignore[union-attr]  # checked by _is_vector
    usage = parse_usage(body.get("usage")) or Usage()
    return Embeddings(
        vectors=[v for v in vectors if v is not None],
        model=model or str(body.get("model") or call.model),
        usage=Usage(prompt_tokens=usage.prompt_tokens, total_tokens=usage.total_tokens or usage.prompt_tokens),
    )


def _is_vector(value: object) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
