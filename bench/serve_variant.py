"""Runs the unchanged llm-manager server with benchmark-only variations (experiments).

    python bench/serve_variant.py [--reuseport]

(The event loop is the server's own setting, LLM_EVENT_LOOP.)

--reuseport  replaces the server's ``("grpc.so_reuseport", 0)`` channel option with 1, so
             several processes can listen on one port and the kernel spreads connections
             over them. (The server sets 0 on purpose: with it, a second server on a busy
             port fails to start instead of silently sharing it.)

Configuration is the usual environment (LLM_GRPC_PORT, LM_STUDIO_ENDPOINT, ...). Nothing in
server/ is modified: the option is patched at ``grpc.aio.server``, which app.py calls.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from grpc import aio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reuseport", action="store_true")
    args = parser.parse_args()
    if args.reuseport:
        original = aio.server

        def server_with_reuseport(*a: Any, **kw: Any) -> Any:
            options = [opt for opt in (kw.pop("options", None) or []) if opt[0] != "grpc.so_reuseport"]
            kw["options"] = [*options, ("grpc.so_reuseport", 1)]
            return original(*a, **kw)

        aio.server = server_with_reuseport  # type: ignore[assignment]
    from llm_manager_server.app import main as server_main

    return server_main()


if __name__ == "__main__":
    sys.exit(main())
