"""The seed's error kinds as one exception type.

Every failure inside the service is an :class:`LLMError` with an :class:`ErrorKind`; the
error-mapping interceptor turns it into a ``google.rpc.Status`` (see ``status.py``). Messages
must never contain secrets: providers build them from status codes and the upstream's error
text, never from request headers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import BilledAttempt


class ErrorKind(enum.Enum):
    """Failure kinds; the value is the ``ErrorInfo.reason`` callers see."""

    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
    INVALID_REQUEST = "INVALID_REQUEST"
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    TIMEOUT = "TIMEOUT"
    CONTEXT_TOO_LARGE = "CONTEXT_TOO_LARGE"
    CONFIGURATION_ERROR = "CONFIGURATION_ERROR"
    NETWORK_ERROR = "NETWORK_ERROR"
    ALL_MODELS_UNAVAILABLE = "ALL_MODELS_UNAVAILABLE"
    CONVERSATION_NOT_FOUND = "CONVERSATION_NOT_FOUND"
    # Not one of the seed's kinds: a local engine's request queue is full.
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    # A model's tool arguments or structured output did not validate against their schema.
    INVALID_MODEL_OUTPUT = "INVALID_MODEL_OUTPUT"
    # The caller's API key may not use the model (its ``models`` list in LLM_API_KEYS_FILE).
    PERMISSION_DENIED = "PERMISSION_DENIED"
    # A caller is over one of its key's limits (requests or tokens per minute, budget per day).
    # Not retryable: another attempt (or model) would only spend more of the same limit.
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"


# Kinds worth another attempt at the same or the next model (408/409/429/5xx/network).
RETRYABLE_KINDS = frozenset(
    {
        ErrorKind.MODEL_UNAVAILABLE,
        ErrorKind.RATE_LIMIT_EXCEEDED,
        ErrorKind.TIMEOUT,
        ErrorKind.NETWORK_ERROR,
        ErrorKind.RESOURCE_EXHAUSTED,
        ErrorKind.INVALID_MODEL_OUTPUT,  # sampling again (or another model) may well validate
    }
)


@dataclass(frozen=True)
class FieldViolation:
    """One invalid request field, as ``google.rpc.BadRequest.FieldViolation``."""

    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exceeded limit, as ``google.rpc.QuotaFailure.Violation``: whose (``subject``, the
    caller's name) and which limit (``description``)."""

    subject: str
    description: str


@dataclass
class LLMError(Exception):
    """A failure with its kind, a caller-safe message and structured details."""

    kind: ErrorKind
    message: str
    model: str | None = None
    # Seconds the provider asked us to wait (429 retry-after).
    retry_after_s: float | None = None
    field_violations: tuple[FieldViolation, ...] = ()
    quota_violations: tuple[QuotaViolation, ...] = ()
    # Extra ErrorInfo metadata, e.g. token counts or each attempt's reason.
    metadata: dict[str, str] = field(default_factory=dict)
    # True when a provider rejected *our* credentials (FAILED_PRECONDITION, not UNAUTHENTICATED).
    upstream_auth: bool = False
    # False when retrying the same model cannot help although the kind is retryable
    # (e.g. HTTP 404 "no such model": unavailable, but not transiently).
    transient: bool = True
    # Attempts of the failed call the providers answered in full (so charged for) but whose
    # answers were rejected: booked to the caller although the call failed (see usage/meter.py).
    billed_attempts: list[BilledAttempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.message}"

    @property
    def retryable(self) -> bool:
        return self.transient and self.kind in RETRYABLE_KINDS


def invalid_request(*violations: FieldViolation) -> LLMError:
    """An ``INVALID_REQUEST`` error listing every bad field."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
    return LLMError(ErrorKind.INVALID_REQUEST, f"invalid request: {summary}", field_violations=violations)
