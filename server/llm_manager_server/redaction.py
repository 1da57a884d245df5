"""Keeps API keys out of anything a caller, a log or a span can see."""

from __future__ import annotations

import re

# OpenAI (sk-..., sk-proj-...) and Anthropic (sk-ant-...) keys, also partly masked ones
# such as "sk-abc***xyz" that OpenAI echoes in its 401 message.
_KEY_PATTERN = re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-*]{3,}")
_BEARER_PATTERN = re.compile(r"(?i)(bearer\s+|x-api-key[\"':=\s]+)[^\s\"',;]+")

REDACTED = "[redacted]"


def redact(text: str, *secrets: str) -> str:
    """``text`` with every given secret and anything shaped like an API key replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    text = _KEY_PATTERN.sub(REDACTED, text)
    return _BEARER_PATTERN.sub(lambda match: match.group(1) + REDACTED, text)
