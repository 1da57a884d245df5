"""The provider contract: every backend answers ``generate``, ``stream`` and ``health``; those
that make embeddings also ``embed`` (:class:`EmbeddingProvider`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from ..domain.embeddings import EmbeddingCall, Embeddings
from ..domain.errors import ErrorKind, LLMError
from ..domain.types import Answer, ModelCall, ProviderKind, StreamDelta


@dataclass(frozen=True)
class HealthReport:
    healthy: bool
    detail: str = ""
    # False while a model is still loading: reported NOT_SERVING / NOT_READY.
    ready: bool = True


class Provider(Protocol):
    """One backend (a cloud API, an OpenAI-compatible server, an in-process engine)."""

    @property
    def kind(self) -> ProviderKind: ...

    async def start(self) -> None:
        """Opens connection pools or loads the model; called once before serving."""

    async def close(self) -> None:
        """Releases what ``start`` acquired."""

    async def generate(self, call: ModelCall) -> Answer:
        """A complete answer, or an ``LLMError``."""
        ...

    def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        """Text as the model produces it and each tool call once complete; the last delta
        carries the complete :class:`Answer` (text, tool calls, usage, finish reason).

        Raises ``LLMError`` for failures, including a stream that ends before the model
        said it finished. Cancelling the iteration stops the upstream work.
        """
        ...

    async def health(self) -> HealthReport:
        """A cheap probe of the backend."""
        ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """A backend with an embeddings API (OpenAI-compatible servers, the in-process engine;
    Anthropic has none)."""

    async def embed(self, call: EmbeddingCall) -> Embeddings:
        """One vector per input of ``call``, in order, with the provider's usage; or an ``LLMError``."""
        ...


async def embed_with(provider: object, call: EmbeddingCall) -> Embeddings:
    """``provider``'s embeddings of ``call``; CONFIGURATION_ERROR when the backend has no
    embeddings API (the model's capabilities should have ruled it out before)."""
    if not isinstance(provider, EmbeddingProvider):
        kind = getattr(provider, "kind", None)
        name = kind.value if kind is not None else type(provider).__name__
        raise LLMError(ErrorKind.CONFIGURATION_ERROR, f"the {name} provider has no embeddings API (model {call.model!r})", model=call.model)
    return await provider.embed(call)


async def answer_from_stream(deltas: AsyncIterator[StreamDelta], model: str) -> Answer:
    """The complete answer a stream ends with. Providers whose engines keep generating a
    plain request after its caller has gone answer ``generate`` this way: closing the stream
    stops the engine at the next token."""
    async with aclosing(deltas):  # type: ignore[type-var]  # closed at once: an engine stops at the next token
        async for delta in deltas:
            if delta.answer is not None:
                return delta.answer
    raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"model {model!r} ended its stream without an answer", model=model)
