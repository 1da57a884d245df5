"""The provider contract: every backend answers ``generate``, ``stream`` and ``health``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ..domain.types import Completion, FinishReason, ModelCall, ProviderKind, StreamDelta, Usage


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

    async def generate(self, call: ModelCall) -> Completion:
        """A complete answer, or an ``LLMError``."""
        ...

    def stream(self, call: ModelCall) -> AsyncIterator[StreamDelta]:
        """Text deltas as the model produces them; the last carries usage and finish reason.

        Raises ``LLMError`` for failures, including a stream that ends before the model
        said it finished. Cancelling the iteration stops the upstream work.
        """
        ...

    async def health(self) -> HealthReport:
        """A cheap probe of the backend."""
        ...


async def completion_from_stream(deltas: AsyncIterator[StreamDelta], model: str) -> Completion:
    """A complete answer read from a stream. Providers whose engines keep generating a plain
    request after its caller has gone answer ``generate`` this way: closing the stream stops
    the engine at the next token."""
    pieces: list[str] = []
    usage: Usage | None = None
    finish: FinishReason | None = None
    async for delta in deltas:
        pieces.append(delta.text)
        usage = delta.usage or usage
        finish = delta.finish_reason or finish
    return Completion(text="".join(pieces), model=model, usage=usage or Usage(), finish_reason=finish or FinishReason.UNSPECIFIED)
