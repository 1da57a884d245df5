"""Domain errors as ``google.rpc.Status`` with rich details (AIP-193).

Every status carries one ``ErrorInfo`` (reason = the error kind, domain ``llm-manager``,
metadata with the model and kind-specific facts), plus ``RetryInfo`` for rate limits and
``BadRequest`` for invalid requests.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .domain.call_context import request_id_var
from .domain.errors import ErrorKind, LLMError
from .redaction import redact

ERROR_DOMAIN = "llm-manager"

_CODES: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.MODEL_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.RATE_LIMIT_EXCEEDED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.AUTHENTICATION_FAILED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.CONTEXT_TOO_LARGE: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.CONFIGURATION_ERROR: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.NETWORK_ERROR: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.ALL_MODELS_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.CONVERSATION_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.INVALID_MODEL_OUTPUT: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
}


def status_code(error: LLMError) -> grpc.StatusCode:
    if error.kind is ErrorKind.AUTHENTICATION_FAILED and error.upstream_auth:
        # Our own key was rejected: the caller can do nothing about it.
        return grpc.StatusCode.FAILED_PRECONDITION
    return _CODES[error.kind]


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def to_status_proto(error: LLMError) -> status_pb2.Status:
    code = status_code(error)
    # Every string that reaches the caller is redacted here, whatever built the error.
    metadata = {redact(key): redact(value) for key, value in error.metadata.items()}
    if error.model:
        metadata["model"] = redact(error.model)
    request_id = request_id_var.get()
    if request_id != "-":  # inside a call: every ErrorInfo names it, to tie it to the logs
        metadata["request_id"] = request_id
    details = [_packed(error_details_pb2.ErrorInfo(reason=error.kind.value, domain=ERROR_DOMAIN, metadata=metadata))]
    if error.retry_after_s is not None:
        seconds = math.floor(error.retry_after_s)
        nanos = int((error.retry_after_s - seconds) * 1e9)
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=seconds, nanos=nanos))))
    if error.field_violations:
        details.append(
            _packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=redact(v.field), description=redact(v.description))
                        for v in error.field_violations
                    ]
                )
            )
        )
    return status_pb2.Status(code=getattr(code_pb2, code.name), message=redact(error.message), details=details)


def to_grpc_status(error: LLMError) -> grpc.Status:
    """A ``grpc.Status`` whose trailing metadata carries the rich details."""
    status: grpc.Status = rpc_status.to_status(to_status_proto(error))
    return status
