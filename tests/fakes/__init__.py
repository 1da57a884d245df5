"""Wire-faithful fake LLM APIs on loopback, for tests that must never reach the internet."""

from .anthropic_fake import FakeAnthropic
from .http_fake import CapturedRequest, TokenCounts
from .openai_fake import FakeOpenAI

__all__ = ["CapturedRequest", "FakeAnthropic", "FakeOpenAI", "TokenCounts"]
