"""What every HTTP backend shares: one ``aiohttp.ClientSession`` per upstream, and the
mapping of transport failures to error kinds."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..domain.errors import ErrorKind, LLMError
from ..domain.types import ModelCall

MAX_ERROR_BODY_BYTES = 64 * 1024


class UpstreamSession:
    """The connection pool of one upstream, opened by ``start`` and closed by ``close``."""

    def __init__(
        self,
        *,
        label: str,
        base_url: str,
        headers: Mapping[str, str],
        unreachable: ErrorKind,
        connection_lost: ErrorKind,
    ) -> None:
        self._label = label
        self._base_url = base_url
        self._headers = dict(headers)
        self._unreachable = unreachable
        self._connection_lost = connection_lost
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            # No session-wide timeout: every call sets its own from the caller's deadline.
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(total=None),
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise LLMError(ErrorKind.CONFIGURATION_ERROR, f"{self._label} provider used before start()")
        return self._session

    def post(self, url: str, body: Mapping[str, Any], call: ModelCall) -> Any:
        """A model call's JSON POST (an async context manager giving the response), with
        the attempt's W3C trace context (``call.trace_headers``, so a traced upstream joins
        the caller's trace) and bounded by the call's remaining time."""
        return self.client.post(url, json=body, headers=dict(call.trace_headers), timeout=aiohttp.ClientTimeout(total=call.timeout_s))

    async def error_body(self, response: aiohttp.ClientResponse) -> str:
        """An error reply's body, read up to ``MAX_ERROR_BODY_BYTES``: enough for any real
        error object, and an upstream cannot make the service hold an endless one."""
        raw = await response.content.read(MAX_ERROR_BODY_BYTES)
        return raw.decode("utf-8", errors="replace")  # error objects are JSON, so UTF-8

    def transport_error(self, error: BaseException, model: str | None) -> LLMError:
        """A timeout, a refused connection, or a connection lost mid-reply, as an LLMError;
        ``model`` None for the endpoint itself (a health probe)."""
        what = f"{self._label} model {model!r}" if model is not None else f"{self._label} endpoint {self._base_url}"
        if isinstance(error, asyncio.TimeoutError):
            return LLMError(ErrorKind.TIMEOUT, f"{what} did not answer in time", model=model)
        if isinstance(error, aiohttp.ClientConnectorError):
            where = f" at {self._base_url}" if model is not None else ""
            return LLMError(self._unreachable, f"{what} is unreachable{where}: {error.strerror or 'connection failed'}", model=model)
        return LLMError(self._connection_lost, f"{what}: connection lost ({type(error).__name__})", model=model)
