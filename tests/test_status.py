"""Domain errors -> gRPC statuses with google.rpc details, exactly as the contract's table."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from llm_manager_server.domain.errors import ErrorKind, FieldViolation, LLMError, invalid_request
from llm_manager_server.status import ERROR_DOMAIN, to_status_proto


def unpack(error: LLMError) -> tuple[int, str, error_details_pb2.ErrorInfo, list[object]]:
    status = to_status_proto(error)
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return status.code, status.message, info, list(status.details[1:])


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (ErrorKind.MODEL_UNAVAILABLE, code_pb2.UNAVAILABLE),
        (ErrorKind.RATE_LIMIT_EXCEEDED, code_pb2.RESOURCE_EXHAUSTED),
        (ErrorKind.INVALID_REQUEST, code_pb2.INVALID_ARGUMENT),
        (ErrorKind.AUTHENTICATION_FAILED, code_pb2.UNAUTHENTICATED),
        (ErrorKind.TIMEOUT, code_pb2.DEADLINE_EXCEEDED),
        (ErrorKind.CONTEXT_TOO_LARGE, code_pb2.INVALID_ARGUMENT),
        (ErrorKind.CONFIGURATION_ERROR, code_pb2.FAILED_PRECONDITION),
        (ErrorKind.NETWORK_ERROR, code_pb2.UNAVAILABLE),
        (ErrorKind.ALL_MODELS_UNAVAILABLE, code_pb2.UNAVAILABLE),
        (ErrorKind.CONVERSATION_NOT_FOUND, code_pb2.NOT_FOUND),
    ],
)
def test_every_kind_maps_to_its_code_with_error_info(kind: ErrorKind, code: int) -> None:
    status_code, message, info, _ = unpack(LLMError(kind, "what happened", model="gpt-4o"))
    assert status_code == code
    assert message == "what happened"
    assert (info.reason, info.domain) == (kind.value, ERROR_DOMAIN)
    assert info.metadata["model"] == "gpt-4o"


def test_provider_rejecting_our_key_is_failed_precondition() -> None:
    code, _, info, _ = unpack(LLMError(ErrorKind.AUTHENTICATION_FAILED, "key rejected", upstream_auth=True))
    assert code == code_pb2.FAILED_PRECONDITION
    assert info.reason == "AUTHENTICATION_FAILED"


def test_rate_limit_carries_retry_info() -> None:
    _, _, _, extra = unpack(LLMError(ErrorKind.RATE_LIMIT_EXCEEDED, "slow down", retry_after_s=1.25))
    retry = error_details_pb2.RetryInfo()
    assert extra[0].Unpack(retry)  # type: ignore[attr-defined]
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (1, 250_000_000)


def test_invalid_request_carries_every_field_violation() -> None:
    code, message, info, extra = unpack(
        invalid_request(FieldViolation("prompt", "must not be empty"), FieldViolation("preferences.max_tokens", "must be positive"))
    )
    assert code == code_pb2.INVALID_ARGUMENT and info.reason == "INVALID_REQUEST"
    assert "prompt: must not be empty" in message
    bad_request = error_details_pb2.BadRequest()
    assert extra[0].Unpack(bad_request)  # type: ignore[attr-defined]
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("prompt", "must not be empty"),
        ("preferences.max_tokens", "must be positive"),
    ]


def test_context_too_large_and_all_models_metadata() -> None:
    _, _, info, _ = unpack(
        LLMError(ErrorKind.CONTEXT_TOO_LARGE, "too long", model="m", metadata={"prompt_tokens": "5000", "context_window": "4096"})
    )
    assert dict(info.metadata) == {"prompt_tokens": "5000", "context_window": "4096", "model": "m"}
    _, _, info, _ = unpack(
        LLMError(ErrorKind.ALL_MODELS_UNAVAILABLE, "all failed", metadata={"attempt.1": "a: TIMEOUT", "attempt.2": "b: MODEL_UNAVAILABLE"})
    )
    assert info.metadata["attempt.1"] == "a: TIMEOUT" and info.metadata["attempt.2"] == "b: MODEL_UNAVAILABLE"


def test_secrets_are_redacted_from_message_and_metadata() -> None:
    error = LLMError(
        ErrorKind.AUTHENTICATION_FAILED,
        "Incorrect API key provided: sk-proj-abc123***wxyz. Bearer sk-live-zzz",
        metadata={"upstream": "x-api-key: sk-ant-api03-secret"},
    )
    status = to_status_proto(error)
    text = status.SerializeToString().decode("latin-1")
    assert "abc123" not in text and "sk-live" not in text and "api03" not in text
    assert "[redacted]" in status.message


def test_grpc_status_code_names_match() -> None:
    # The proto code numbers and grpc.StatusCode agree (rpc_status.to_status relies on it).
    assert grpc.StatusCode.UNAVAILABLE.value[0] == code_pb2.UNAVAILABLE
