"""JSON Schema checks with ``jsonschema`` (Draft 2020-12): the callers' tool and response
schemas, and the models' tool arguments and structured output against them.

Validators are compiled once per distinct schema, and a caller's schema is checked once (LRUs
keyed by the schema's canonical JSON), so a schema sent with every request is not re-analysed
on every call.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from .types import JsonObject

# Nesting depth and size a caller's schema may have: far beyond real tool schemas, well short
# of what could make validation itself expensive.
MAX_SCHEMA_DEPTH = 32
MAX_SCHEMA_BYTES = 64 * 1024


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_SCHEMA_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


# The metaschema's own validator, built once (``check_schema`` would build it on every call).
_META = Draft202012Validator(Draft202012Validator.META_SCHEMA)


def schema_problem(schema: JsonObject, *, root_object: bool = True) -> str | None:
    """Why ``schema`` cannot be used (``None`` when it can): not a valid Draft 2020-12 schema,
    too large or deep, or (``root_object``) its root does not describe a JSON object. Callers
    send the same tool schemas with every request, so answers are remembered per schema."""
    encoded = _canonical(schema)
    if len(encoded) > MAX_SCHEMA_BYTES:
        return f"is larger than {MAX_SCHEMA_BYTES} bytes"
    return _schema_problem(encoded, root_object)


@lru_cache(maxsize=1024)
def _schema_problem(encoded: str, root_object: bool) -> str | None:
    schema = json.loads(encoded)
    if _depth(schema) > MAX_SCHEMA_DEPTH:
        return f"nests deeper than {MAX_SCHEMA_DEPTH} levels"
    error = best_match(_META.iter_errors(schema))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path)
        return f"is not a valid JSON Schema{f' at {where}' if where else ''}: {error.message[:200]}"
    if root_object and schema.get("type") != "object":
        return 'must describe a JSON object: {"type": "object", ...}'
    return None


def _canonical(schema: JsonObject) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@lru_cache(maxsize=256)
def _validator(encoded: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(encoded))


def violation(schema: JsonObject, instance: object) -> str | None:
    """The most relevant way ``instance`` fails ``schema`` ("at /path: message"), or None."""
    error = best_match(_validator(_canonical(schema)).iter_errors(instance))
    if error is None:
        return None
    where = "/" + "/".join(str(p) for p in error.absolute_path)
    return f"at {where}: {error.message[:200]}"
