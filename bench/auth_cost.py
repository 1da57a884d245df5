"""What authentication adds to a call: the call gate's ``authenticate`` (parse the header,
sha256 the key, look it up, set ``caller_var``) and the caller's scope in the cache key.

    .venv/bin/python bench/auth_cost.py                 # microseconds per call (best of 5)
    valgrind --tool=callgrind .venv/bin/python bench/auth_cost.py --case bearer --calls 0
    valgrind --tool=callgrind .venv/bin/python bench/auth_cost.py --case bearer --calls 20000
        # (the difference of the two totals / 20000: instructions per call, immune to load)

A unary Generate costs ~2.7 M instructions (bench/instructions.sh); the cases here are what
one call adds with keys off and on.
"""

from __future__ import annotations

import argparse
import asyncio
import timeit
from collections.abc import Callable

from llm_manager_server.cache.keys import cache_key
from llm_manager_server.calls import CallGate
from llm_manager_server.domain.types import GenerationRequest, Message, Role, RoutingStrategy
from llm_manager_server.keys import key_digest, new_key, parse_keys

KEYS = [new_key() for _ in range(100)]
RING = parse_keys({"keys": [{"caller": f"caller-{i}", "key_sha256": key_digest(k).hex()} for i, k in enumerate(KEYS)]})
OFF = CallGate(60.0)
ON = CallGate(60.0, keys=RING)
KEY = KEYS[42]
BEARER = f"Bearer {KEY}"
REQUEST = GenerationRequest(messages=(Message.of(Role.USER, "Say hello to the benchmark."),))


def _refused() -> None:
    try:
        ON.authenticate(None, "llmm_not-a-key-of-this-server-0123456789abcdef")
    except Exception:  # noqa: BLE001 - the refusal is the case measured
        pass


CASES: dict[str, Callable[[], object]] = {
    "off": lambda: OFF.authenticate(BEARER, None),
    "bearer": lambda: ON.authenticate(BEARER, None),
    "x-api-key": lambda: ON.authenticate(None, KEY),
    "both": lambda: ON.authenticate(BEARER, KEY),
    "unknown": _refused,
    "cache-key": lambda: cache_key(REQUEST, RoutingStrategy.BALANCED),
    "cache-key-scoped": lambda: cache_key(REQUEST, RoutingStrategy.BALANCED, "caller:caller-42"),
}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--calls", type=int, default=None)
    arguments = parser.parse_args()
    if arguments.calls is not None:  # for callgrind: just run the case
        case = CASES[arguments.case or "bearer"]
        for _ in range(arguments.calls):
            case()
        return
    for name in [arguments.case] if arguments.case else CASES:
        best = min(timeit.repeat(CASES[name], number=20_000, repeat=5)) / 20_000
        print(f"{name:18} {best * 1e6:7.2f} µs per call")


asyncio.run(main())  # CallGate and caller_var as in the server: inside a running loop
