"""The response cache key: a hash of everything in a request that can change the answer.

The key is built by walking every field of :class:`GenerationRequest` by introspection, down
through every dataclass it holds (messages and their parts, tools, tool choice, sampling
options), so a field added later anywhere is part of the key by default (a new field can only
cause misses, never a wrong hit); there is no hand-kept list of fields. JSON values (schemas,
tool arguments) are keyed in canonical form (sorted keys). Only fields that cannot change the
answer are left out: the per-request cache controls themselves.

The key also holds the request's *scope* (``ResponseCache.scope``): with API keys on, the
caller's name by default, so one caller is never served another's answer; nothing with
authentication off, so those keys are what they always were.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from typing import Any

from ..domain.embeddings import EmbeddingRequest
from ..domain.types import GenerationRequest, RoutingStrategy, SamplingOptions

# Bump when the key's document or the stored entry's shape changes, so old entries (in a
# shared Redis, say) are never read by a server that would misread them.
KEY_VERSION = 2

# Request fields that steer the cache, not the model.
EXCLUDED_REQUEST_FIELDS = frozenset({"no_cache", "no_store"})


def _normalized(value: Any) -> Any:
    """A JSON-friendly, canonical form of one field's value."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        return value + 0.0  # -0.0 and 0.0 are the same temperature
    if isinstance(value, (tuple, list)):
        return [_normalized(item) for item in value]
    if isinstance(value, dict):
        return {str(k): _normalized(v) for k, v in value.items()}  # sorted when dumped
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # Every field, named by type and field, so two part types never collide.
        return {"@": type(value).__name__, **{f.name: _normalized(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    return value


def _sampling_document(sampling: SamplingOptions) -> dict[str, Any]:
    document = {f.name: _normalized(getattr(sampling, f.name)) for f in dataclasses.fields(sampling)}
    # Stop sequences are a set to every provider: order and repeats cannot change the answer.
    document["stop"] = sorted(set(sampling.stop))
    return document


def key_document(request: GenerationRequest, default_strategy: RoutingStrategy, scope: str = "") -> dict[str, Any]:
    """The normalized request the key hashes (exposed for tests and debugging)."""
    document: dict[str, Any] = {"version": KEY_VERSION}
    if scope:
        document["@scope"] = scope  # "@": no request field can share the name
    for f in dataclasses.fields(request):
        if f.name in EXCLUDED_REQUEST_FIELDS:
            continue
        value = getattr(request, f.name)
        if f.name == "sampling":
            document[f.name] = _sampling_document(value)
        elif f.name == "strategy":
            # No strategy means the server's default: the same request either way.
            document[f.name] = _normalized(value or default_strategy)
        else:
            document[f.name] = _normalized(value)
    return document


def cache_key(request: GenerationRequest, default_strategy: RoutingStrategy, scope: str = "") -> str:
    """A SHA-256 hex digest of the normalized request in its scope."""
    encoded = json.dumps(
        key_document(request, default_strategy, scope), ensure_ascii=False, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def embedding_cache_key(request: EmbeddingRequest, scope: str = "") -> str:
    """A SHA-256 hex digest of an embedding request in its scope (see :func:`key_document`):
    its model and inputs in order (every field but the cache controls, walked as for answers;
    the document names its type, so it never equals a generation request's)."""
    document = {"version": KEY_VERSION, **_normalized(request)}
    for name in EXCLUDED_REQUEST_FIELDS:
        document.pop(name, None)
    if scope:
        document["@scope"] = scope
    encoded = json.dumps(document, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()
