"""An OpenAI-compatible Chat Completions client on aiohttp.

Serves local servers (LM Studio, llama.cpp server, Ollama ``/v1``, vLLM) and, with an API
key, OpenAI itself. One ``aiohttp.ClientSession`` per provider instance, reused by every
call; each call's timeout is the caller's remaining deadline.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlsplit

import aiohttp

from ..config import Secret
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Completion, FinishReason, ModelCall, ProviderKind, StreamDelta
from . import openai_wire
from .base import HealthReport
from .sse import IncompleteStreamError, iter_sse

log = logging.getLogger(__name__)


def normalize_base_url(url: str) -> str:
    """``http://host:1234`` -> ``http://host:1234/v1``; a URL with a path is kept as is."""
    url = url.rstrip("/")
    return url if urlsplit(url).path not in ("", "/") else url + "/v1"


class OpenAICompatibleProvider:
    """Chat completions over HTTP, plain and streamed (SSE parsed as bytes arrive)."""

    def __init__(
        self,
        *,
        kind: ProviderKind,
        base_url: str,
        api_key: Secret | None = None,
        label: str = "local",
        connect_error_kind: ErrorKind = ErrorKind.MODEL_UNAVAILABLE,
        health_timeout_s: float = 2.0,
    ) -> None:
        self._kind = kind
        self._base_url = normalize_base_url(base_url)
        self._api_key = api_key
        self._label = label
        self._connect_error_kind = connect_error_kind
        self._health_timeout_s = health_timeout_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def kind(self) -> ProviderKind:
        return self._kind

    @property
    def base_url(self) -> str:
        return self._base_url

    async def start(self) -> None:
        if self._session is None:
            headers = {"Authorization": f"Bearer {self._api_key.reveal()}"} if self._api_key else {}
            # No session-wide timeout: every call sets its own from the caller's deadline.
            self._session = aiohttp.ClientSession(
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=None),
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30),
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise LLMError(ErrorKind.CONFIGURATION_ERROR, f"{self._label} provider used before start()")
        return self._session

    def _secrets(self) -> tuple[str, ...]:
        return (self._api_key.reveal(),) if self._api_key else ()

    def _transport_error(self, error: BaseException, model: str) -> LLMError:
        if isinstance(error, asyncio.TimeoutError):
            return LLMError(ErrorKind.TIMEOUT, f"{self._label} model {model!r} did not answer in time", model=model)
        if isinstance(error, aiohttp.ClientConnectorError):
            return LLMError(
                self._connect_error_kind,
                f"{self._label} model {model!r} is unreachable at {self._base_url}: {error.strerror or 'connection failed'}",
                model=model,
            )
        return LLMError(
            ErrorKind.NETWORK_ERROR if self._kind is not ProviderKind.LOCAL else ErrorKind.MODEL_UNAVAILABLE,
            f"{self._label} model {model!r}: connection lost ({type(error).__name__})",
            model=model,
        )

    async def _raise_for_status(self, response: aiohttp.ClientResponse, model: str) -> None:
        if response.status < 400:
            return
        body = await response.text(errors="replace")
        raise openai_wire.http_error(
            response.status, body, response.headers, model=model, provider_label=self._label, secrets=self._secrets()
        )

    async def generate(self, call: ModelCall) -> Completion:
        body = openai_wire.chat_body(call, stream=False)
        try:
            async with self._client().post(
                f"{self._base_url}/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=call.timeout_s)
            ) as response:
                await self._raise_for_status(response, call.model)
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._transport_error(error, call.model) from None
        except ValueError:
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{self._label} model {call.model!r} sent a reply that is not JSON", model=call.model) from None
        if not isinstance(payload, dict):
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{self._label} model {call.model!r} sent an unexpected reply", model=call.model)
        completion = openai_wire.parse_completion(payload, call.model)
        # Local servers report file paths or aliases; callers know the model by our name.
        return replace(completion, model=call.model) if self._kind is ProviderKind.LOCAL else completion

    async def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        body = openai_wire.chat_body(call, stream=True)
        finished = False
        try:
            async with self._client().post(
                f"{self._base_url}/chat/completions", json=body, timeout=aiohttp.ClientTimeout(total=call.timeout_s)
            ) as response:
                await self._raise_for_status(response, call.model)
                finish: FinishReason | None = None
                async for event in iter_sse(response.content.iter_any()):
                    if event.data.strip() == "[DONE]":
                        finished = True
                        break
                    try:
                        chunk = json.loads(event.data)
                    except ValueError:
                        raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{self._label} model {call.model!r} sent a malformed stream event", model=call.model) from None
                    if not isinstance(chunk, dict):
                        continue
                    delta = openai_wire.parse_chunk(chunk)
                    finish = delta.finish_reason or finish
                    if self._kind is ProviderKind.LOCAL:
                        delta = replace(delta, model=call.model)
                    if delta.text or delta.usage or delta.finish_reason:
                        yield delta
                if not finished and finish is None:
                    raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{self._label} model {call.model!r} ended its stream before finishing", model=call.model)
        except IncompleteStreamError:
            raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"{self._label} model {call.model!r} ended its stream mid-event", model=call.model) from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._transport_error(error, call.model) from None

    async def health(self) -> HealthReport:
        try:
            async with self._client().get(
                f"{self._base_url}/models", timeout=aiohttp.ClientTimeout(total=self._health_timeout_s)
            ) as response:
                if response.status < 400:
                    return HealthReport(healthy=True)
                return HealthReport(healthy=False, detail=f"GET /models returned HTTP {response.status}")
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            return HealthReport(healthy=False, detail=str(self._transport_error(error, "health probe")))
