"""Keeps secrets out of anything a caller, a log or a span can see.

Every secret the service holds (API keys, passwords in store URLs) is registered here when the
configuration is read (``Secret`` does it itself). Every sink applies :func:`redact`: the gRPC
status built from an error (message, every detail field), the log formatter (whole lines), and
the providers' error mapping, which redacts each upstream-derived string *before* cutting it to
length (:func:`redact_and_cut`), so a secret split by the cut cannot leak its first part.
Anything merely shaped like a provider key (``sk-...``, a bearer token) is redacted as well.
"""

from __future__ import annotations

import re

# OpenAI (sk-..., sk-proj-...) and Anthropic (sk-ant-...) keys, also partly masked ones
# such as "sk-abc***xyz" that OpenAI echoes in its 401 message.
_KEY_PATTERN = re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-*]{3,}")
# This service's own API keys (``keys.KEY_PREFIX``), should one ever reach a message.
_OWN_KEY_PATTERN = re.compile(r"llmm_[A-Za-z0-9_\-]{8,}")
_BEARER_PATTERN = re.compile(r"(?i)(bearer\s+|x-api-key[\"':=\s]+)[^\s\"',;]+")

# A cheap first look for the bearer pattern (a plain scan, no backtracking groups).
_MAYBE_BEARER = re.compile(r"(?i)bearer|x-api-key")

REDACTED = "[redacted]"

# Shorter values are not registered: redacting every "abc" in every line would hide more than
# it protects, and no real key or password worth the name is that short.
MIN_SECRET_LENGTH = 6

_known: set[str] = set()
# Longest first, so a secret that contains another is replaced whole.
_ordered: tuple[str, ...] = ()


def register_secret(value: str) -> None:
    """Adds ``value`` to the secrets every :func:`redact` call replaces."""
    global _ordered
    if len(value) >= MIN_SECRET_LENGTH and value not in _known:
        _known.add(value)
        _ordered = tuple(sorted(_known, key=len, reverse=True))


def redact(text: str, *secrets: str) -> str:
    """``text`` with every registered secret, every given one and anything shaped like an
    API key replaced by ``[redacted]``."""
    for secret in (*secrets, *_ordered):
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    if "k-" in text:  # the key patterns below all contain it: most text skips the regex
        text = _KEY_PATTERN.sub(REDACTED, text)
    if "llmm_" in text:
        text = _OWN_KEY_PATTERN.sub(REDACTED, text)
    if _MAYBE_BEARER.search(text) is not None:
        text = _BEARER_PATTERN.sub(lambda match: match.group(1) + REDACTED, text)
    return text


def redact_and_cut(text: object, limit: int, *secrets: str) -> str:
    """An upstream-derived value as it may be shown: redacted first, then cut to ``limit``
    characters (cutting first could split a secret so that no redaction matches it)."""
    return redact(str(text).strip(), *secrets)[:limit]
