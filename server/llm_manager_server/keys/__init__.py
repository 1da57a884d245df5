"""API keys: the keys file (``LLM_API_KEYS_FILE``) and the lookup of a presented key.

The file holds, per key, only the sha256 of the key (never the key) and the caller it names,
with its limits and allowed models (the contract's "Callers" shape)::

    keys:
      - caller: billing-service
        key_sha256: 3f7a...64 hex digits
        requests_per_minute: 120       # optional (enforced by the limits, not here)
        tokens_per_minute: 200000      # optional
        budget_usd_per_day: 25.0       # optional
        models: [gpt-4o-mini, claude-sonnet-4-6]   # optional: any model when left out

A caller may have several entries (several keys: rotate a key by adding the new one, moving
the peer over, then removing the old one); its entries must then agree on limits and models.
Anything else (a plaintext key, a value that is not a sha256, a duplicate key, an unknown
field) stops start-up with one line naming the entry and field, never echoing a value that
could be a key. ``python -m llm_manager_server.keys new --caller NAME`` makes a key and its entry.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..domain.caller import Caller
from ..domain.types import MODEL_NAME_RULE, is_valid_model_name

VARIABLE = "LLM_API_KEYS_FILE"
# New keys: a recognisable prefix (secret scanners and the redaction of logs look for it) and
# 32 random bytes, url-safe base64.
KEY_PREFIX = "llmm_"
# Callers' names go on spans, log lines, cache keys and the usage ledger: a plain token.
CALLER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,63}")
CALLER_NAME_RULE = "must be 1-64 letters, digits or . _ @ : - (starting with a letter or digit)"
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_FIELDS = frozenset({"caller", "key_sha256", "requests_per_minute", "tokens_per_minute", "budget_usd_per_day", "models"})
# Fields that would hold the key itself: refused by name, so the message can say why.
_PLAINTEXT_FIELDS = frozenset({"key", "api_key", "apikey", "secret", "token", "value", "key_plaintext"})


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_digest(key: str) -> bytes:
    """The sha256 of a key, as the keys file stores it (in hex)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyRing:
    """The callers of a keys file, by the sha256 of their keys.

    ``caller_for`` hashes the presented key and looks the digest up. The dict lookup's timing
    depends only on that digest, which tells an attacker nothing about any key (sha256 is
    preimage resistant); the final comparison is ``hmac.compare_digest``, constant time."""

    __slots__ = ("_by_digest", "callers")

    def __init__(self, entries: Mapping[bytes, Caller]) -> None:
        self._by_digest: dict[bytes, tuple[bytes, Caller]] = {digest: (digest, caller) for digest, caller in entries.items()}
        # name -> caller, one per caller (a caller with two keys is one caller).
        self.callers: dict[str, Caller] = {caller.name: caller for caller in entries.values()}

    def caller_for(self, key: str) -> Caller | None:
        digest = key_digest(key)
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            return None
        return found[1]

    def __len__(self) -> int:
        return len(self._by_digest)

    def __repr__(self) -> str:  # names only: never a digest
        return f"KeyRing({len(self._by_digest)} keys of {', '.join(sorted(self.callers))})"


def _read(path: str) -> object:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(VARIABLE, f"cannot read {path!r}: {error.strerror}") from None
    try:
        if path.endswith(".json"):
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as error:  # noqa: BLE001 - any parse error is a config error
        # The parser's message can quote the offending line, which may hold a key: only its
        # position is shown.
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else f"line {getattr(error, 'lineno', '?')}"
        raise ConfigError(VARIABLE, f"cannot parse {path!r} ({where}): not valid {'JSON' if path.endswith('.json') else 'YAML'}") from None


def _limit(where: str, raw: object, *, number: bool = False) -> int | float:
    kind = (int, float) if number else (int,)
    if isinstance(raw, bool) or not isinstance(raw, kind) or raw < 0 or (not number and raw < 1):
        rule = "a non-negative number of dollars" if number else "a positive integer"
        raise ConfigError(where, f"must be {rule}, got {str(raw)[:40]!r}")
    return float(raw) if number else int(raw)


def _caller(where: str, entry: Mapping[Any, Any]) -> tuple[bytes, Caller]:
    fields = {str(name) for name in entry}
    plaintext = sorted(fields & _PLAINTEXT_FIELDS)
    if plaintext:
        raise ConfigError(f"{where}.{plaintext[0]}", f"holds a plaintext key: store only key_sha256 (python -m llm_manager_server.keys new --caller NAME prints it)")
    unknown = sorted(fields - _FIELDS)
    if unknown:
        raise ConfigError(where, f"unknown field(s) {', '.join(name[:40] for name in unknown)} (use {', '.join(sorted(_FIELDS))})")
    name = entry.get("caller")
    if not isinstance(name, str) or not CALLER_NAME.fullmatch(name):
        raise ConfigError(f"{where}.caller", CALLER_NAME_RULE)
    digest = entry.get("key_sha256")
    if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
        # Never echoed: a value that is not a sha256 may well be the key itself.
        raise ConfigError(f"{where}.key_sha256", "must be the sha256 of the key as 64 hex digits (a plaintext key is never stored here)")
    models: frozenset[str] | None = None
    if "models" in entry:
        listed = entry["models"]
        if not isinstance(listed, list) or not listed:
            raise ConfigError(f"{where}.models", "must list at least one model name (leave it out for any model)")
        for model in listed:
            if not isinstance(model, str) or not is_valid_model_name(model):
                raise ConfigError(f"{where}.models", f"{MODEL_NAME_RULE}, got {str(model)[:80]!r}")
        models = frozenset(listed)
    limits: dict[str, Any] = {}
    for field_name in ("requests_per_minute", "tokens_per_minute"):
        if entry.get(field_name) is not None:
            limits[field_name] = _limit(f"{where}.{field_name}", entry[field_name])
    if entry.get("budget_usd_per_day") is not None:
        limits["budget_usd_per_day"] = _limit(f"{where}.budget_usd_per_day", entry["budget_usd_per_day"], number=True)
    return bytes.fromhex(digest), Caller(name=name, models=models, **limits)


def parse_keys(data: object, source: str = VARIABLE) -> KeyRing:
    """The key ring of a parsed keys file; raises :class:`ConfigError` naming the bad entry."""
    if not isinstance(data, dict) or set(map(str, data)) != {"keys"}:
        raise ConfigError(source, "must hold one mapping with a 'keys' list: keys: [{caller, key_sha256, ...}]")
    listed = data["keys"]
    if not isinstance(listed, list) or not listed:
        raise ConfigError(f"{source} keys", "must list at least one key (unset LLM_API_KEYS_FILE to turn authentication off)")
    entries: dict[bytes, Caller] = {}
    by_name: dict[str, Caller] = {}
    for index, entry in enumerate(listed):
        where = f"{source} keys[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(where, "must be a mapping with caller and key_sha256")
        digest, caller = _caller(where, entry)
        if digest in entries:
            raise ConfigError(f"{where}.key_sha256", f"is the same key as an earlier entry's (of caller {entries[digest].name!r}); each key is listed once")
        earlier = by_name.setdefault(caller.name, caller)
        if earlier != caller:
            raise ConfigError(where, f"caller {caller.name!r} is listed again with other limits or models (a caller's keys share them)")
        entries[digest] = caller
    return KeyRing(entries)


def load_keys_file(path: str) -> KeyRing:
    return parse_keys(_read(path))


__all__ = ["CALLER_NAME", "KEY_PREFIX", "VARIABLE", "KeyRing", "key_digest", "load_keys_file", "new_key", "parse_keys"]
