"""Admits one call of the API, whatever carries it: the gRPC interceptor (``interceptors``)
and any other transport use the same gate, so a call gets the same request id rules, the same
deadline, the same concurrency cap (and, with keys on, the same authentication) on every path.

``open`` sets the call's context (request id, deadline, which limit set it); ``admit`` then
refuses a call that cannot be served (``LLMError``) or counts it in; ``release`` ends it.
"""

from __future__ import annotations

import asyncio
import random
import re

from .domain.call_context import SERVER_TIMEOUT, TimeLimit, deadline_var, request_id_var, time_limit, time_limit_var
from .domain.errors import ErrorKind, LLMError

# A caller's x-request-id is kept only when it is this shape (a UUID, a ULID, "req_abc-123",
# base64 ...): it goes on every log line and back to the caller, so no control characters, no
# spaces, and at most 128 characters. Anything else is replaced by a new id.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")

# Request ids only need to be unique, not unpredictable: no os.urandom system call per call.
_ids = random.Random()


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


class CallGate:
    """The admission of API calls: one per server process, shared by every transport."""

    def __init__(self, default_timeout_s: float, *, max_concurrent_calls: int = 1024) -> None:
        self._server_limit = TimeLimit(SERVER_TIMEOUT, default_timeout_s)
        # Calls of the API being served at once; beyond the cap new ones are refused at once
        # (RESOURCE_EXHAUSTED) instead of queueing without bound. Health and reflection are
        # not counted: a busy server still answers its probes.
        self._max_concurrent_calls = max_concurrent_calls
        self.in_flight = 0

    def open(self, supplied_request_id: str | None, client_remaining_s: float | None) -> str:
        """Sets the call's context: its request id (the caller's if well-formed, else a new
        one; returned), its absolute deadline (the caller's, capped by ``LLM_TIMEOUT_MS``) and
        which of the two set it."""
        if supplied_request_id is not None and REQUEST_ID.fullmatch(supplied_request_id):
            request_id = supplied_request_id
        else:
            request_id = new_request_id()
        request_id_var.set(request_id)
        budget, limit = time_limit(client_remaining_s, self._server_limit)
        deadline_var.set(asyncio.get_running_loop().time() + budget)
        time_limit_var.set(limit)
        return request_id

    def admit(self) -> None:
        """Counts the call in, or raises the LLMError that refuses it; a call admitted must be
        ``release``d once it ends."""
        if self.in_flight >= self._max_concurrent_calls:
            raise LLMError(
                ErrorKind.RESOURCE_EXHAUSTED,
                f"the server is serving its maximum of {self._max_concurrent_calls} concurrent calls (LLM_MAX_CONCURRENT_CALLS); retry shortly",
                retry_after_s=1.0,
                metadata={"limit": "LLM_MAX_CONCURRENT_CALLS", "max_concurrent_calls": str(self._max_concurrent_calls)},
            )
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1


__all__ = ["REQUEST_ID", "CallGate", "new_request_id"]
