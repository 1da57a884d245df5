"""The provider contract: every backend answers ``generate``, ``stream`` and ``health``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Protocol

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


async def answer_from_stream(deltas: AsyncIterator[StreamDelta], model: str) -> Answer:
    """The complete answer a stream ends with. Providers whose engines keep generating a
    plain request after its caller has gone answer ``generate`` this way: closing the stream
    stops the engine at the next token."""
    async with aclosing(deltas):  # type: ignore[type-var]  # closed at once: an engine stops at the next token
        async for delta in deltas:
            if delta.answer is not None:
                return delta.answer
    raise LLMError(ErrorKind.MODEL_UNAVAILABLE, f"model {model!r} ended its stream without an answer", model=model)
