"""What the API interceptor knows about the current call, for every layer below it: the
request id, the absolute deadline, and which limit set that deadline.

Context variables, set once per call by the interceptor (``interceptors``) and read by the
servicers, the router and the log formatter; nothing below the interceptor needs gRPC for it.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ErrorKind, LLMError


@dataclass(frozen=True, slots=True)
class TimeLimit:
    """The limit that bounds a call: ``name`` for machines (ErrorInfo ``limit``), its length,
    and a ``description`` for people (built only when a call runs out of time)."""

    name: str
    seconds: float | None = None

    @property
    def description(self) -> str:
        if self.seconds is None:
            return "the server's time limit"
        if self.name == CLIENT_DEADLINE:
            return f"the caller's deadline ({self.seconds:.3g} s)"
        return f"the server's limit LLM_TIMEOUT_MS ({self.seconds * 1000:.0f} ms)"


CLIENT_DEADLINE = "client_deadline"
SERVER_TIMEOUT = "LLM_TIMEOUT_MS"

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# Absolute deadline (event-loop time) of the current call: the client's, capped by LLM_TIMEOUT_MS.
deadline_var: contextvars.ContextVar[float] = contextvars.ContextVar("deadline", default=float("inf"))
time_limit_var: contextvars.ContextVar[TimeLimit] = contextvars.ContextVar("time_limit", default=TimeLimit(SERVER_TIMEOUT))


def time_limit(client_remaining_s: float | None, server_limit: TimeLimit) -> tuple[float, TimeLimit]:
    """The call's budget in seconds and the limit that sets it: the caller's deadline when it
    is the tighter one, else the server's (``LLM_TIMEOUT_MS``, built once by the caller)."""
    server_s = server_limit.seconds if server_limit.seconds is not None else float("inf")
    if client_remaining_s is not None and client_remaining_s < server_s:
        return client_remaining_s, TimeLimit(CLIENT_DEADLINE, client_remaining_s)
    return server_s, server_limit


def deadline_exceeded(
    what: str,
    *,
    tried: Sequence[tuple[str, LLMError]] = (),
    asked: Sequence[str] = (),
    not_tried: Sequence[str] = (),
    model: str | None = None,
) -> LLMError:
    """TIMEOUT (DEADLINE_EXCEEDED) for a call that ran out of time, naming the limit that
    fired, what each tried model did (``tried``; or only which were ``asked``, when the time
    ran out while one was answering), and which models were never asked."""
    limit = time_limit_var.get()
    message = f"{limit.description} passed before {what}"
    metadata = {"limit": limit.name}
    if asked and not tried:
        message += "; asked " + ", ".join(dict.fromkeys(asked))
        metadata["model_chain"] = ", ".join(asked)
    if tried:
        message += "; tried " + ", ".join(f"{name} ({error.kind.value})" for name, error in tried)
        metadata |= {f"attempt.{i + 1}": f"{name}: {error.kind.value}: {error.message[:200]}" for i, (name, error) in enumerate(tried)}
    if not_tried:
        message += "; not tried: " + ", ".join(not_tried)
        metadata["not_tried"] = ", ".join(not_tried)
    return LLMError(ErrorKind.TIMEOUT, message, model=model, metadata=metadata)
