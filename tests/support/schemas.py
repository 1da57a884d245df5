"""The JSON Schemas the SmolLM2 tool and structured-output tests share, bounded so a 135M model
finishes its answer (strings and numbers bounded; the Go example peer uses the same ones)."""

from __future__ import annotations

from typing import Any

QUERY_METRICS: dict[str, Any] = {
    "type": "object",
    "properties": {"metric": {"type": "string", "maxLength": 40}, "minutes": {"type": "integer", "minimum": 1, "maximum": 1440}},
    "required": ["metric", "minutes"],
    "additionalProperties": False,
}
SERVICE_CONFIG: dict[str, Any] = {
    "type": "object",
    "properties": {
        "service": {"type": "string", "maxLength": 40},
        "replicas": {"type": "integer", "minimum": 1, "maximum": 9},
        "tier": {"enum": ["frontend", "backend", "batch"]},
    },
    "required": ["service", "replicas", "tier"],
    "additionalProperties": False,
}
