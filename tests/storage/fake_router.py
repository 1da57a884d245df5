"""A stand-in for the router behind ``Generator``: counts calls, answers on cue."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from llm_manager_server.domain.errors import ErrorKind, LLMError
from llm_manager_server.domain.types import (
    Answer,
    CallMetadata,
    FinishReason,
    GenerationRequest,
    ProviderKind,
    RoutingStrategy,
    StreamDelta,
    ToolCall,
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
    def __init__(self, text: str = "Four. It is four.", finish: FinishReason = FinishReason.STOP, tool_calls: tuple[ToolCall, ...] = ()) -> None:
        self.text = text
        self.finish = finish
        # Sent after the text, in one delta (as a provider sends each call once complete).
        self.tool_calls = tool_calls
        self.calls = 0
        self.delay_s = 0.0
        # Raise this on the next calls (before any text).
        self.error: LLMError | None = None
        # Streams: raise after this many pieces (a cut stream).
        self.cut_after: int | None = None
        self.release = asyncio.Event()
        self.release.set()
        self.windows: tuple[int, ...] = (4096,)

    def plan(self, request: GenerationRequest) -> _Plan:
        return _Plan(tuple(_Entry(w) for w in self.windows))

    def _start(self, request: GenerationRequest) -> CallMetadata:
        self.calls += 1
        return CallMetadata(
            model_chain=[MODEL],
            candidates=[MODEL],
            provider=ProviderKind.LOCAL,
            strategy=request.strategy or RoutingStrategy.BALANCED,
            routing_reason="fake",
        )

    def _answer(self, metadata: CallMetadata) -> Answer:
        return Answer(self.text, MODEL, USAGE, self.finish, tool_calls=self.tool_calls, cost_usd=COST, metadata=metadata)

    async def generate(self, request: GenerationRequest, deadline: float) -> Answer:
        metadata = self._start(request)
        await self.release.wait()
        await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return self._answer(metadata)

    async def stream(self, request: GenerationRequest, deadline: float) -> AsyncIterator[StreamDelta]:
        metadata = self._start(request)
        await self.release.wait()
        if self.error is not None:
            raise self.error
        words = self.text.split(" ")
        for index, word in enumerate(words):
            if self.cut_after is not None and index == self.cut_after:
                raise LLMError(ErrorKind.NETWORK_ERROR, "stream cut", metadata={"partial_output": "true"})
            await asyncio.sleep(self.delay_s)
            piece = word if index == 0 else " " + word
            yield StreamDelta(piece, MODEL)
        if self.tool_calls:
            yield StreamDelta(model=MODEL, tool_calls=self.tool_calls)
        yield StreamDelta(model=MODEL, answer=self._answer(metadata))
