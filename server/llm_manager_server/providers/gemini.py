"""Google's Gemini API (Generative Language API) on aiohttp.

One ``aiohttp.ClientSession`` per provider, reused by every call; the key travels in
``x-goog-api-key`` (never in a URL, message, log or repr); each call's timeout is the
caller's remaining deadline; streams (``streamGenerateContent?alt=sse``) are decoded as bytes
arrive. The wire mapping is in :mod:`.gemini_wire`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..config import Secret
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Answer, ModelCall, ProviderKind, StreamDelta
from ..redaction import redact, redact_and_cut
from . import gemini_wire
from .base import HealthReport
from .http import UpstreamSession
from .openai_wire import MAX_UPSTREAM_FIELD
from .sse import IncompleteStreamError, iter_sse

LABEL = gemini_wire.LABEL
DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"


def normalize_base_url(url: str) -> str:
    """The API root without the version (as the official SDK takes it); a trailing
    ``/v1beta`` or ``/v1`` is tolerated, so ``https://generativelanguage.googleapis.com/v1beta``
    works too."""
    url = url.rstrip("/")
    path = urlsplit(url).path
    for version in ("/v1beta", "/v1"):
        if path.endswith(version):
            return url[: -len(version)]
    return url


class GeminiProvider:
    """Gemini models: ``POST {base_url}/v1beta/models/{model}:generateContent``, plain and
    streamed."""

    def __init__(
        self,
        *,
        api_key: Secret,
        base_url: str = DEFAULT_BASE_URL,
        default_max_tokens: int | None = None,
        health_timeout_s: float = 5.0,
    ) -> None:
        self._api_key = api_key
        self._base_url = normalize_base_url(base_url)
        self._default_max_tokens = default_max_tokens
        self._health_timeout_s = health_timeout_s
        self._upstream = UpstreamSession(
            label=LABEL,
            base_url=self._base_url,
            headers={"x-goog-api-key": api_key.reveal()},
            unreachable=ErrorKind.NETWORK_ERROR,
            connection_lost=ErrorKind.NETWORK_ERROR,
        )

    def __repr__(self) -> str:
        return f"GeminiProvider(base_url={self._base_url!r}, api_key={self._api_key!r})"

    __str__ = __repr__

    @property
    def kind(self) -> ProviderKind:
        return ProviderKind.GEMINI

    @property
    def base_url(self) -> str:
        return self._base_url

    async def start(self) -> None:
        await self._upstream.start()

    async def close(self) -> None:
        await self._upstream.close()

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key.reveal(),)

    def _post(self, call: ModelCall, *, stream: bool) -> Any:
        body = gemini_wire.generate_content_body(call, default_max_tokens=self._default_max_tokens)
        return self._upstream.post(gemini_wire.generate_url(self._base_url, call.model, stream=stream), body, call)

    async def _raise_for_status(self, response: aiohttp.ClientResponse, model: str) -> None:
        if response.status < 400:
            return
        body = await self._upstream.error_body(response)
        raise gemini_wire.http_error(response.status, body, response.headers, model=model, secrets=self._secrets())

    async def generate(self, call: ModelCall) -> Answer:
        try:
            async with self._post(call, stream=False) as response:
                await self._raise_for_status(response, call.model)
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._upstream.transport_error(error, call.model) from None
        except ValueError:
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{LABEL} model {call.model!r} sent a reply that is not JSON", model=call.model) from None
        if not isinstance(payload, dict):
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{LABEL} model {call.model!r} sent an unexpected reply", model=call.model)
        return gemini_wire.parse_response(payload, call.model, secrets=self._secrets())

    async def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        state = gemini_wire.StreamState(requested_model=call.model)
        try:
            async with self._post(call, stream=True) as response:
                await self._raise_for_status(response, call.model)
                async for event in iter_sse(response.content.iter_any()):
                    delta = gemini_wire.parse_stream_data(event.data, state, secrets=self._secrets())
                    if delta is not None:
                        yield delta
        except IncompleteStreamError:
            if not state.finished:
                raise self._cut_stream_error(call.model, "mid-event") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            # After the finish reason the answer is complete: a connection lost while the
            # upstream closes it costs nothing.
            if not state.finished:
                raise self._upstream.transport_error(error, call.model) from None
        if not state.finished:
            raise self._cut_stream_error(call.model, "before its finish reason")
        yield StreamDelta(model=state.model, answer=state.answer())

    @staticmethod
    def _cut_stream_error(model: str, where: str) -> LLMError:
        return LLMError(ErrorKind.NETWORK_ERROR, f"{LABEL} model {model!r} ended its stream {where}", model=model)

    async def health(self) -> HealthReport:
        """``GET /v1beta/models?pageSize=1``: checks reachability and the key without spending
        tokens."""
        url = f"{self._base_url}/{gemini_wire.API_VERSION}/models"
        try:
            async with self._upstream.client.get(
                url, params={"pageSize": "1"}, timeout=aiohttp.ClientTimeout(total=self._health_timeout_s)
            ) as response:
                if response.status < 400:
                    return HealthReport(healthy=True)
                error = gemini_wire.error_object(await self._upstream.error_body(response))
                reason = gemini_wire.error_reason(error) or error.get("status")
                why = f" ({redact_and_cut(reason, MAX_UPSTREAM_FIELD, *self._secrets())})" if isinstance(reason, str) and reason else ""
                return HealthReport(healthy=False, detail=redact(f"GET {url} returned HTTP {response.status}{why}", *self._secrets()))
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            return HealthReport(healthy=False, detail=redact(str(self._upstream.transport_error(error, None)), *self._secrets()))
