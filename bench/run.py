"""The side-by-side benchmark (issues 6 and 7). Run it with ``make bench`` (bench/run.sh
installs the tools, then runs this with the project's venv).

    .venv/bin/python bench/run.py [--duration 2] [--rounds 3] [--quick] [--skip-...]

What runs, all on loopback, in one go:

1. A mock OpenAI-compatible upstream (bench/mock_upstream.py, aiohttp on uvloop) with two
   unary modes (answer after 0 ms / 20 ms) and a streaming mode (10 chunks, the first at
   once, then one every 10 ms).
2. Unary calls, per mode, at concurrency 1/32/256: direct to the mock (oha); llm-manager
   over gRPC with its response cache disabled (ghz); the same with the cache enabled
   (identical requests, so cache hits); llm-manager's OpenAI-compatible HTTP API (oha, the
   same body as LiteLLM); the LiteLLM proxy (oha); a bare grpc.aio pass-through
   (bench/bare_server.py, ghz), on uvloop like llm-manager; in the 0 ms mode also both on the
   standard asyncio loop, and llm-manager without tracing and without its access log.
3. Streams, same targets and concurrencies, driven by bench/streamload (Go): streams/s,
   time to first chunk, time to the end of the stream.
4. One vs two server processes sharing the port with SO_REUSEPORT (nothing pinned).
5. A py-spy profile of llm-manager under load; an in-process cache-hit micro-benchmark.
6. bench/llama_bench.py: in-process llama.cpp vs the llama.cpp HTTP server (issue 7).

All servers of a mode run side by side, idle unless measured; every cell (target x
concurrency) is measured in rounds in rotating order, and medians are reported, so drift of
this shared machine hits every target alike. CPU layout on 2+ cores: every server under test
pinned to the second CPU (taskset), the mock, the load generators and this script to the
first. Every load run is bounded by its duration (ghz and streamload also by a count).
Results: bench/results/latest.json, latest.md, latest.svg.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
BUILD = BENCH / ".build"
LOGS = BUILD / "logs"
RESULTS = BENCH / "results"
sys.path.insert(0, str(BENCH))

from mock_upstream import REPLY_TEXT  # noqa: E402

GHZ = Path(os.environ.get("GHZ", ROOT / ".tools/bin/ghz"))
OHA = Path(os.environ.get("OHA", ROOT / ".tools/oha/bin/oha"))
PYSPY = Path(sys.executable).with_name("py-spy")
STREAMLOAD = BUILD / "streamload"
PROTOSET = BUILD / "llm_manager.protoset"
LITELLM = BENCH / ".litellm-venv/bin/litellm"
PY = sys.executable

PROMPT = "Say hello to the benchmark."
MAX_TOKENS = 64
MODEL = "mock-model"
STREAM_CHUNKS = 10
CHUNK_INTERVAL_MS = 10
MAX_REQUESTS = 1_000_000  # the count bound of every load run (the duration ends them first)
GENERATE = "llm_manager.v1.LLMManagerService/Generate"
STREAM_GENERATE = "/llm_manager.v1.LLMManagerService/StreamGenerate"

CPUS = sorted(os.sched_getaffinity(0))
PINNED = len(CPUS) >= 2
AUX_CPUS = str(CPUS[0]) if PINNED else None  # mock, load generators, this script
SERVER_CPUS = str(CPUS[1]) if PINNED else None  # the server under test
ALL_CPUS = ",".join(map(str, CPUS))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- processes --------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
                tree[ppid].append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    return tree


def _status_kb(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class Proc:
    """A server process (own session). One shared thread samples the RSS of every running
    Proc's process tree once a second (VmHWM covers the peak of the main process between
    samples)."""

    _live: list[Proc] = []
    _sampler: threading.Thread | None = None

    def __init__(self, name: str, cmd: Sequence[str], *, env: dict[str, str] | None = None, cpus: str | None = None, cwd: Path | None = None) -> None:
        self.name = name
        LOGS.mkdir(parents=True, exist_ok=True)
        self.log_path = LOGS / f"{name}.log"
        full = ["taskset", "-c", cpus, *cmd] if cpus else list(cmd)
        with open(self.log_path, "w") as log_file:
            self.popen = subprocess.Popen(
                full, env={**os.environ, **(env or {})}, cwd=cwd or ROOT, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid
        self.cpus = cpus
        self.peak_tree_kb = 0
        Proc._live.append(self)
        if Proc._sampler is None:
            Proc._sampler = threading.Thread(target=Proc._sample_all, daemon=True)
            Proc._sampler.start()

    def tree(self, children: dict[int, list[int]] | None = None) -> list[int]:
        children = _children() if children is None else children
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(children.get(pid, ()))
        return pids

    def cpu_seconds(self) -> float:
        return sum(_cpu_s(pid) for pid in self.tree())

    @staticmethod
    def _sample_all() -> None:
        while True:
            time.sleep(1.0)
            live = list(Proc._live)
            if not live:
                continue
            children = _children()
            for proc in live:
                rss = sum(_status_kb(pid, "VmRSS") for pid in proc.tree(children))
                proc.peak_tree_kb = max(proc.peak_tree_kb, rss)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def peak_rss_mb(self) -> float:
        return max(self.peak_tree_kb, _status_kb(self.pid, "VmHWM")) / 1024

    def stop(self) -> float:
        """Stops the process group; returns the peak RSS in MB."""
        peak = self.peak_rss_mb()
        if self in Proc._live:
            Proc._live.remove(self)
        if self.alive():
            os.killpg(self.pid, signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        return peak


def wait_until(check: Callable[[], bool], timeout_s: float, what: str, proc: Proc | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what}: process exited; see {proc.log_path}")
        try:
            if check():
                return
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last = error
        time.sleep(0.25)
    raise RuntimeError(f"{what} not ready after {timeout_s} s: {last}")


# --- targets ----------------------------------------------------------------------------


HTTP_API = "llm-manager (HTTP API)"


def http_body(stream: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": MAX_TOKENS}
    if stream:
        body["stream"] = True
    return body


def check_http(url: str) -> bool:
    request = urllib.request.Request(url, data=json.dumps(http_body()).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        text = json.loads(response.read())["choices"][0]["message"]["content"]
    if text != REPLY_TEXT:
        raise RuntimeError(f"{url} answered {text!r}")
    return True


def check_grpc(address: str) -> bool:
    import grpc

    from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as pb, llm_manager_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        reply = pb_grpc.LLMManagerServiceStub(channel).Generate(
            pb.GenerateRequest(prompt=PROMPT, preferences=common_pb2.GenerationPreferences(max_tokens=MAX_TOKENS)), timeout=5
        )
        if reply.text != REPLY_TEXT:
            raise RuntimeError(f"{address} answered {reply.text!r}")
        chunks = list(
            pb_grpc.LLMManagerServiceStub(channel).StreamGenerate(
                pb.StreamGenerateRequest(prompt=PROMPT, preferences=common_pb2.GenerationPreferences(max_tokens=MAX_TOKENS)), timeout=5
            )
        )
        if "".join(chunk.text for chunk in chunks) != REPLY_TEXT:
            raise RuntimeError(f"{address} streamed {[c.text for c in chunks]!r}")
    return True


def stream_request_b64() -> str:
    from llm_manager.v1 import common_pb2, llm_manager_service_pb2 as pb

    request = pb.StreamGenerateRequest(prompt=PROMPT, preferences=common_pb2.GenerationPreferences(max_tokens=MAX_TOKENS))
    return base64.b64encode(request.SerializeToString()).decode()


def llm_manager_env(port: int, upstream: str, *, cache: bool) -> dict[str, str]:
    return {
        "LLM_GRPC_HOST": "127.0.0.1",
        "LLM_GRPC_PORT": str(port),
        "LM_STUDIO_ENDPOINT": upstream,
        "LLM_GENERAL_MODEL_1": MODEL,
        "LLM_CACHE_ENABLED": "true" if cache else "false",
        "LLM_CONVERSATION_STORE": "memory",
        "LLM_DATA_DIR": str(BUILD / "data"),
        # Defaults otherwise (uvloop, INFO access log to stderr, tracing on with no exporter).
    }


def start_llm_manager(
    name: str, port: int, upstream: str, *, cache: bool, cpus: str | None, reuseport: bool = False, env: dict[str, str] | None = None
) -> Proc:
    cmd = [PY, str(BENCH / "serve_variant.py"), "--reuseport"] if reuseport else [PY, "-m", "llm_manager_server"]
    return Proc(name, cmd, env={**llm_manager_env(port, upstream, cache=cache), **(env or {})}, cpus=cpus, cwd=BUILD)


def start_bare(name: str, port: int, upstream: str, *, cpus: str | None, uvloop: bool = True, reuseport: bool = False) -> Proc:
    cmd = [PY, str(BENCH / "bare_server.py"), "--port", str(port), "--upstream", upstream]
    cmd += (["--uvloop"] if uvloop else []) + (["--reuseport"] if reuseport else [])
    return Proc(name, cmd, cpus=cpus)


def start_litellm(name: str, port: int, upstream: str, *, cpus: str | None) -> Proc:
    config = BUILD / f"litellm-{port}.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}\n"
        "      api_key: bench-not-a-real-key\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
    )
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network fetch of the price map
        "LITELLM_LOG": "ERROR",
        # No master key: the proxy then does no auth, like llm-manager (loopback only).
        "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        "NO_DOCS": "True",
    }
    cmd = [str(LITELLM), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    return Proc(name, cmd, env=env, cpus=cpus, cwd=BUILD)


# --- load generators --------------------------------------------------------------------


# Where the load generators run: core 0 with the mock, or anywhere (multi-process runs).
LOAD_CPUS: list[str | None] = [AUX_CPUS]


def _run_json(cmd: Sequence[str], timeout_s: float) -> Any:
    cpus = LOAD_CPUS[0]
    full = ["taskset", "-c", cpus, *cmd] if cpus else list(cmd)
    done = subprocess.run(full, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 and not done.stdout.strip():
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout)


def grpc_connections(concurrency: int) -> int:
    return min(concurrency, 4)


def ghz(address: str, concurrency: int, duration_s: float, connections: int | None = None) -> dict[str, Any]:
    """Unary Generate calls; percentiles over the successful calls (ghz's own include the
    calls it cuts off at the end of the run)."""
    conns = connections or grpc_connections(concurrency)
    data = json.dumps({"prompt": PROMPT, "preferences": {"max_tokens": MAX_TOKENS}})
    cmd = [
        str(GHZ), "--insecure", "--protoset", str(PROTOSET), "--call", GENERATE, "-d", data,
        "-c", str(concurrency), "--connections", str(conns), "-n", str(MAX_REQUESTS), "-x", f"{duration_s}s",
        "-t", "20s", "--format", "json", address,
    ]
    report = _run_json(cmd, duration_s + 60)
    ok = sorted(d["latency"] / 1e6 for d in report.get("details", []) if d.get("status") == "OK")
    seconds = report["total"] / 1e9
    errors = Counter(d.get("error") or d.get("status") for d in report.get("details", []) if d.get("status") != "OK")
    # At -x the run stops with up to `concurrency` calls in flight; those are cut, not failed.
    cut = sum(n for e, n in errors.items() if "transport is closing" in str(e) or "context canceled" in str(e))
    cut = min(cut, concurrency)
    return {
        "tool": "ghz",
        "connections": conns,
        "count": len(ok),
        "errors": sum(errors.values()) - cut,
        "error_sample": [e for e, _ in errors.most_common(3)],
        "seconds": seconds,
        "rps": len(ok) / seconds if seconds else 0.0,
        **_percentiles(ok),
    }


def oha(url: str, concurrency: int, duration_s: float) -> dict[str, Any]:
    cmd = [
        # oha takes no count with -z; the run is bounded by its duration (closed loop: at most
        # `concurrency` requests in flight), and -w lets the last in-flight ones finish.
        str(OHA), "-z", f"{int(duration_s * 1000)}ms", "-w", "-c", str(concurrency), "--no-tui",
        "--output-format", "json", "-m", "POST", "-H", "Content-Type: application/json", "-d", json.dumps(http_body()), url,
    ]
    report = _run_json(cmd, duration_s + 60)
    summary = report["summary"]
    statuses = {str(k): v for k, v in report.get("statusCodeDistribution", {}).items()}
    ok = statuses.get("200", 0)
    errors = {k: v for k, v in report.get("errorDistribution", {}).items() if "deadline" not in k.lower()}
    pct = report.get("latencyPercentiles", {})
    seconds = summary["total"]
    return {
        "tool": "oha",
        "connections": concurrency,
        "count": ok,
        "errors": sum(v for k, v in statuses.items() if k != "200") + sum(errors.values()),
        "error_sample": list(errors)[:3] + [f"HTTP {k}" for k in statuses if k != "200"][:3],
        "seconds": seconds,
        "rps": ok / seconds if seconds else 0.0,
        "p50_ms": (pct.get("p50") or 0) * 1000,
        "p90_ms": (pct.get("p90") or 0) * 1000,
        "p99_ms": (pct.get("p99") or 0) * 1000,
        "mean_ms": (summary.get("average") or 0) * 1000,
    }


def streamload(kind: str, target: str, concurrency: int, duration_s: float, warmup_s: float) -> dict[str, Any]:
    cmd = [str(STREAMLOAD), "-kind", kind, "-target", target, "-c", str(concurrency), "-n", str(MAX_REQUESTS),
           "-d", f"{duration_s}s", "-warmup", f"{warmup_s}s", "-timeout", "20s"]
    if kind == "http":
        cmd += ["-body", json.dumps(http_body(stream=True))]
    else:
        cmd += ["-request-b64", stream_request_b64(), "-method", STREAM_GENERATE, "-connections", str(grpc_connections(concurrency))]
    report = _run_json(cmd, duration_s + warmup_s + 60)
    return {
        "tool": "streamload",
        "connections": report.get("connections") or concurrency,
        "count": report["count"],
        "errors": report["errors"],
        "error_sample": report.get("error_sample") or [],
        "seconds": report["seconds"],
        "rps": report["rps"],
        "ttfc_p50_ms": report["ttfc_ms"]["p50"],
        "ttfc_p99_ms": report["ttfc_ms"]["p99"],
        "total_p50_ms": report["total_ms"]["p50"],
        "total_p99_ms": report["total_ms"]["p99"],
        "chunks_per_stream": report["chunks_per_stream"],
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "mean_ms": 0.0}
    at = lambda q: values[min(len(values) - 1, int(q * (len(values) - 1)))]  # noqa: E731
    return {"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "mean_ms": statistics.fmean(values)}


# --- the benchmark ----------------------------------------------------------------------


class Target:
    """Something to put load on: how to drive it, and the server processes behind it."""

    def __init__(self, name: str, procs: list[Proc], unary: Callable[[int, float], dict[str, Any]], stream: tuple[str, str] | None = None, **extra: Any) -> None:
        self.name = name
        self.procs = procs
        self.unary = unary
        self.stream = stream  # (streamload kind, address/URL)
        self.extra = extra


def _median_row(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Rounds of one cell combined: medians of rates and percentiles, sums of counts."""
    row = dict(rounds[len(rounds) // 2])
    for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "ttfc_p50_ms", "ttfc_p99_ms", "total_p50_ms", "total_p99_ms", "chunks_per_stream"):
        if key in row:
            row[key] = statistics.median(r[key] for r in rounds)
    row["rps_rounds"] = [round(r["rps"], 1) for r in rounds]
    for key in ("count", "errors", "seconds"):
        row[key] = sum(r[key] for r in rounds)
    row["error_sample"] = sorted({e for r in rounds for e in r.get("error_sample", [])})[:5]
    if any("server_cpu_s" in r for r in rounds):
        cpu = sum(r.get("server_cpu_s", 0.0) for r in rounds)
        row["server_cpu_s"] = cpu
        row["server_cpu_us_per_req"] = cpu / row["count"] * 1e6 if row["count"] else None
        row["server_cpu_util"] = cpu / row["seconds"] if row["seconds"] else None
        if any("server_cpu_split_s" in r for r in rounds):
            row["server_cpu_split_s"] = [round(sum(x), 2) for x in zip(*(r["server_cpu_split_s"] for r in rounds))]
    return row


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.unary: list[dict[str, Any]] = []
        self.stream: list[dict[str, Any]] = []
        self.experiments: list[dict[str, Any]] = []
        self.rss: dict[str, float] = {}
        self.notes: list[str] = []
        self.profile: dict[str, Any] = {}
        self.mock: Proc | None = None
        self.mock_port = 0
        self.running: list[tuple[str, Proc]] = []

    # mock ------------------------------------------------------------------------------
    def start_mock(self, cpus: str | None) -> None:
        self.stop_mock()
        self.mock_port = free_port()
        self.mock = Proc(
            "mock", [PY, str(BENCH / "mock_upstream.py"), "--port", str(self.mock_port), "--uvloop", "--chunks", str(STREAM_CHUNKS)], cpus=cpus,
        )
        wait_until(lambda: check_http(self.upstream("lat0") + "/chat/completions"), 20, "mock upstream", self.mock)

    def stop_mock(self) -> None:
        if self.mock is not None:
            self.mock.stop()
            self.mock = None

    def upstream(self, mode: str) -> str:
        """The mock's base URL for a mode: ``lat<ms>`` (answer after ms) or ``cad<ms>`` (stream
        chunks every ms)."""
        return f"http://127.0.0.1:{self.mock_port}/{mode}/v1"

    # measuring -------------------------------------------------------------------------
    @staticmethod
    def _with_cpu(run: Callable[[], dict[str, Any]], procs: list[Proc]) -> dict[str, Any]:
        before = [p.cpu_seconds() for p in procs]
        row = run()
        if procs:
            split = [p.cpu_seconds() - b for p, b in zip(procs, before)]
            row["server_cpu_s"] = sum(split)
            if len(procs) > 1:
                row["server_cpu_split_s"] = split
        return row

    def cells(self, targets: list[Target], table: list[dict[str, Any]], *, latency: int | None, streams: bool = False) -> None:
        """For each concurrency: a warm-up per target, then ``rounds`` rounds in which every
        target gets one measured run, in rotating order (the machine's drift hits all alike)."""
        duration, rounds = self.args.duration, self.args.rounds
        for c in self.args.concurrency:
            results: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
            for target in targets:
                if self.args.warmup > 0:
                    if streams:
                        streamload(*target.stream, c, self.args.warmup, 0)  # type: ignore[misc]
                    else:
                        target.unary(c, self.args.warmup)
            for r in range(rounds):
                order = targets[r % len(targets):] + targets[: r % len(targets)]
                for target in order:
                    if streams:
                        run = lambda t=target: streamload(*t.stream, c, duration, 0)  # type: ignore[misc]  # noqa: E731
                    else:
                        run = lambda t=target: t.unary(c, duration)  # noqa: E731
                    results[target.name].append(self._with_cpu(run, target.procs))
            for target in targets:
                row = _median_row(results[target.name])
                row.update(target=target.name, concurrency=c, **target.extra)
                if latency is not None:
                    row["latency_ms"] = latency
                if streams and "server_cpu_us_per_req" in row:
                    row["server_cpu_us_per_stream"] = row.pop("server_cpu_us_per_req")
                table.append(row)
                if streams:
                    log(f"  {target.name:<26} stream c={c:<3} {row['rps']:8.0f} streams/s  TTFC p50 {row['ttfc_p50_ms']:6.2f} ms  "
                        f"p99 {row['ttfc_p99_ms']:7.2f}  stream p50 {row['total_p50_ms']:6.1f} ms  errors {row['errors']}  rounds {row['rps_rounds']}")
                else:
                    log(f"  {target.name:<26} c={c:<3} {row['rps']:8.0f} req/s  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  "
                        f"errors {row['errors']}  rounds {row['rps_rounds']}")

    # servers ---------------------------------------------------------------------------
    def start_servers(self, mode: str, *, variants: bool) -> list[Target]:
        """Every server for one mock mode, all pinned to the server CPU and idle until
        measured, plus "direct" (the mock itself)."""
        upstream = self.upstream(mode)
        url = upstream + "/chat/completions"
        direct = Target("direct", [self.mock] if self.mock else [], lambda c, d: oha(url, c, d), ("http", url))
        plan: list[tuple[str, Callable[[int], Proc], str]] = [
            ("llm-manager", lambda p: start_llm_manager(f"llm-manager-{mode}", p, upstream, cache=False, cpus=SERVER_CPUS), "grpc"),
            ("llm-manager (cache on)", lambda p: start_llm_manager(f"llm-manager-cache-{mode}", p, upstream, cache=True, cpus=SERVER_CPUS), "grpc"),
        ]
        # The same server with its OpenAI-compatible HTTP API (LLM_HTTP_PORT), measured over HTTP
        # with the same body as LiteLLM and the mock: the HTTP column beside gRPC's.
        plan.append((
            HTTP_API,
            lambda p: start_llm_manager(f"llm-manager-http-{mode}", free_port(), upstream, cache=False, cpus=SERVER_CPUS, env={"LLM_HTTP_PORT": str(p)}),
            "http",
        ))
        if not self.args.skip_litellm:
            plan.append(("litellm", lambda p: start_litellm(f"litellm-{mode}", p, upstream, cpus=SERVER_CPUS), "http"))
        plan.append(("bare grpc.aio", lambda p: start_bare(f"bare-{mode}", p, upstream, cpus=SERVER_CPUS), "grpc"))
        if variants:  # experiments: what uvloop gives, what tracing and the access log cost
            plan.append((
                "llm-manager (asyncio loop)",
                lambda p: start_llm_manager(f"llm-manager-asyncio-{mode}", p, upstream, cache=False, cpus=SERVER_CPUS, env={"LLM_EVENT_LOOP": "asyncio"}),
                "grpc",
            ))
            plan.append(("bare grpc.aio (asyncio loop)", lambda p: start_bare(f"bare-asyncio-{mode}", p, upstream, cpus=SERVER_CPUS, uvloop=False), "grpc"))
            plan.append((
                "llm-manager (OTel SDK off)",
                lambda p: start_llm_manager(f"llm-manager-nootel-{mode}", p, upstream, cache=False, cpus=SERVER_CPUS, env={"OTEL_SDK_DISABLED": "true"}),
                "grpc",
            ))
            plan.append((
                "llm-manager (access log off)",
                lambda p: start_llm_manager(f"llm-manager-nolog-{mode}", p, upstream, cache=False, cpus=SERVER_CPUS, env={"LLM_ACCESS_LOG": "false"}),
                "grpc",
            ))
        started = []
        for name, start, kind in plan:
            port = free_port()
            started.append((name, start(port), kind, port))
        targets = [direct]
        try:
            for name, proc, kind, port in started:
                self.running.append((name, proc))
                if kind == "http":
                    address = f"http://127.0.0.1:{port}/v1/chat/completions"
                    wait_until(lambda a=address: check_http(a), 180, name, proc)
                    target = Target(name, [proc], lambda c, d, a=address: oha(a, c, d), ("http", address))
                else:
                    address = f"127.0.0.1:{port}"
                    wait_until(lambda a=address: check_grpc(a), 60, name, proc)
                    target = Target(name, [proc], lambda c, d, a=address: ghz(a, c, d), ("grpc", address))
                targets.append(target)
        except BaseException:
            self.stop_running()
            raise
        return targets

    def stop_running(self) -> None:
        for name, proc in self.running:
            peak = proc.stop()
            self.rss[name] = max(self.rss.get(name, 0.0), peak)
        self.running = []

    # phases ----------------------------------------------------------------------------
    def main_suite(self) -> None:
        self.running = []
        self.start_mock(AUX_CPUS)
        try:
            for latency in self.args.latencies:
                log(f"unary, mock latency {latency} ms: servers pinned to CPU {SERVER_CPUS}; mock, load generators and this script on CPU {AUX_CPUS}")
                targets = self.start_servers(f"lat{latency}", variants=latency == 0 and not self.args.skip_experiments)
                try:
                    self.cells(targets, self.unary, latency=latency)
                    if latency == 0 and not self.args.skip_profile:
                        llm = next(t for t in targets if t.name == "llm-manager")
                        self.profile = self.run_profile(llm.procs[0], llm.stream[1])  # type: ignore[index]
                finally:
                    self.stop_running()
            if not self.args.skip_streams:
                log(f"streams, {STREAM_CHUNKS} chunks every {CHUNK_INTERVAL_MS} ms: same layout")
                targets = self.start_servers(f"cad{CHUNK_INTERVAL_MS}", variants=False)
                try:
                    self.cells(targets, self.stream, latency=None, streams=True)
                finally:
                    self.stop_running()
        finally:
            self.stop_mock()

    def multiprocess_suite(self) -> None:
        """One vs two processes on one port (SO_REUSEPORT), nothing pinned: two server
        processes need both cores, which they share with the mock and the load generator."""
        log("multi-process experiment: SO_REUSEPORT, nothing pinned")
        self.running = []
        self.start_mock(None)
        LOAD_CPUS[0] = None
        upstream = self.upstream("lat0")
        variants = [  # all on uvloop (llm-manager's default)
            ("llm-manager x1", 1, True, "llm"),
            ("llm-manager x2", 2, True, "llm"),
            ("bare grpc.aio x1", 1, True, "bare"),
            ("bare grpc.aio x2", 2, True, "bare"),
        ]
        try:
            targets = []
            for name, processes, use_uvloop, kind in variants:
                port = free_port()
                procs = []
                for i in range(processes):
                    label = f"mp-{kind}-{'uv-' if use_uvloop else ''}{processes}-{i}"
                    if kind == "llm":
                        procs.append(start_llm_manager(label, port, upstream, cache=False, cpus=None, reuseport=True))
                    else:
                        procs.append(start_bare(label, port, upstream, cpus=None, uvloop=use_uvloop, reuseport=True))
                    time.sleep(0.5)  # the second one must find the port already bound
                address = f"127.0.0.1:{port}"
                for proc in procs:
                    self.running.append((f"{name}#{len(self.running)}", proc))
                wait_until(lambda a=address: check_grpc(a), 60, name, procs[0])
                time.sleep(0.5)
                for proc in procs:
                    if not proc.alive():
                        raise RuntimeError(f"{name}: a process exited; see {proc.log_path}")
                # 8 connections, so that the kernel's per-connection hash can spread them.
                targets.append(Target(name, procs, lambda c, d, a=address: ghz(a, c, d, connections=min(c, 8)), processes=processes, uvloop=use_uvloop))
            self.cells(targets, self.experiments, latency=0)
        finally:
            peaks: dict[str, float] = defaultdict(float)
            for name, proc in self.running:
                peaks[name.split("#")[0]] += proc.stop()
            self.running = []
            for name, mb in peaks.items():
                self.rss[name] = mb
            LOAD_CPUS[0] = AUX_CPUS
            self.stop_mock()

    def run_profile(self, proc: Proc, address: str) -> dict[str, Any]:
        """py-spy samples the server (non-blocking) while ghz keeps 32 calls in flight."""
        seconds = max(5, int(self.args.duration * 3) + 2)
        raw = BUILD / "profile-llm-manager.txt"
        raw.unlink(missing_ok=True)
        log(f"  profiling llm-manager with py-spy for {seconds} s under c=32")
        spy = subprocess.Popen(
            ["taskset", "-c", AUX_CPUS or ALL_CPUS, str(PYSPY), "record", "--pid", str(proc.pid), "--duration", str(seconds), "--rate", "250",
             "--nonblocking", "--full-filenames", "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        time.sleep(0.5)
        load = ghz(address, 32, seconds)
        try:
            _, err = spy.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if spy.returncode != 0 or not raw.exists():
            return {"error": f"py-spy failed: {err.strip()[-300:]}"}
        RESULTS.mkdir(parents=True, exist_ok=True)
        with gzip.open(RESULTS / "profile-llm-manager.collapsed.txt.gz", "wt", compresslevel=9) as handle:
            handle.write(_shorten_collapsed(raw.read_text()))
        return {"tool": "py-spy (non-blocking, 250 Hz)", "load": "ghz c=32 unary, 0 ms mock", "rps_while_profiled": load["rps"], **hotspots(raw)}

    def cache_microbench(self) -> dict[str, Any]:
        """The server's own cache-hit path in-process: Generator.generate on a warm cache."""
        code = r"""
import asyncio, json, statistics, time
from llm_manager_server.cache import build_response_cache
from llm_manager_server.config import load_settings
from llm_manager_server.engine import Generator
from llm_manager_server.domain.call_context import deadline_var
from llm_manager_server.domain.types import Answer, GenerationRequest, Message, Role, SamplingOptions, Usage, FinishReason

class Router:
    calls = 0
    async def generate(self, request, deadline):
        Router.calls += 1
        return Answer(text="x" * 120, model="mock-model", usage=Usage(12, 20, 32), finish_reason=FinishReason.STOP)

async def main():
    settings = load_settings({"LLM_CACHE_ENABLED": "true"})
    cache = build_response_cache(settings.cache, default_strategy=settings.routing.strategy)
    generator = Generator(Router(), cache)
    request = GenerationRequest(messages=(Message.of(Role.USER, "Say hello to the benchmark."),), sampling=SamplingOptions(max_tokens=64))
    deadline_var.set(asyncio.get_running_loop().time() + 600)
    await generator.generate(request)
    samples = []
    for _ in range(20000):
        t = time.perf_counter_ns()
        await generator.generate(request)
        samples.append(time.perf_counter_ns() - t)
    samples.sort()
    print(json.dumps({"calls": len(samples), "router_calls": Router.calls, "p50_us": samples[len(samples)//2] / 1000,
                      "p99_us": samples[int(len(samples)*0.99)] / 1000, "mean_us": statistics.fmean(samples) / 1000}))

asyncio.run(main())
"""
        cmd = ["taskset", "-c", SERVER_CPUS, PY, "-c", code] if SERVER_CPUS else [PY, "-c", code]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=BUILD)
        if done.returncode != 0:
            return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
        return {"what": "Generator.generate on a cache hit (memory store), in-process, no gRPC", **json.loads(done.stdout)}

    def llama(self) -> dict[str, Any]:
        out = BUILD / "llama.json"
        cmd = [PY, str(BENCH / "llama_bench.py"), "--out", str(out)]
        if self.args.quick:
            cmd += ["--rounds", "2", "--max-tokens", "48", "--ttft-probes", "4"]
        log("in-process llama.cpp vs llama.cpp HTTP server (nothing else running)")
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=ROOT)
        if done.returncode != 0:
            return {"error": done.stderr.strip()[-800:]}
        result = json.loads(out.read_text())
        for c, row in result["by_concurrency"].items():
            inp, http = row["in-process"], row["http-server"]
            log(
                f"  c={c}: in-process {inp['tokens_per_s']:.0f} tok/s TTFT p50 {inp['ttft_ms_p50']:.1f} ms | "
                f"HTTP {http['tokens_per_s']:.0f} tok/s TTFT p50 {http['ttft_ms_p50']:.1f} ms | ratio {row['in_process_tokens_per_s_ratio']:.3f}"
            )
        probe = result.get("ttft_probe") or {}
        if "ttft_p50_ms_delta" in probe:
            log(f"  TTFT probe: in-process p50 {probe['in-process']['ttft_ms_p50']:.1f} ms, HTTP {probe['http-server']['ttft_ms_p50']:.1f} ms")
        return result


# --- profile analysis ---------------------------------------------------------------------


_COMPONENTS = [
    # (label, path fragments) checked in order against each frame's file
    ("OpenTelemetry (aio server interceptor + SDK spans/metrics)", ("site-packages/opentelemetry/",)),
    ("llm-manager interceptors", ("llm_manager_server/interceptors",)),
    ("llm-manager telemetry", ("llm_manager_server/telemetry.py", "llm_manager_server/genai.py")),
    ("llm-manager servicer + conversion", ("llm_manager_server/servicers/",)),
    ("llm-manager router", ("llm_manager_server/routing/",)),
    ("llm-manager provider (openai_compat/openai_wire)", ("llm_manager_server/providers/openai",)),
    ("llm-manager SSE decoder", ("llm_manager_server/providers/sse.py",)),
    ("llm-manager other", ("llm_manager_server/",)),
    ("aiohttp client", ("site-packages/aiohttp/",)),
    ("grpc Python layer", ("site-packages/grpc/",)),
    ("protobuf", ("site-packages/google/",)),
    ("logging", ("/logging/",)),
    ("json", ("/json/",)),
    ("dataclasses (replace, generated __init__)", ("/dataclasses.py", "<string>")),
    ("asyncio event loop", ("/asyncio/", "/selectors.py")),
    ("contextlib", ("/contextlib.py",)),
]


def _component(path: str) -> str:
    for label, fragments in _COMPONENTS:
        if any(f in path for f in fragments):
            return label
    return "other"


def _short(path: str) -> str:
    """Repository-relative for the project, package-relative for libraries."""
    path = path.replace(str(ROOT) + "/", "")
    for marker in ("site-packages/",):
        if marker in path:
            return path.split(marker, 1)[1]
    if "/lib/python3" in path:
        return path.split("/lib/python3", 1)[1].split("/", 1)[1]
    return path


def _shorten_collapsed(text: str) -> str:
    def frame(f: str) -> str:
        func, sep, where = f.rpartition(" (")
        if not sep:
            return f
        file, _, lineno = where.rstrip(")").rpartition(":")
        return f"{func} ({_short(file)}:{lineno})"

    lines = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        lines.append(";".join(frame(f) for f in stack.split(";")) + " " + count)
    return "\n".join(lines) + "\n"


def hotspots(raw: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares from py-spy's collapsed stacks (full file names).

    A leaf ``Handle._run (asyncio/events.py)`` is time in C code run as an event-loop callback
    (C-implemented Task steps and grpc's Cython aio layer), which py-spy cannot look into
    without --native."""
    self_lines: Counter[str] = Counter()
    self_funcs: Counter[str] = Counter()
    self_components: Counter[str] = Counter()
    inclusive_project: Counter[str] = Counter()
    inclusive_components: Counter[str] = Counter()
    attributed: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = []
        for frame in stack.split(";"):
            func, sep, where = frame.rpartition(" (")
            if sep:
                frames.append((func, where.rstrip(")")))
        if not frames:
            continue
        total += count
        func, where = frames[-1]
        file, _, lineno = where.rpartition(":")
        self_lines[f"{_short(file)}:{lineno} {func}"] += count
        self_funcs[f"{func} ({_short(file)})"] += count
        leaf_component = _component(file)
        if func == "Handle._run" and leaf_component == "asyncio event loop":
            leaf_component = "C code run by the event loop (Task steps, grpc Cython aio)"
        elif func == "Thread.run" and file.endswith("threading.py"):
            leaf_component = "C code in other threads (grpc's completion-queue poller)"
        self_components[leaf_component] += count
        seen_frames: set[str] = set()
        seen_components: set[str] = set()
        for func, where in frames:
            file, _, lineno = where.rpartition(":")
            seen_components.add(_component(file))
            if "llm_manager_server" in file:
                key = f"{_short(file)}:{lineno} {func}"
                if key not in seen_frames:
                    seen_frames.add(key)
                    inclusive_project[key] += count
        for component in seen_components:
            inclusive_components[component] += count
        # The deepest project frame on the stack: the line of ours that caused this sample's work.
        ours = [(func, where) for func, where in frames if "llm_manager_server" in where]
        if ours:
            func, where = ours[-1]
            file, _, lineno = where.rpartition(":")
            attributed[f"{_short(file)}:{lineno} {func}"] += count
    share = lambda n: round(100.0 * n / total, 1) if total else 0.0  # noqa: E731
    return {
        "samples": total,
        "self_by_component": [{"component": k, "pct": share(n)} for k, n in self_components.most_common()],
        "inclusive_by_component": [{"component": k, "pct": share(n)} for k, n in inclusive_components.most_common()],
        "top_self_lines": [{"where": k, "pct": share(n)} for k, n in self_lines.most_common(top)],
        "top_self_functions": [{"function": k, "pct": share(n)} for k, n in self_funcs.most_common(top)],
        "top_inclusive_project": [{"where": k, "pct": share(n)} for k, n in inclusive_project.most_common(top)],
        "top_attributed_project": [{"where": k, "pct": share(n)} for k, n in attributed.most_common(top + 5)],
    }


# --- report -----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import grpc

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "unknown"

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "server_modified": bool(git("status", "--porcelain", "--untracked-files=no", "server", "clients")),
        "cpus": len(CPUS),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "loadavg_start": os.getloadavg(),
    }


def tool_versions() -> dict[str, str]:
    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unknown"

    litellm = "unknown"
    pip = LITELLM.with_name("pip")
    if pip.exists():
        shown = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True).stdout
        litellm = next((l.split(":", 1)[1].strip() for l in shown.splitlines() if l.startswith("Version:")), "unknown")
    ghz_mod = subprocess.run(["/usr/local/go/bin/go", "version", "-m", str(GHZ)], capture_output=True, text=True).stdout
    ghz_version = next((l.split()[2] for l in ghz_mod.splitlines() if l.strip().startswith("mod") and "bojand/ghz" in l), "unknown")
    def bare(text: str) -> str:
        return text.split()[-1] if text != "unknown" else text

    return {"oha": bare(version([str(OHA), "--version"])), "ghz": ghz_version, "litellm": litellm, "py-spy": bare(version([str(PYSPY), "--version"]))}


def write_report(bench: Bench, started: float, extra: dict[str, Any]) -> dict[str, Any]:
    import report

    data = {
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_time_s": round(time.time() - started, 1),
        "machine": {**extra["machine"], "loadavg_end": os.getloadavg()},
        "tools": extra["tools"],
        "layout": {
            "pinned": PINNED,
            "server_cpu": SERVER_CPUS,
            "aux_cpu": AUX_CPUS,
            "description": (
                f"server under test pinned to CPU {SERVER_CPUS}; mock upstream, load generator and driver pinned to CPU {AUX_CPUS}"
                if PINNED else "single CPU: nothing pinned"
            ),
        },
        "settings": {
            "duration_s": bench.args.duration,
            "rounds": bench.args.rounds,
            "warmup_s": bench.args.warmup,
            "concurrency": bench.args.concurrency,
            "latencies_ms": bench.args.latencies,
            "stream_chunks": STREAM_CHUNKS,
            "chunk_interval_ms": CHUNK_INTERVAL_MS,
            "prompt": PROMPT,
            "max_tokens": MAX_TOKENS,
            "grpc_connections": "min(concurrency, 4) (multi-process runs: min(concurrency, 8))",
        },
        "unary": bench.unary,
        "stream": bench.stream,
        "experiments": bench.experiments,
        "peak_rss_mb": bench.rss,
        "profile": bench.profile,
        "cache_hit_microbench": extra.get("cache"),
        "llama": extra.get("llama"),
        "notes": bench.notes,
    }
    data["summary"] = report.summarize(data)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / "latest.md").write_text(report.markdown(data))
    try:
        report.chart(data, RESULTS / "latest.svg")
    except Exception as error:  # noqa: BLE001 - the numbers matter more than the picture
        log(f"chart failed: {error}")
    return data


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measured run")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per target and concurrency (medians reported)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per target and concurrency first")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--latencies", type=int, nargs="+", default=[0, 20])
    parser.add_argument("--quick", action="store_true", help="short smoke run (1 round of 1 s, fewer llama rounds)")
    for part in ("litellm", "streams", "experiments", "profile", "llama", "cache"):
        parser.add_argument(f"--skip-{part}", action="store_true")
    parser.add_argument("--report-only", action="store_true", help="rebuild latest.md/svg from latest.json")
    args = parser.parse_args()
    if args.report_only:
        import report

        data = json.loads((RESULTS / "latest.json").read_text())
        data["summary"] = report.summarize(data)
        (RESULTS / "latest.json").write_text(json.dumps(data, indent=2) + "\n")
        (RESULTS / "latest.md").write_text(report.markdown(data))
        report.chart(data, RESULTS / "latest.svg")
        return 0
    if args.quick:
        args.duration, args.warmup, args.rounds = 1.0, 0.3, 1
    missing = [str(p) for p in (GHZ, OHA, STREAMLOAD, PROTOSET, PYSPY) if not p.exists()]
    if not args.skip_litellm and not LITELLM.exists():
        missing.append(str(LITELLM))
    if missing:
        print("missing: " + ", ".join(missing) + " (run bench/run.sh, which installs them)", file=sys.stderr)
        return 2
    started = time.time()
    BUILD.mkdir(parents=True, exist_ok=True)
    if PINNED:
        os.sched_setaffinity(0, {int(AUX_CPUS)})  # keep this driver off the server's core
    extra: dict[str, Any] = {"machine": machine_info(), "tools": tool_versions()}
    bench = Bench(args)
    def interrupted(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # a stopped run still stops its servers
    try:
        bench.main_suite()
        if not args.skip_experiments:
            bench.multiprocess_suite()
    finally:
        bench.stop_mock()
        for proc in list(Proc._live):  # whatever an interrupted phase left running
            proc.stop()
    if PINNED:
        os.sched_setaffinity(0, set(CPUS))
    if not args.skip_cache:
        extra["cache"] = bench.cache_microbench()
        log(f"cache-hit micro-benchmark: {extra['cache']}")
    if not args.skip_llama:
        extra["llama"] = bench.llama()
    data = write_report(bench, started, extra)
    log(f"done in {data['wall_time_s']:.0f} s: {RESULTS / 'latest.md'}, latest.json, latest.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
