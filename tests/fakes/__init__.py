"""Wire-faithful fake LLM APIs on loopback, for tests that must never reach the internet."""

from .anthropic_fake import FakeAnthropic, ToolUseSpec
from .gemini_fake import FakeGemini, FunctionCallSpec, GeminiRequest
from .http_fake import CapturedRequest, Ending, RetryHint, TokenCounts
from .openai_fake import FakeOpenAI, ToolCallSpec

__all__ = [
    "CapturedRequest",
    "Ending",
    "FakeAnthropic",
    "FakeGemini",
    "FakeOpenAI",
    "FunctionCallSpec",
    "GeminiRequest",
    "RetryHint",
    "TokenCounts",
    "ToolCallSpec",
    "ToolUseSpec",
]
