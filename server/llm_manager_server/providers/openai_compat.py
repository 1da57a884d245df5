"""An OpenAI-compatible Chat Completions client on aiohttp.

Serves local servers (LM Studio, llama.cpp server, Ollama ``/v1``, vLLM) and, with an API
key, OpenAI itself. One ``aiohttp.ClientSession`` per provider instance, reused by every
call; each call's timeout is the caller's remaining deadline.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from ..secret import Secret
from ..domain.embeddings import EmbeddingCall, Embeddings
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Answer, ModelCall, ProviderKind, SamplingOptions, StreamDelta
from . import embeddings_wire, openai_wire
from .base import HealthReport
from .http import HttpJsonProvider
from .spec import CloudSettings, CloudVariables, ProviderSpec, require_key
from .sse import IncompleteStreamError, SSEDecoder, SSEEvent, iter_sse

log = logging.getLogger(__name__)


def normalize_base_url(url: str) -> str:
    """``http://host:1234`` -> ``http://host:1234/v1``; a URL with a path is kept as is."""
    url = url.rstrip("/")
    return url if urlsplit(url).path not in ("", "/") else url + "/v1"


def with_defaults(sampling: SamplingOptions, *, max_tokens: int | None, temperature: float | None) -> SamplingOptions:
    """The caller's sampling options, with the configured defaults where the caller gave none."""
    return replace(
        sampling,
        max_tokens=sampling.max_tokens if sampling.max_tokens is not None else max_tokens,
        temperature=sampling.temperature if sampling.temperature is not None else temperature,
    )


class OpenAICompatibleProvider(HttpJsonProvider):
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
        default_max_tokens: int | None = None,
        default_temperature: float | None = None,
    ) -> None:
        # A local server that drops the connection is as good as down; a cloud API doing it
        # is a network failure worth a retry.
        super().__init__(
            kind=kind,
            label=label,
            base_url=normalize_base_url(base_url),
            headers={"Authorization": f"Bearer {api_key.reveal()}"} if api_key else {},
            api_key=api_key,
            unreachable=connect_error_kind,
            connection_lost=ErrorKind.MODEL_UNAVAILABLE if kind is ProviderKind.LOCAL else ErrorKind.NETWORK_ERROR,
            health_timeout_s=health_timeout_s,
        )
        self._default_max_tokens = default_max_tokens
        self._default_temperature = default_temperature

    def _body(self, call: ModelCall, *, stream: bool) -> dict[str, Any]:
        sampling = with_defaults(call.sampling, max_tokens=self._default_max_tokens, temperature=self._default_temperature)
        return openai_wire.chat_body(replace(call, sampling=sampling), stream=stream)

    def _http_error(self, status: int, body: str, headers: Mapping[str, str], model: str) -> LLMError:
        return openai_wire.http_error(status, body, headers, model=model, provider_label=self._label, secrets=self.secrets())

    def _chat_url(self) -> str:
        return f"{self._base_url}/chat/completions"

    async def generate(self, call: ModelCall) -> Answer:
        if self._kind is ProviderKind.LOCAL:
            return await self._generate_streamed(call)
        payload = await self._post_json(self._chat_url(), self._body(call, stream=False), call)
        if isinstance(payload.get("error"), Mapping):  # some proxies answer 200 with an error object
            raise openai_wire.stream_error(payload["error"], model=call.model, provider_label=self._label, secrets=self.secrets())
        return openai_wire.parse_completion(payload, call.model)

    async def _generate_streamed(self, call: ModelCall) -> Answer:
        """A complete answer from a local server, asked for as a stream: llama.cpp notices
        a closed plain request only about a second later, a closed stream at the next token,
        so a cancelled call frees the model's slot at once. The body is read whole and then
        decoded in one pass: no per-chunk iteration, since nobody is waiting for pieces."""
        body = self._body(call, stream=True)
        try:
            async with self._post(self._chat_url(), body, call) as response:
                await self._raise_for_status(response, call.model)
                raw = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._upstream.transport_error(error, call.model) from None
        decoder = SSEDecoder()
        reading = _ChunkStream(self, call)
        for event in decoder.feed(raw):
            reading.take(event)
            if reading.done:
                break
        if not reading.done and decoder.has_partial_event:
            raise self._cut_stream_error(call.model, "mid-event")
        return reading.answer()

    async def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        """Text as it arrives and each tool call once complete, then one final delta with the
        whole answer (OpenAI sends the finish chunk before the usage chunk; the answer has both)."""
        body = self._body(call, stream=True)
        reading = _ChunkStream(self, call)
        try:
            async with self._post(self._chat_url(), body, call) as response:
                await self._raise_for_status(response, call.model)
                async for event in iter_sse(response.content.iter_any()):
                    delta = reading.take(event)
                    if reading.done:
                        break
                    if delta is not None:
                        yield delta
        except IncompleteStreamError:
            raise self._cut_stream_error(call.model, "mid-event") from None
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._upstream.transport_error(error, call.model) from None
        answer = reading.answer()
        yield StreamDelta(model=answer.model, answer=answer)

    async def embed(self, call: EmbeddingCall) -> Embeddings:
        """``POST /embeddings``: one vector per input, in order; OpenAI sends them as base64,
        local servers as floats. A large reply is decoded on a thread. (A llama.cpp server
        started without embeddings answers 501: CONFIGURATION_ERROR, with its own message.)"""
        local = self._kind is ProviderKind.LOCAL
        body = embeddings_wire.embeddings_body(call, base64_vectors=not local)
        try:
            async with self._post(f"{self._base_url}/embeddings", body, call) as response:
                await self._raise_for_status(response, call.model)
                raw = await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            raise self._upstream.transport_error(error, call.model) from None
        decode = functools.partial(
            embeddings_wire.decode_reply, raw, call, model=call.model if local else None, provider_label=self._label, secrets=self.secrets()
        )
        return decode() if len(raw) < embeddings_wire.DECODE_IN_THREAD_BYTES else await asyncio.to_thread(decode)

    async def health(self) -> HealthReport:
        return await self._probe(f"{self._base_url}/models")

    async def list_models(self) -> list[str]:
        """The ids ``GET /models`` lists (what LM Studio, Ollama, vLLM and llama.cpp serve);
        empty when the endpoint does not answer."""
        try:
            async with self._upstream.client.get(
                f"{self._base_url}/models", timeout=aiohttp.ClientTimeout(total=self._health_timeout_s)
            ) as response:
                if response.status >= 400:
                    return []
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return []
        data = payload.get("data") if isinstance(payload, dict) else None
        return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")] if isinstance(data, list) else []


class _ChunkStream:
    """One call's SSE events: ``chat.completion.chunk`` objects folded by
    :class:`openai_wire.ChunkFold`, and whether ``[DONE]`` came."""

    def __init__(self, provider: OpenAICompatibleProvider, call: ModelCall) -> None:
        self._provider = provider
        self._call = call
        # Local servers name their model after a file; callers know it by its configured name.
        self._fold = openai_wire.ChunkFold(
            call.model,
            model=call.model if provider.kind is ProviderKind.LOCAL else None,
            provider_label=provider.label,
            secrets=provider.secrets(),
        )
        self.done = False

    def take(self, event: SSEEvent) -> StreamDelta | None:
        """The event's news; None for ``[DONE]`` (then ``done``) and for events without any."""
        data = event.data
        if data == "[DONE]" or data.strip() == "[DONE]":
            self.done = True
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            raise LLMError(
                ErrorKind.MODEL_UNAVAILABLE, f"{self._provider.label} model {self._call.model!r} sent a malformed stream event", model=self._call.model
            ) from None
        if not isinstance(chunk, dict):
            return None
        if event.event == "error" and not isinstance(chunk.get("error"), dict):
            chunk = {"error": chunk}
        return self._fold.take(chunk)

    def answer(self) -> Answer:
        """The whole answer; a stream that ended before ``[DONE]`` and without a finish
        reason was cut."""
        if not self.done and self._fold.finish is None:
            raise self._provider._cut_stream_error(self._call.model, "before the model finished")
        return self._fold.answer()


def _openai_deployment(settings: CloudSettings, name: str) -> OpenAICompatibleProvider:
    return OpenAICompatibleProvider(
        kind=ProviderKind.OPENAI,
        base_url=settings.base_url,
        api_key=require_key(settings, "openai"),
        label=name,
        connect_error_kind=ErrorKind.NETWORK_ERROR,
        # OPENAI_MAX_TOKENS / OPENAI_TEMPERATURE apply where the caller gives none.
        default_max_tokens=settings.max_tokens,
        default_temperature=settings.temperature,
    )


# OpenAI's API (and Azure OpenAI's v1 API through OPENAI_BASE_URL).
OPENAI = ProviderSpec(
    kind=ProviderKind.OPENAI,
    names=("openai", "gpt"),
    deployment_type="openai",
    telemetry_name="openai",
    model_prefixes=("gpt-", "o1", "o3", "o4", "text-embedding-"),
    variables=CloudVariables(
        api_key=("OPENAI_API_KEY",),
        base_url=("OPENAI_BASE_URL",),
        model="OPENAI_MODEL",
        max_tokens="OPENAI_MAX_TOKENS",
        temperature="OPENAI_TEMPERATURE",
        file_section="gpt",
    ),
    defaults=CloudSettings(base_url="https://api.openai.com/v1", model="gpt-4o-mini", max_tokens=4096, temperature=0.7),
    build=_openai_deployment,
)
