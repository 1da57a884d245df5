"""llm-manager: one async gRPC API over OpenAI GPT, Anthropic Claude and local Llama-family models."""

__version__ = "0.1.0"
