"""Google's Gemini API (Generative Language API) on aiohttp.

One ``aiohttp.ClientSession`` per provider, reused by every call; the key travels in
``x-goog-api-key`` (never in a URL, message, log or repr); each call's timeout is the
caller's remaining deadline; streams (``streamGenerateContent?alt=sse``) are decoded as bytes
arrive. The wire mapping is in :mod:`.gemini_wire`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..secret import Secret
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Answer, ModelCall, ProviderKind, StreamDelta
from ..redaction import redact, redact_and_cut
from . import gemini_wire
from .base import HealthReport
from .http import HttpJsonProvider
from .spec import CloudSettings, CloudVariables, ProviderSpec, require_key
from .upstream_errors import MAX_UPSTREAM_FIELD, error_object
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


class GeminiProvider(HttpJsonProvider):
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
        super().__init__(
            kind=ProviderKind.GEMINI,
            label=LABEL,
            base_url=normalize_base_url(base_url),
            headers={"x-goog-api-key": api_key.reveal()},
            api_key=api_key,
            unreachable=ErrorKind.NETWORK_ERROR,
            connection_lost=ErrorKind.NETWORK_ERROR,
            health_timeout_s=health_timeout_s,
        )
        self._default_max_tokens = default_max_tokens

    def _http_error(self, status: int, body: str, headers: Mapping[str, str], model: str) -> LLMError:
        return gemini_wire.http_error(status, body, headers, model=model, secrets=self.secrets())

    def _request(self, call: ModelCall, *, stream: bool) -> tuple[str, dict[str, Any]]:
        body = gemini_wire.generate_content_body(call, default_max_tokens=self._default_max_tokens)
        return gemini_wire.generate_url(self._base_url, call.model, stream=stream), body

    async def generate(self, call: ModelCall) -> Answer:
        payload = await self._post_json(*self._request(call, stream=False), call)
        return gemini_wire.parse_response(payload, call.model, secrets=self.secrets())

    async def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        state = gemini_wire.StreamState(requested_model=call.model)
        try:
            async with self._post(*self._request(call, stream=True), call) as response:
                await self._raise_for_status(response, call.model)
                async for event in iter_sse(response.content.iter_any()):
                    delta = gemini_wire.parse_stream_data(event.data, state, secrets=self.secrets())
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

    async def health(self) -> HealthReport:
        """``GET /v1beta/models?pageSize=1``: checks reachability and the key without spending
        tokens."""
        return await self._probe(f"{self._base_url}/{gemini_wire.API_VERSION}/models", {"pageSize": "1"})

    async def _probe_failure(self, url: str, response: aiohttp.ClientResponse) -> str:
        """The status and Google's reason (``API_KEY_INVALID``, ...), which says what to fix."""
        error, _ = error_object(await self._upstream.error_body(response))
        reason = gemini_wire.error_reason(error) or error.get("status")
        why = f" ({redact_and_cut(reason, MAX_UPSTREAM_FIELD, *self.secrets())})" if isinstance(reason, str) and reason else ""
        return redact(f"GET {url} returned HTTP {response.status}{why}", *self.secrets())


def _deployment(settings: CloudSettings, name: str) -> GeminiProvider:
    return GeminiProvider(api_key=require_key(settings, "gemini"), base_url=settings.base_url, default_max_tokens=settings.max_tokens)


SPEC = ProviderSpec(
    kind=ProviderKind.GEMINI,
    names=("gemini", "google"),
    deployment_type="gemini",
    telemetry_name="gcp.gemini",
    model_prefixes=("gemini-",),
    variables=CloudVariables(
        api_key=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        base_url=("GEMINI_BASE_URL",),
        model="GEMINI_MODEL",
        max_tokens="GEMINI_MAX_TOKENS",
        file_section="gemini",
    ),
    defaults=CloudSettings(base_url=DEFAULT_BASE_URL, model="gemini-2.5-flash"),
    build=_deployment,
)
