"""What an HTTP error reply means, for every HTTP provider: the error object in its body, the
message and metadata every mapping starts from, the status -> error kind ladder (after each
provider's wire module has picked out what only its own error bodies say, such as a context
overflow), retry-after headers, and how much upstream text may be shown. Also the one reading
of a token count, which every wire mapping's usage needs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ..domain.errors import ErrorKind, FieldViolation, LLMError
from ..redaction import redact_and_cut

# Upstream error text is cut to this many characters (after redaction) before it reaches a
# status message; other upstream fields (codes, types, request ids) to the shorter bound.
MAX_UPSTREAM_MESSAGE = 300
MAX_UPSTREAM_FIELD = 100


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms`` (OpenAI) or ``retry-after`` seconds, if present and sane."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            continue  # an HTTP date: too rare from these APIs to be worth parsing
        if 0 <= value <= 3600:
            return value
    return None


def error_for_status(
    status: int,
    message: str,
    *,
    model: str,
    metadata: dict[str, str],
    headers: Mapping[str, str],
    violation: FieldViolation,
    auth_statuses: tuple[int, ...] = (401, 403),
) -> LLMError:
    """The error kind an HTTP status means, for every HTTP provider (after each has picked
    out what only its own error bodies say, such as a context overflow)."""
    if status in auth_statuses:
        # Our key, our account or our key's permissions: nothing the caller can fix.
        return LLMError(ErrorKind.AUTHENTICATION_FAILED, message, model=model, metadata=metadata, upstream_auth=True)
    if status == 429:
        return LLMError(
            ErrorKind.RATE_LIMIT_EXCEEDED, message, model=model, metadata=metadata, retry_after_s=retry_after_seconds(headers)
        )
    if status == 408:
        return LLMError(ErrorKind.TIMEOUT, message, model=model, metadata=metadata)
    if status == 404:
        # No such model (or a wrong base URL) at this provider: retrying cannot help, the
        # next candidate might.
        return LLMError(ErrorKind.CONFIGURATION_ERROR, message, model=model, metadata=metadata)
    if status == 501:
        # Not implemented by this endpoint (a llama.cpp server started without --embeddings
        # asked for embeddings): a fact of its configuration, never worth a retry.
        return LLMError(ErrorKind.CONFIGURATION_ERROR, message, model=model, metadata=metadata)
    if status == 409 or status >= 500:  # Anthropic's 529 overloaded_error included
        return LLMError(ErrorKind.MODEL_UNAVAILABLE, message, model=model, metadata=metadata)
    return LLMError(ErrorKind.INVALID_REQUEST, message, model=model, metadata=metadata, field_violations=(violation,))


def token_count(raw: Mapping[str, Any], key: str) -> int:
    """A usage count as reported; anything but a non-negative integer counts as 0."""
    value = raw.get(key)
    return value if isinstance(value, int) and value >= 0 else 0


def error_object(body_text: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """(the error object, the whole body) of an error reply, uncut: what is shown of it is
    redacted, then cut. A body that is not JSON is the message itself; of a JSON array (the
    array form of Gemini's stream) the first object counts; a string ``error`` is a message."""
    try:
        parsed = json.loads(body_text)
    except ValueError:
        return {"message": body_text}, {}
    if isinstance(parsed, list) and parsed and isinstance(parsed[0], Mapping):
        parsed = parsed[0]
    if not isinstance(parsed, Mapping):
        return {"message": str(parsed)}, {}
    error = parsed.get("error")
    if isinstance(error, Mapping):
        return error, parsed
    if isinstance(error, str):
        return {"message": error}, parsed
    return parsed, parsed


def described(status: int, error: Mapping[str, Any], summary: str, secrets: tuple[str, ...]) -> tuple[str, str, dict[str, str]]:
    """What every mapping of an error object starts from: the upstream's message (redacted,
    then cut), the status message (``summary``, then the upstream's message) and the metadata
    naming the upstream status."""
    raw = error.get("message")
    upstream_message = redact_and_cut(raw if isinstance(raw, str) else (raw or ""), MAX_UPSTREAM_MESSAGE, *secrets)
    message = summary + (f": {upstream_message}" if upstream_message else "")
    return upstream_message, message, {"upstream_status": str(status)}


def mid_stream(mapped: LLMError) -> LLMError:
    """An error object received inside a stream, mapped with the status its type implies: the
    HTTP status was 200, so none is reported as the upstream's."""
    mapped.metadata.pop("upstream_status", None)
    return mapped
