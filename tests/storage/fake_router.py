"""A stand-in for the router behind ``Generator``: counts calls, answers on cue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import (
    CallMetadata,
    Completion,
    FinishReason,
    GenerationRequest,
    ProviderKind,
    RoutingStrategy,
    StreamDelta,
    Usage,
)

MODEL = "fake-model"
USAGE = Usage(prompt_tokens=12, completion_tokens=6, total_tokens=18)
COST = 0.0042


@dataclass
class _Entry:
    context_window: int


@dataclass
class _Plan:
    candidates: tuple[_Entry, ...]


class FakeRouter:
    def __init__(self, text: str = "Four. It is four.", finish: FinishReason = FinishReason.STOP) -> None:
        self.text = text
        self.finish = finish
        self.calls = 0
        self.delay_s = 0.0
        # Raise this on the next calls (before any text).
        self.error: LLMError | None = None
        # Streams: raise after this many pieces (a cut stream).
        self.cut_after: int | None = None
        self.release = asyncio.Event()
        self.release.set()
        self.windows = (4096,)

    def plan(self, request: GenerationRequest) -> _Plan:
        return _Plan(tuple(_Entry(w) for w in self.windows))

    def _start(self, request: GenerationRequest, metadata: CallMetadata) -> None:
        self.calls += 1
        metadata.model_chain.append(MODEL)
        metadata.candidates = [MODEL]
        metadata.provider = ProviderKind.LOCAL
        metadata.strategy = request.strategy or RoutingStrategy.BALANCED
        metadata.routing_reason = "fake"

    async def generate(self, request: GenerationRequest, deadline: float, metadata: CallMetadata) -> Completion:
        self._start(request, metadata)
        await self.release.wait()
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        metadata.cost_usd = COST
        return Completion(self.text, MODEL, USAGE, self.finish)

    async def stream(self, request: GenerationRequest, deadline: float, metadata: CallMetadata) -> AsyncIterator[StreamDelta]:
        self._start(request, metadata)
        await self.release.wait()
        if self.error is not None:
            raise self.error
        words = self.text.split(" ")
        for index, word in enumerate(words):
            if self.cut_after is not None and index == self.cut_after:
                raise LLMError(ErrorKind.NETWORK_ERROR, "stream cut", metadata={"partial_output": "true"})
            await asyncio.sleep(self.delay_s)
            piece = word if index == 0 else " " + word
            last = index == len(words) - 1
            if last:
                metadata.cost_usd = COST
            yield StreamDelta(piece, MODEL, USAGE if last else None, self.finish if last else None)
