"""OpenAI Embeddings JSON <-> the domain (pure functions): ``POST /v1/embeddings`` read into the
same :class:`EmbeddingRequest` the gRPC ``Embed`` builds (the rules: ``domain.embeddings``), and
the :class:`Embeddings` written back as OpenAI's ``list`` of ``embedding`` objects, each vector
as floats or, with ``encoding_format: "base64"`` (what the Python SDK asks for by default), as
its little-endian float32 bytes in base64."""

from __future__ import annotations

import base64
import struct
from typing import Any

from ..domain.embeddings import EmbeddingRequest, Embeddings, embedding_request
from ..domain.errors import ErrorKind, FieldViolation, LLMError, invalid_request
from .chat import AUTO_MODEL, EMBEDDINGS_EXTENSION_KEYS, EXTENSION, metadata_json, read_extension

_ENCODINGS = frozenset({"float", "base64"})


def _renamed(error: LLMError) -> LLMError:
    """The domain names the texts ``inputs`` (the proto's field); OpenAI's JSON says ``input``."""
    violations = tuple(FieldViolation("input" + v.field.removeprefix("inputs"), v.description) if v.field.startswith("inputs") else v for v in error.field_violations)
    return invalid_request(*violations)


def request_from_json(body: Any) -> tuple[EmbeddingRequest, str]:
    """The validated request and the encoding the reply uses; INVALID_REQUEST listing every bad field."""
    if not isinstance(body, dict):
        raise invalid_request(FieldViolation("body", "must be a JSON object"))
    violations: list[FieldViolation] = []
    raw = body.get("input")
    inputs: list[str] = []
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and all(isinstance(text, str) for text in raw):
        inputs = list(raw)
    elif raw is None:
        violations.append(FieldViolation("input", "is required: a string or an array of strings"))
    else:
        # Token arrays would need the model's own tokenizer to mean the same on every backend.
        violations.append(FieldViolation("input", "must be a string or an array of strings (token arrays are not supported)"))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        violations.append(FieldViolation("model", "is required (a model name, or 'auto' for the configured embedding model)"))
        model = ""
    encoding = body.get("encoding_format") or "float"
    if encoding not in _ENCODINGS:
        violations.append(FieldViolation("encoding_format", "must be float or base64"))
    if body.get("dimensions") is not None:
        violations.append(FieldViolation("dimensions", "is not supported: each model's vectors keep their size"))
    _, no_cache, no_store = read_extension(violations, body, EMBEDDINGS_EXTENSION_KEYS)
    if violations:
        raise invalid_request(*violations)
    try:
        request = embedding_request(inputs, "" if model == AUTO_MODEL else model, no_cache=no_cache, no_store=no_store)
    except LLMError as error:
        raise (_renamed(error) if error.kind is ErrorKind.INVALID_REQUEST else error) from None
    return request, str(encoding)


def _encoded(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def embeddings_json(result: Embeddings, encoding: str, *, request_id: str, latency_ms: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": index, "embedding": _encoded(vector, encoding)} for index, vector in enumerate(result.vectors)],
        "model": result.model,
        "usage": {"prompt_tokens": result.usage.prompt_tokens, "total_tokens": result.usage.total_tokens or result.usage.prompt_tokens},
        EXTENSION: metadata_json(result.metadata, result.cost_usd, request_id=request_id, latency_ms=latency_ms),
    }
