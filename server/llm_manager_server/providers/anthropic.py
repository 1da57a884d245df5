"""Anthropic's Messages API (Claude) on aiohttp.

One ``aiohttp.ClientSession`` per provider, reused by every call; the key travels in
``x-api-key`` (never in a message, log or repr); each call's timeout is the caller's
remaining deadline; streams are decoded as bytes arrive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..config import Secret
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Answer, ModelCall, ProviderKind, StreamDelta
from . import anthropic_wire
from .base import HealthReport
from .http import UpstreamSession
from .sse import IncompleteStreamError, iter_sse

log = logging.getLogger(__name__)

LABEL = "anthropic"


def normalize_base_url(url: str) -> str:
    """The API root without ``/v1`` (as the official SDKs take it); a trailing ``/v1`` is
    tolerated so ``https://api.anthropic.com/v1`` works too."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if urlsplit(url).path.endswith("/v1") else url


class AnthropicProvider:
    """Claude models: ``POST {base_url}/v1/messages``, plain and streamed."""

    def __init__(
        self,
        *,
        api_key: Secret,
        base_url: str = "https://api.anthropic.com",
        default_max_tokens: int = 4096,
        health_timeout_s: float = 5.0,
    ) -> None:
        self._api_key = api_key
        self._base_url = normalize_base_url(base_url)
        self._default_max_tokens = default_max_tokens
        self._health_timeout_s = health_timeout_s
        self._upstream = UpstreamSession(
            label=LABEL,
            base_url=self._base_url,
            headers={"x-api-key": api_key.reveal(), "anthropic-version": anthropic_wire.ANTHROPIC_VERSION},
            unreachable=ErrorKind.NETWORK_ERROR,
            connection_lost=ErrorKind.NETWORK_ERROR,
        )

    def __repr__(self) -> str:
        return f"AnthropicProvider(base_url={self._base_url!r}, api_key={self._api_key!r})"

    @property
    def kind(self) -> ProviderKind:
        return ProviderKind.ANTHROPIC

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
        body = anthropic_wire.messages_body(call, default_max_tokens=self._default_max_tokens, stream=stream)
        return self._upstream.post(f"{self._base_url}/v1/messages", body, call)

    async def _raise_for_status(self, response: aiohttp.ClientResponse, model: str) -> None:
        if response.status < 400:
            return
        body = await self._upstream.error_body(response)
        raise anthropic_wire.http_error(response.status, body, response.headers, model=model, secrets=self._secrets())

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
        if payload.get("type") == "error" and isinstance(payload.get("error"), dict):
            raise anthropic_wire.stream_error(payload["error"], model=call.model, secrets=self._secrets())
        return anthropic_wire.parse_message(payload, call.model)

    async def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        state = anthropic_wire.StreamState(requested_model=call.model)
        try:
            async with self._post(call, stream=True) as response:
                await self._raise_for_status(response, call.model)
                async for event in iter_sse(response.content.iter_any()):
                    delta = anthropic_wire.parse_stream_data(event.event, event.data, state, secrets=self._secrets())
                    if delta is not None:
                        yield delta
                    if state.finished:
                        break
        except IncompleteStreamError:
            raise self._cut_stream_error(call.model, "mid-event") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._upstream.transport_error(error, call.model) from None
        if not state.finished:
            raise self._cut_stream_error(call.model, "before message_stop")

    @staticmethod
    def _cut_stream_error(model: str, where: str) -> LLMError:
        return LLMError(ErrorKind.NETWORK_ERROR, f"{LABEL} model {model!r} ended its stream {where}", model=model)

    async def health(self) -> HealthReport:
        """``GET /v1/models``: checks reachability and the key without spending tokens."""
        try:
            async with self._upstream.client.get(
                f"{self._base_url}/v1/models", params={"limit": "1"}, timeout=aiohttp.ClientTimeout(total=self._health_timeout_s)
            ) as response:
                if response.status < 400:
                    return HealthReport(healthy=True)
                return HealthReport(healthy=False, detail=f"GET /v1/models returned HTTP {response.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            return HealthReport(healthy=False, detail=str(self._upstream.transport_error(error, None)))
