"""Keys files for tests: real keys made the way the CLI makes them, only their sha256 written."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llm_manager_server.keys import key_digest, new_key


def write_keys_file(path: Path, callers: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Writes a keys file with one new key per caller (``callers``: name -> extra fields, e.g.
    ``{"models": [...]}``) and returns name -> key."""
    keys = {name: new_key() for name in callers}
    entries = [{"caller": name, "key_sha256": key_digest(keys[name]).hex(), **fields} for name, fields in callers.items()]
    path.write_text(json.dumps({"keys": entries}) if path.suffix == ".json" else _yaml(entries), encoding="utf-8")
    return keys


def _yaml(entries: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump({"keys": entries}, sort_keys=False)
