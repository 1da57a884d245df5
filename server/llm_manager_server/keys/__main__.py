"""``python -m llm_manager_server.keys new --caller NAME [--models a,b] [limits]``: makes a new
API key, prints it once (it is stored nowhere) and the keys-file entry for it (its sha256).

The key goes to the peer that will call with it; the entry goes into ``LLM_API_KEYS_FILE``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from ..config import ConfigError
from . import CALLER_NAME, key_digest, new_key, parse_keys


def _entry(arguments: argparse.Namespace, key: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"caller": arguments.caller, "key_sha256": key_digest(key).hex()}
    for field in ("requests_per_minute", "tokens_per_minute", "budget_usd_per_day"):
        if getattr(arguments, field) is not None:
            entry[field] = getattr(arguments, field)
    if arguments.models is not None:
        entry["models"] = [model.strip() for model in arguments.models.split(",") if model.strip()]
    return entry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llm_manager_server.keys", description="API keys for LLM_API_KEYS_FILE.")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="make a new key: prints the key once and its keys-file entry")
    new.add_argument("--caller", required=True, help="the caller's name (on spans, logs, usage)")
    new.add_argument("--models", help="comma-separated models the key may use (default: any)")
    new.add_argument("--requests-per-minute", type=int, dest="requests_per_minute")
    new.add_argument("--tokens-per-minute", type=int, dest="tokens_per_minute")
    new.add_argument("--budget-usd-per-day", type=float, dest="budget_usd_per_day")
    arguments = parser.parse_args(argv)
    if not CALLER_NAME.fullmatch(arguments.caller):
        parser.error("--caller must be 1-64 letters, digits or . _ @ : - (starting with a letter or digit)")
    key = new_key()
    entry = _entry(arguments, key)
    try:  # the same checks as the server's start-up, so the entry printed is one it accepts
        parse_keys({"keys": [entry]}, source="the new entry")
    except ConfigError as error:
        parser.error(str(error))
    print(f"# API key for {arguments.caller} (shown once; give it to the caller, store it nowhere else):", file=sys.stderr)
    print(key)
    print("# Its entry for LLM_API_KEYS_FILE (under keys:):", file=sys.stderr)
    print(yaml.safe_dump([entry], sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
