"""The provider contract: every backend answers ``generate``, ``stream`` and ``health``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ..domain.types import Completion, ModelCall, ProviderKind, StreamDelta


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
