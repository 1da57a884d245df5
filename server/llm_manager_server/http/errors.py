"""Domain errors as OpenAI's error JSON and HTTP status codes.

The HTTP twin of ``status.py``: one table from :class:`ErrorKind` to a status and OpenAI's
error ``type``, so every kind has one answer on each transport. The body is OpenAI's shape,
``{"error": {"message", "type", "code", "param"}}``, which the official SDKs turn into their
exception classes (400 ``BadRequestError``, 401 ``AuthenticationError``, 403
``PermissionDeniedError``, 404 ``NotFoundError``, 429 ``RateLimitError``, 5xx
``InternalServerError``); ``code`` is the error kind in lower case (the gRPC ErrorInfo reason),
``param`` the first bad field. Like the gRPC status, every string is redacted here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..domain.call_context import request_id_var
from ..domain.errors import ErrorKind, LLMError
from ..redaction import redact

INVALID_REQUEST_ERROR = "invalid_request_error"
SERVER_ERROR = "server_error"


@dataclass(frozen=True, slots=True)
class HttpStatus:
    status: int
    type: str


# Google's canonical HTTP mapping of each gRPC code (google/rpc/code.proto), with OpenAI's types.
STATUSES: dict[ErrorKind, HttpStatus] = {
    ErrorKind.INVALID_REQUEST: HttpStatus(400, INVALID_REQUEST_ERROR),
    ErrorKind.CONTEXT_TOO_LARGE: HttpStatus(400, INVALID_REQUEST_ERROR),
    # FAILED_PRECONDITION on gRPC: a pinned model no configured provider serves, or one that
    # lacks a capability the request needs.
    ErrorKind.CONFIGURATION_ERROR: HttpStatus(400, INVALID_REQUEST_ERROR),
    ErrorKind.AUTHENTICATION_FAILED: HttpStatus(401, "authentication_error"),
    # The caller's key may not use the model (its ``models`` in LLM_API_KEYS_FILE).
    ErrorKind.PERMISSION_DENIED: HttpStatus(403, "permission_error"),
    ErrorKind.CONVERSATION_NOT_FOUND: HttpStatus(404, "not_found_error"),
    ErrorKind.RATE_LIMIT_EXCEEDED: HttpStatus(429, "rate_limit_error"),
    ErrorKind.RESOURCE_EXHAUSTED: HttpStatus(429, "rate_limit_error"),
    # The caller is over its key's limit or budget (LLM_API_KEYS_FILE); retry-after says when it resets.
    ErrorKind.QUOTA_EXCEEDED: HttpStatus(429, "rate_limit_error"),
    ErrorKind.TIMEOUT: HttpStatus(504, "timeout_error"),
    ErrorKind.MODEL_UNAVAILABLE: HttpStatus(503, "service_unavailable_error"),
    ErrorKind.NETWORK_ERROR: HttpStatus(503, "service_unavailable_error"),
    ErrorKind.ALL_MODELS_UNAVAILABLE: HttpStatus(503, "service_unavailable_error"),
    ErrorKind.INVALID_MODEL_OUTPUT: HttpStatus(503, "service_unavailable_error"),
}
# A provider rejected *our* key (FAILED_PRECONDITION on gRPC): nothing the caller can fix.
_UPSTREAM_AUTH = HttpStatus(500, SERVER_ERROR)


def http_status(error: LLMError) -> HttpStatus:
    if error.kind is ErrorKind.AUTHENTICATION_FAILED and error.upstream_auth:
        return _UPSTREAM_AUTH
    return STATUSES[error.kind]


class HttpError(Exception):
    """A failure of the HTTP exchange itself, before any domain request exists: an unknown
    route, a body too large or not JSON. Answered in the same error shape."""

    def __init__(self, status: int, message: str, *, code: str, param: str | None = None, error_type: str = INVALID_REQUEST_ERROR) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.error_type = error_type


def error_object(message: str, *, error_type: str, code: str, param: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": code, "param": param, **extra}}


def llm_error_body(error: LLMError) -> tuple[int, dict[str, Any], dict[str, str]]:
    """(status, body, extra headers) for a domain error; 429s and 503s with a wait carry
    ``retry-after`` (whole seconds, rounded up), which the SDKs honour when they retry."""
    status = http_status(error)
    metadata = {redact(key): redact(value) for key, value in error.metadata.items()}
    if error.model:
        metadata["model"] = redact(error.model)
    extra: dict[str, Any] = {"request_id": request_id_var.get()}
    if metadata:
        extra["metadata"] = metadata
    if error.field_violations:
        extra["field_violations"] = [{"field": redact(v.field), "description": redact(v.description)} for v in error.field_violations]
    param = redact(error.field_violations[0].field) if error.field_violations else None
    body = error_object(redact(error.message), error_type=status.type, code=error.kind.value.lower(), param=param, **extra)
    headers: dict[str, str] = {}
    if error.retry_after_s is not None:
        headers["retry-after"] = str(max(1, math.ceil(error.retry_after_s)))
    return status.status, body, headers


def http_error_body(error: HttpError) -> dict[str, Any]:
    return error_object(error.message, error_type=error.error_type, code=error.code, param=error.param, request_id=request_id_var.get())


def internal_error_body() -> dict[str, Any]:
    request_id = request_id_var.get()
    return error_object(f"internal error (request id {request_id})", error_type=SERVER_ERROR, code="internal", request_id=request_id)
