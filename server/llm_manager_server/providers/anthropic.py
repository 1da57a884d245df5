"""Anthropic's Messages API (Claude) on aiohttp.

One ``aiohttp.ClientSession`` per provider, reused by every call; the key travels in
``x-api-key`` (never in a message, log or repr); each call's timeout is the caller's
remaining deadline; streams are decoded as bytes arrive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..secret import Secret
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Answer, ModelCall, ProviderKind, StreamDelta
from . import anthropic_wire
from .base import HealthReport
from .http import HttpJsonProvider
from .spec import CloudSettings, CloudVariables, ProviderSpec, require_key
from .sse import IncompleteStreamError, iter_sse

log = logging.getLogger(__name__)

LABEL = "anthropic"


def normalize_base_url(url: str) -> str:
    """The API root without ``/v1`` (as the official SDKs take it); a trailing ``/v1`` is
    tolerated so ``https://api.anthropic.com/v1`` works too."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if urlsplit(url).path.endswith("/v1") else url


class AnthropicProvider(HttpJsonProvider):
    """Claude models: ``POST {base_url}/v1/messages``, plain and streamed."""

    def __init__(
        self,
        *,
        api_key: Secret,
        base_url: str = "https://api.anthropic.com",
        default_max_tokens: int = 4096,
        health_timeout_s: float = 5.0,
    ) -> None:
        super().__init__(
            kind=ProviderKind.ANTHROPIC,
            label=LABEL,
            base_url=normalize_base_url(base_url),
            headers={"x-api-key": api_key.reveal(), "anthropic-version": anthropic_wire.ANTHROPIC_VERSION},
            api_key=api_key,
            unreachable=ErrorKind.NETWORK_ERROR,
            connection_lost=ErrorKind.NETWORK_ERROR,
            health_timeout_s=health_timeout_s,
        )
        self._default_max_tokens = default_max_tokens

    def _http_error(self, status: int, body: str, headers: Mapping[str, str], model: str) -> LLMError:
        return anthropic_wire.http_error(status, body, headers, model=model, secrets=self.secrets())

    def _messages(self, call: ModelCall, *, stream: bool) -> tuple[str, dict[str, Any]]:
        return f"{self._base_url}/v1/messages", anthropic_wire.messages_body(call, default_max_tokens=self._default_max_tokens, stream=stream)

    async def generate(self, call: ModelCall) -> Answer:
        payload = await self._post_json(*self._messages(call, stream=False), call)
        if payload.get("type") == "error" and isinstance(payload.get("error"), dict):
            raise anthropic_wire.stream_error(payload["error"], model=call.model, secrets=self.secrets())
        return anthropic_wire.parse_message(payload, call.model)

    async def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        state = anthropic_wire.StreamState(requested_model=call.model)
        try:
            async with self._post(*self._messages(call, stream=True), call) as response:
                await self._raise_for_status(response, call.model)
                async for event in iter_sse(response.content.iter_any()):
                    delta = anthropic_wire.parse_stream_data(event.event, event.data, state, secrets=self.secrets())
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

    async def health(self) -> HealthReport:
        """``GET /v1/models``: checks reachability and the key without spending tokens."""
        return await self._probe(f"{self._base_url}/v1/models", {"limit": "1"})


def _deployment(settings: CloudSettings, name: str) -> AnthropicProvider:
    # Anthropic requires max_tokens on every request: its own default where none is set.
    max_tokens = {} if settings.max_tokens is None else {"default_max_tokens": settings.max_tokens}
    return AnthropicProvider(api_key=require_key(settings, "anthropic"), base_url=settings.base_url, **max_tokens)


SPEC = ProviderSpec(
    kind=ProviderKind.ANTHROPIC,
    names=("anthropic", "claude"),
    deployment_type="anthropic",
    telemetry_name="anthropic",
    model_prefixes=("claude-",),
    variables=CloudVariables(
        api_key=("CLAUDE_API_KEY", "ANTHROPIC_API_KEY"),
        base_url=("CLAUDE_BASE_URL", "ANTHROPIC_BASE_URL"),
        model="CLAUDE_MODEL",
        max_tokens="CLAUDE_MAX_TOKENS",
        file_section="claude",
    ),
    defaults=CloudSettings(base_url="https://api.anthropic.com", model="claude-sonnet-4-6", max_tokens=4096),
    build=_deployment,
)
