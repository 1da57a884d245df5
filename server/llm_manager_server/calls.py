"""Admits one call of the API, whatever carries it: the gRPC interceptor (``interceptors``)
and any other transport use the same gate, so a call gets the same request id rules, the same
deadline, the same concurrency cap and, with keys on, the same authentication on every path.

``open`` sets the call's context (request id, deadline, which limit set it); ``authenticate``
names the caller from its key (``caller_var``) or refuses the call; ``admit`` then refuses a
call that cannot be served (``LLMError``) or counts it in; ``release`` ends it.
"""

from __future__ import annotations

import asyncio
import random
import re
from typing import TYPE_CHECKING

from .domain.call_context import SERVER_TIMEOUT, TimeLimit, deadline_var, request_id_var, time_limit, time_limit_var
from .domain.caller import Caller, caller_var
from .domain.errors import ErrorKind, LLMError

if TYPE_CHECKING:
    from .keys import KeyRing

# A caller's x-request-id is kept only when it is this shape (a UUID, a ULID, "req_abc-123",
# base64 ...): it goes on every log line and back to the caller, so no control characters, no
# spaces, and at most 128 characters. Anything else is replaced by a new id.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/+=@-]{0,127}")

# Request ids only need to be unique, not unpredictable: no os.urandom system call per call.
_ids = random.Random()


def new_request_id() -> str:
    return f"{_ids.getrandbits(128):032x}"


# A presented key is looked up only when it is this shape: printable ASCII without spaces or
# commas, at most 256 characters (ours are 48). Anything else (a 100 KB header, two keys in one
# header, control characters) is refused before it is hashed.
PRESENTED_KEY = re.compile(r"[!-+\--~]{1,256}")
_BEARER = "bearer "


def _refused(reason: str) -> LLMError:
    """UNAUTHENTICATED; the message says what was wrong with the credentials, never what they
    were. (Worded so that the redaction of "Bearer <token>" and "x-api-key: <token>", which
    every status goes through, leaves it readable: no word after "Bearer " or "x-api-key ".)"""
    return LLMError(ErrorKind.AUTHENTICATION_FAILED, reason)


def presented_key(authorization: str | None, api_key: str | None) -> str:
    """The key a call presents in ``authorization: Bearer <key>`` or ``x-api-key: <key>``
    (repeated headers joined with ", ", as HTTP does); both at once must be the same key, so
    neither header can widen or change the other's scope. Raises the UNAUTHENTICATED LLMError."""
    bearer: str | None = None
    if authorization is not None:
        # The scheme is case-insensitive (RFC 9110 11.1); anything but Bearer is refused.
        if authorization[:7].lower() != _BEARER:
            raise _refused("the authorization header must use the scheme Bearer, followed by the API key")
        bearer = authorization[7:].strip()
    if bearer is not None and api_key is not None and bearer != api_key:
        raise _refused("two different keys: one in the authorization header, another in the header x-api-key")
    key = bearer if bearer is not None else api_key
    if key is None:
        raise _refused("this server requires an API key: give it in the authorization header (scheme Bearer) or in the header x-api-key")
    if PRESENTED_KEY.fullmatch(key) is None:
        raise _refused("the API key is not valid")
    return key


class CallGate:
    """The admission of API calls: one per server process, shared by every transport."""

    def __init__(self, default_timeout_s: float, *, max_concurrent_calls: int = 1024, keys: KeyRing | None = None) -> None:
        # LLM_API_KEYS_FILE's callers; None: authentication off, every call the anonymous caller.
        self.keys = keys
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

    def authenticate(self, authorization: str | None, api_key: str | None) -> Caller | None:
        """Names the caller from the key the call presents (see ``presented_key``) in
        ``caller_var``, and returns it; with authentication off, ``None`` at once. An unknown,
        missing or malformed key raises the UNAUTHENTICATED LLMError."""
        keys = self.keys
        if keys is None:
            return None
        caller = keys.caller_for(presented_key(authorization, api_key))
        if caller is None:
            raise _refused("the API key is not valid")
        caller_var.set(caller)
        return caller

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


__all__ = ["PRESENTED_KEY", "REQUEST_ID", "CallGate", "new_request_id", "presented_key"]
