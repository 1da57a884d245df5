"""What every HTTP backend shares: one ``aiohttp.ClientSession`` per upstream, the mapping of
transport failures to error kinds, and the provider shell (``HttpJsonProvider``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..secret import Secret
from ..domain.embeddings import EmbeddingCall
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import ModelCall, ProviderKind
from ..redaction import redact
from .base import HealthReport

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

    def post(self, url: str, body: Mapping[str, Any], call: ModelCall | EmbeddingCall) -> Any:
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


class HttpJsonProvider:
    """The shell every HTTP provider shares: its connection pool, start and close, the secrets
    it must keep out of errors, POST -> status -> JSON -> transport error, and a health GET.
    A provider adds its wire mapping: ``_http_error`` (an error reply as an LLMError) and what
    it makes of the JSON and the stream."""

    def __init__(
        self,
        *,
        kind: ProviderKind,
        label: str,
        base_url: str,
        headers: Mapping[str, str],
        api_key: Secret | None,
        unreachable: ErrorKind,
        connection_lost: ErrorKind,
        health_timeout_s: float,
    ) -> None:
        self._kind = kind
        self._label = label
        self._base_url = base_url
        self._api_key = api_key
        self._health_timeout_s = health_timeout_s
        self._connection_lost = connection_lost
        self._upstream = UpstreamSession(
            label=label, base_url=base_url, headers=headers, unreachable=unreachable, connection_lost=connection_lost
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self._kind.value}, base_url={self._base_url!r}, api_key={self._api_key!r})"

    __str__ = __repr__

    @property
    def kind(self) -> ProviderKind:
        return self._kind

    @property
    def label(self) -> str:
        return self._label

    @property
    def base_url(self) -> str:
        return self._base_url

    async def start(self) -> None:
        await self._upstream.start()

    async def close(self) -> None:
        await self._upstream.close()

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key.reveal(),) if self._api_key else ()

    def _http_error(self, status: int, body: str, headers: Mapping[str, str], model: str) -> LLMError:
        raise NotImplementedError  # each provider maps its own error replies

    async def _raise_for_status(self, response: aiohttp.ClientResponse, model: str) -> None:
        if response.status < 400:
            return
        body = await self._upstream.error_body(response)
        raise self._http_error(response.status, body, response.headers, model)

    def _post(self, url: str, body: Mapping[str, Any], call: ModelCall | EmbeddingCall) -> Any:
        return self._upstream.post(url, body, call)

    async def _post_json(self, url: str, body: Mapping[str, Any], call: ModelCall | EmbeddingCall) -> dict[str, Any]:
        """A non-streamed call's reply object; an error reply, a transport failure or a reply
        that is not a JSON object is an LLMError."""
        try:
            async with self._post(url, body, call) as response:
                await self._raise_for_status(response, call.model)
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._upstream.transport_error(error, call.model) from None
        except ValueError:
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{self._label} model {call.model!r} sent a reply that is not JSON", model=call.model) from None
        if not isinstance(payload, dict):
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{self._label} model {call.model!r} sent an unexpected reply", model=call.model)
        return payload

    def _cut_stream_error(self, model: str, where: str) -> LLMError:
        return LLMError(self._connection_lost, f"{self._label} model {model!r} ended its stream {where}", model=model)

    async def _probe(self, url: str, params: Mapping[str, str] | None = None) -> HealthReport:
        """A GET that checks reachability (and the key) without spending tokens."""
        try:
            async with self._upstream.client.get(url, params=params, timeout=aiohttp.ClientTimeout(total=self._health_timeout_s)) as response:
                if response.status < 400:
                    return HealthReport(healthy=True)
                return HealthReport(healthy=False, detail=await self._probe_failure(url, response))
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            return HealthReport(healthy=False, detail=redact(str(self._upstream.transport_error(error, None)), *self.secrets()))

    async def _probe_failure(self, url: str, response: aiohttp.ClientResponse) -> str:
        path = url.removeprefix(self._base_url) or url
        return f"GET {path} returned HTTP {response.status}"
