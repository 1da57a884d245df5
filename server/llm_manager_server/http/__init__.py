"""The OpenAI-compatible HTTP API: routes and middleware (``app``), Chat Completions JSON <->
domain (``chat``), domain errors as OpenAI's error JSON (``errors``)."""

from .app import HttpApi

__all__ = ["HttpApi"]
