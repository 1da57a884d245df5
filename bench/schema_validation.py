"""The cost of schema checks per call, measured in process (``make bench`` runs it; ~10 s).

A tools or JSON-schema request pays for: the caller's schema check (once per request: it is
validated as a Draft 2020-12 schema and its size and depth bounded), and the answer's check
(each tool call's arguments, or the structured output, against its schema: a validator compiled
once per distinct schema, then reused). Plain text requests pay for none of it. Prints
microseconds per operation (best of 5 rounds), for a typical tool schema and a larger one.
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from llm_manager_server.domain import schemas  # noqa: E402
from llm_manager_server.domain.schemas import schema_problem, violation  # noqa: E402


def first_sight(schema: dict[str, Any]) -> None:
    """A schema the server has not seen yet: the remembered answers are forgotten first."""
    schemas._schema_problem.cache_clear()
    schema_problem(schema)

SMALL = {
    "type": "object",
    "properties": {"service": {"type": "string"}, "metric": {"type": "string"}, "window": {"type": "string", "pattern": "^[0-9]+[mhd]$"}},
    "required": ["service", "metric", "window"],
}
SMALL_ARGS = {"service": "checkout", "metric": "latency_p95_ms", "window": "1h"}
LARGE = {
    "type": "object",
    "properties": {
        "dashboard": {"type": "string"},
        "panels": {
            "type": "array",
            "maxItems": 50,
            "items": {
                "type": "object",
                "properties": {
                    "title": {"type": "string"},
                    "kind": {"enum": ["timeseries", "table", "stat", "heatmap"]},
                    "query": {"type": "string"},
                    "unit": {"type": "string"},
                    "thresholds": {"type": "array", "items": {"type": "number"}},
                },
                "required": ["title", "kind", "query"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["dashboard", "panels"],
}
LARGE_DOC = {
    "dashboard": "checkout",
    "panels": [{"title": f"p{i}", "kind": "timeseries", "query": f"rate(x{i}[5m])", "unit": "ms", "thresholds": [100, 500]} for i in range(20)],
}


def per_call_us(statement: Any, number: int) -> float:
    return min(timeit.repeat(statement, number=number, repeat=5)) / number * 1e6


def main() -> None:
    rows = [
        ("caller schema check, small tool schema, first sight", per_call_us(lambda: first_sight(SMALL), 500)),
        ("caller schema check, dashboard schema, first sight", per_call_us(lambda: first_sight(LARGE), 200)),
        ("caller schema check, small tool schema, seen before", per_call_us(lambda: schema_problem(SMALL), 5000)),
        ("caller schema check, dashboard schema, seen before", per_call_us(lambda: schema_problem(LARGE), 5000)),
        ("tool arguments check, small", per_call_us(lambda: violation(SMALL, SMALL_ARGS), 5000)),
        ("structured output check, 20-panel dashboard", per_call_us(lambda: violation(LARGE, LARGE_DOC), 500)),
        ("parse the 20-panel answer (json.loads)", per_call_us(lambda: json.loads(json.dumps(LARGE_DOC)), 2000)),
    ]
    print("schema validation cost per call (in process, best of 5):")
    for name, micros in rows:
        print(f"  {name:<54} {micros:8.1f} us")


if __name__ == "__main__":
    main()
