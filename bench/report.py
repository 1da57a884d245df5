"""Turns bench/results/latest.json into the markdown summary and the chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAIN_TARGETS = ["direct", "llm-manager", "llm-manager (HTTP API)", "llm-manager (cache on)", "litellm", "bare grpc.aio"]
LLM = "llm-manager"
LITELLM = "litellm"
BARE = "bare grpc.aio"
DIRECT = "direct"


def _index(rows: list[dict[str, Any]], *keys: str) -> dict[tuple[Any, ...], dict[str, Any]]:
    return {tuple(row.get(k) for k in keys): row for row in rows}


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Ratios and the issue's targets, computed from the raw rows."""
    unary = _index(data.get("unary", []), "target", "latency_ms", "concurrency")
    stream = _index(data.get("stream", []), "target", "concurrency")
    cells = []
    for (target, latency, c), row in sorted(unary.items(), key=lambda kv: (kv[0][1], kv[0][2], str(kv[0][0]))):
        direct = unary.get((DIRECT, latency, c))
        litellm = unary.get((LITELLM, latency, c))
        bare = unary.get((BARE, latency, c))
        cells.append(
            {
                "target": target,
                "latency_ms": latency,
                "concurrency": c,
                "rps": row["rps"],
                "added_p50_ms": row["p50_ms"] - direct["p50_ms"] if direct and target != DIRECT else None,
                "added_p99_ms": row["p99_ms"] - direct["p99_ms"] if direct and target != DIRECT else None,
                "x_litellm": _ratio(row["rps"], litellm["rps"] if litellm and target != DIRECT else None),
                "of_bare": _ratio(row["rps"], bare["rps"] if bare and target != DIRECT else None),
                "vs_llm_manager": _ratio(row["rps"], unary[(LLM, latency, c)]["rps"]) if (LLM, latency, c) in unary and target.startswith(LLM + " (") else None,
            }
        )
    stream_cells = []
    for (target, c), row in sorted(stream.items(), key=lambda kv: (kv[0][1], str(kv[0][0]))):
        direct = stream.get((DIRECT, c))
        litellm = stream.get((LITELLM, c))
        bare = stream.get((BARE, c))
        stream_cells.append(
            {
                "target": target,
                "concurrency": c,
                "rps": row["rps"],
                "added_ttfc_p50_ms": row["ttfc_p50_ms"] - direct["ttfc_p50_ms"] if direct and target != DIRECT else None,
                "added_ttfc_p99_ms": row["ttfc_p99_ms"] - direct["ttfc_p99_ms"] if direct and target != DIRECT else None,
                "x_litellm": _ratio(row["rps"], litellm["rps"] if litellm and target != DIRECT else None),
                "of_bare": _ratio(row["rps"], bare["rps"] if bare and target != DIRECT else None),
            }
        )
    targets = []
    mine = [cell for cell in cells if cell["target"] == LLM]
    x_lite = [cell["x_litellm"] for cell in mine if cell["x_litellm"] is not None]
    if x_lite:
        targets.append(_target(">= 10x LiteLLM's requests/s (every mode and concurrency)", f"{min(x_lite):.1f}x .. {max(x_lite):.1f}x", min(x_lite) >= 10))
    of_bare = [cell["of_bare"] for cell in mine if cell["of_bare"] is not None]
    if of_bare:
        targets.append(_target(">= 70% of the bare server's requests/s", f"{100 * min(of_bare):.0f}% .. {100 * max(of_bare):.0f}%", min(of_bare) >= 0.7))
    added = [(cell["latency_ms"], cell["added_p50_ms"]) for cell in mine if cell["concurrency"] == 1 and cell["added_p50_ms"] is not None]
    if added:
        targets.append(
            _target("added p50 < 1 ms at concurrency 1", ", ".join(f"{a:.2f} ms ({lat} ms mode)" for lat, a in added), max(a for _, a in added) < 1.0)
        )
    rss = data.get("peak_rss_mb", {}).get(LLM)
    if rss is not None:
        targets.append(_target("peak RSS < 200 MB under load", f"{rss:.0f} MB", rss < 200))
    cache = data.get("cache_hit_microbench") or {}
    if "p50_us" in cache:
        targets.append(_target("in-process cache hit p50 < 50 us", f"{cache['p50_us']:.1f} us", cache["p50_us"] < 50))
    llama_data = data.get("llama") or {}
    llama = llama_data.get("by_concurrency") or {}
    probe = llama_data.get("ttft_probe") or {}
    for c, row in llama.items():
        ratio = row.get("in_process_tokens_per_s_ratio")
        if ratio is not None:
            targets.append(_target(f"in-process >= 95% of the HTTP server's tokens/s (c={c})", f"{100 * ratio:.1f}%", ratio >= 0.95))
    for c, row in llama.items():
        delta = row.get("ttft_p50_ms_delta")
        if c == "1" and "ttft_p50_ms_delta" in probe:
            delta = probe["ttft_p50_ms_delta"]
            name = f"in-process TTFT lower than the HTTP server's (c=1, {probe['in-process']['requests']} single-request probes each)"
        else:
            name = f"in-process TTFT lower than the HTTP server's (c={c})"
        if delta is not None:
            targets.append(_target(name, f"{delta:+.1f} ms p50", delta < 0))
    uvloop = []
    for c in data.get("settings", {}).get("concurrency", []):
        base = unary.get((LLM, 0, c))
        slow = unary.get(("llm-manager (asyncio loop)", 0, c))
        if base and slow:
            uvloop.append({"concurrency": c, "gain": _ratio(base["rps"], slow["rps"])})
    return {"unary": cells, "stream": stream_cells, "targets": targets, "uvloop_gain": uvloop}


def _target(name: str, measured: str, met: bool) -> dict[str, Any]:
    return {"target": name, "measured": measured, "met": met}


def _f(value: float | None, fmt: str = "{:.2f}", none: str = "–") -> str:
    return none if value is None else fmt.format(value)


def markdown(data: dict[str, Any]) -> str:
    s = data["summary"]
    m = data["machine"]
    cell = _index(s["unary"], "target", "latency_ms", "concurrency")
    scell = _index(s["stream"], "target", "concurrency")
    out = [
        "# Benchmark: llm-manager vs LiteLLM vs a bare grpc.aio server",
        "",
        f"Generated {data['generated']} by `make bench` in {data['wall_time_s']:.0f} s at commit {m.get('commit', '?')}"
        + (" (server/ or clients/ modified)" if m.get("server_modified") else "")
        + f" on {m['cpus']} CPUs ({m['cpu_model']}), "
        f"Linux {m['kernel']}, Python {m['python']}, grpcio {m['grpcio']}; load average {m['loadavg_start'][0]:.2f} at the start, "
        f"{m['loadavg_end'][0]:.2f} at the end. Tools: "
        + ", ".join(f"{k} {v}" for k, v in data["tools"].items())
        + ".",
        "",
        f"Layout: {data['layout']['description']}. All servers of a latency mode run side by side (idle unless measured); "
        f"for each concurrency every target gets a {data['settings']['warmup_s']} s warm-up, then {data['settings']['rounds']} rounds of "
        f"{data['settings']['duration_s']} s, one run per target per round in rotating order; the tables show the medians of the rounds "
        f"(latencies: median of the rounds' percentiles). Prompt `{data['settings']['prompt']}`, "
        f"max_tokens {data['settings']['max_tokens']}; the mock answers a fixed 20-word reply; streams are "
        f"{data['settings']['stream_chunks']} chunks, one every {data['settings']['chunk_interval_ms']} ms. gRPC connections: "
        f"{data['settings']['grpc_connections']}; HTTP (oha): one connection per concurrent request. "
        "llm-manager streams from local (OpenAI-compatible) upstreams even for unary calls, so that a cancelled call stops the "
        "upstream's generation: in the unary modes it reads 12 SSE events per call where LiteLLM and the bare server read one JSON body. "
        "llm-manager runs with its defaults (uvloop, INFO access log, tracing with no exporter) except the cache "
        "(off unless the row says so) and an in-memory conversation store. LiteLLM runs without a master key (no auth, like llm-manager), "
        "one uvicorn worker (uvicorn picks uvloop). The bare server runs on uvloop too.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "| --- | --- | --- |",
    ]
    out += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" for t in s["targets"]]
    for latency in data["settings"]["latencies_ms"]:
        out += [
            "",
            f"## Unary calls, mock latency {latency} ms",
            "",
            "| target | conc. | req/s | p50 ms | p99 ms | +p50 vs direct | +p99 vs direct | x LiteLLM | of bare | vs llm-manager | server CPU µs/req | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in sorted((r for r in data["unary"] if r["latency_ms"] == latency), key=lambda r: (_order(r["target"]), r["concurrency"])):
            c = cell.get((row["target"], latency, row["concurrency"]), {})
            out.append(
                f"| {row['target']} | {row['concurrency']} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{_f(c.get('added_p50_ms'))} | {_f(c.get('added_p99_ms'))} | {_f(c.get('x_litellm'), '{:.1f}x')} | "
                f"{_f(c.get('of_bare'), '{:.0%}')} | {_f(c.get('vs_llm_manager'), '{:.2f}x')} | {_f(row.get('server_cpu_us_per_req'), '{:,.0f}')} | {row['errors']} |"
            )
        out += [
            "",
            "Server CPU µs/req: CPU time of the server process(es) during the measured runs divided by the requests served "
            "(for `direct`: the mock's). At low request rates it includes the process's idle background work.",
        ]
    if data.get("stream"):
        out += [
            "",
            f"## Streams (mock streaming mode: {data['settings']['stream_chunks']} chunks, the first at once, then one every {data['settings']['chunk_interval_ms']} ms)",
            "",
            "TTFC = time to first chunk, measured by the client (bench/streamload).",
            "",
            "| target | conc. | streams/s | TTFC p50 ms | TTFC p99 ms | +TTFC p50 vs direct | +TTFC p99 vs direct | stream p50 ms | x LiteLLM | of bare | server CPU µs/stream | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in sorted(data["stream"], key=lambda r: (_order(r["target"]), r["concurrency"])):
            c = scell.get((row["target"], row["concurrency"]), {})
            out.append(
                f"| {row['target']} | {row['concurrency']} | {row['rps']:,.0f} | {row['ttfc_p50_ms']:.2f} | {row['ttfc_p99_ms']:.2f} | "
                f"{_f(c.get('added_ttfc_p50_ms'))} | {_f(c.get('added_ttfc_p99_ms'))} | {row['total_p50_ms']:.1f} | "
                f"{_f(c.get('x_litellm'), '{:.1f}x')} | {_f(c.get('of_bare'), '{:.0%}')} | {_f(row.get('server_cpu_us_per_stream'), '{:,.0f}')} | {row['errors']} |"
            )
    rss = data.get("peak_rss_mb") or {}
    if rss:
        out += ["", "## Peak RSS of each server (whole run, all its processes)", "", "| server | peak RSS MB |", "| --- | ---: |"]
        out += [f"| {name} | {mb:,.0f} |" for name, mb in rss.items()]
    if s.get("uvloop_gain"):
        out += ["", "## uvloop (same layout, 0 ms)", ""]
        out.append(
            "llm-manager on uvloop (its default) vs `LLM_EVENT_LOOP=asyncio`: "
            + ", ".join(f"c={g['concurrency']}: {_f(g['gain'], '{:.2f}x')}" for g in s["uvloop_gain"])
            + ". (Rows `llm-manager (asyncio loop)` and `bare grpc.aio (asyncio loop)` in the 0 ms table; `OTel SDK off` is the same server with "
            "`OTEL_SDK_DISABLED=true` (the interceptors stay, spans become no-ops), `access log off` with `LLM_ACCESS_LOG=false`.)"
        )
    if data.get("experiments"):
        base = _index(data["experiments"], "target", "concurrency")
        out += [
            "",
            "## Several processes on one port (SO_REUSEPORT), nothing pinned, 0 ms",
            "",
            "The server sets `grpc.so_reuseport` 0; bench/serve_variant.py sets it to 1 for this run only. "
            "With 2 CPUs shared by the servers, the mock and ghz, this shows the cost/benefit on this machine, not the scaling on a larger one.",
            "",
            "| variant | conc. | req/s | p50 ms | p99 ms | vs x1 | server CPU s per process | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
        ]
        for row in data["experiments"]:
            one = base.get((row["target"].split(" x")[0] + " x1", row["concurrency"]))
            out.append(
                f"| {row['target']} | {row['concurrency']} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} | "
                f"{_f(_ratio(row['rps'], one['rps'] if one else None), '{:.2f}x')} | "
                f"{' / '.join(str(x) for x in row.get('server_cpu_split_s', [])) or _f(row.get('server_cpu_s'))} | {row['errors']} |"
            )
    prof = data.get("profile") or {}
    if prof.get("top_self_lines"):
        out += [
            "",
            f"## Where llm-manager spends its CPU ({prof['tool']}, {prof['samples']} samples, {prof['load']}, "
            f"{prof['rps_while_profiled']:,.0f} req/s while profiled)",
            "",
            "Shares of the samples of all threads. Self time by component, function and line, then the inclusive time of the project's own frames "
            "(full collapsed stacks: bench/results/profile-llm-manager.collapsed.txt.gz; gunzipped, speedscope loads it). A coroutine's stack starts at "
            "the coroutine resumed by the event loop, so inclusive shares of outer frames are lower bounds. `Handle._run` as a leaf is C code "
            "run as an event-loop callback (C-implemented Task steps, grpc's Cython aio layer), opaque to py-spy without --native "
            "(which stops the process per sample and cut throughput ~3x here).",
            "",
            "| component (of the leaf frame) | self % |",
            "| --- | ---: |",
        ]
        out += [f"| {c['component']} | {c['pct']:.1f} |" for c in prof.get("self_by_component", [])]
        out += ["", "| self % | function (file) |", "| ---: | --- |"]
        out += [f"| {h['pct']:.1f} | `{h['function']}` |" for h in prof["top_self_functions"]]
        out += ["", "| self % | file:line function |", "| ---: | --- |"]
        out += [f"| {h['pct']:.1f} | `{h['where']}` |" for h in prof["top_self_lines"]]
        if prof.get("top_attributed_project"):
            out += [
                "",
                "Each sample charged to the deepest llm-manager line on its stack (the project line whose call led to the work, "
                "library time included):",
                "",
                "| % | project line (file:line function) |",
                "| ---: | --- |",
            ]
            out += [f"| {h['pct']:.1f} | `{h['where']}` |" for h in prof["top_attributed_project"]]
        out += ["", "| inclusive % | project frame (file:line function) |", "| ---: | --- |"]
        out += [f"| {h['pct']:.1f} | `{h['where']}` |" for h in prof["top_inclusive_project"]]
    elif prof.get("error"):
        out += ["", f"Profiling failed: {prof['error']}"]
    cache = data.get("cache_hit_microbench") or {}
    if cache:
        out += ["", "## In-process cache hit", ""]
        out.append(
            f"{cache['what']}: p50 {cache['p50_us']:.1f} µs, p99 {cache['p99_us']:.1f} µs over {cache['calls']:,} calls."
            if "p50_us" in cache else f"Not measured: {cache.get('error')}"
        )
    llama = data.get("llama") or {}
    if llama.get("by_concurrency"):
        out += [
            "",
            "## In-process llama.cpp vs the llama.cpp HTTP server (issue 7)",
            "",
            f"{llama['model']}, {llama['threads']} threads and {llama['parallel_slots']} slots in both, {llama['context_per_slot']} context per slot, "
            f"max_tokens {llama['max_tokens']}, temperature 0, a unique prompt per request, {llama['rounds']} alternating rounds per engine "
            "and concurrency; both driven through the server's providers (LlamaInProcessProvider vs OpenAICompatibleProvider over HTTP).",
            "",
            "| concurrent requests | engine | tokens/s (aggregate) | decode tokens/s per request (p50) | TTFT p50 ms | TTFT mean ms | tokens/request | in-process / HTTP tokens/s |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for c, row in llama["by_concurrency"].items():
            for engine in ("in-process", "http-server"):
                e = row[engine]
                ratio = _f(row.get("in_process_tokens_per_s_ratio"), "{:.1%}") if engine == "in-process" else ""
                out.append(
                    f"| {c} | {engine} | {e['tokens_per_s']:.0f} | {e['per_request_decode_tokens_per_s']:.0f} | {e['ttft_ms_p50']:.1f} | "
                    f"{e['ttft_ms_mean']:.1f} | {e['tokens_per_request']:.0f} | {ratio} |"
                )
        stale = llama.get("stale_connection_retries") or {}
        if stale:
            out += [
                "",
                "Stale keep-alive connections: " + ", ".join(f"{n} requests through {k}" for k, n in stale.items()) + " failed before any "
                "reply with `connection lost` (aiohttp wrote the request on a pooled connection the llama.cpp server had just closed; "
                "its idle keep-alive timeout is 5 s, the provider keeps connections 30 s) and were retried once by the harness; "
                "in llm-manager each is a MODEL_UNAVAILABLE attempt that the router retries after its backoff (0.1-0.2 s) and counts toward "
                "the model's circuit breaker.",
            ]
        probe = llama.get("ttft_probe") or {}
        if "ttft_p50_ms_delta" in probe:
            out += [
                "",
                f"TTFT probe (single 4-token requests, alternating, {probe['in-process']['requests']} per engine): in-process p50 "
                f"{probe['in-process']['ttft_ms_p50']:.1f} ms (mean {probe['in-process']['ttft_ms_mean']:.1f}), HTTP server p50 "
                f"{probe['http-server']['ttft_ms_p50']:.1f} ms (mean {probe['http-server']['ttft_ms_mean']:.1f}).",
            ]
    elif llama.get("error"):
        out += ["", f"llama benchmark failed: {llama['error']}"]
    if data.get("notes"):
        out += ["", "## Notes", ""] + [f"- {n}" for n in data["notes"]]
    return "\n".join(out) + "\n"


def _order(target: str) -> tuple[int, str]:
    for i, name in enumerate(MAIN_TARGETS):
        if target == name:
            return (i, target)
    return (len(MAIN_TARGETS), target)


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    concurrency = data["settings"]["concurrency"]
    latencies = data["settings"]["latencies_ms"]
    targets = [t for t in MAIN_TARGETS if any(r["target"] == t for r in data["unary"])]
    colors = {"direct": "#9e9e9e", "llm-manager": "#1f77b4", "llm-manager (cache on)": "#76b7e5", "llm-manager (HTTP API)": "#ff7f0e", "litellm": "#d62728", "bare grpc.aio": "#2ca02c"}
    panels = len(latencies) + (1 if data.get("stream") else 0) + (1 if (data.get("llama") or {}).get("by_concurrency") else 0)
    cols = 2
    rows = (panels + 1) // 2
    fig, axes = plt.subplots(rows, cols, figsize=(12, 4.2 * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    unary = _index(data["unary"], "target", "latency_ms", "concurrency")
    width = 0.8 / max(1, len(targets))
    i = 0
    for latency in latencies:
        ax = flat[i]
        i += 1
        for k, target in enumerate(targets):
            values = [unary.get((target, latency, c), {}).get("rps", 0) for c in concurrency]
            xs = [x + (k - (len(targets) - 1) / 2) * width for x in range(len(concurrency))]
            bars = ax.bar(xs, values, width, label=target, color=colors.get(target))
            for bar, v in zip(bars, values):
                ax.annotate(f"{v:,.0f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=6, rotation=90, xytext=(0, 2), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xticks(range(len(concurrency)), [f"c={c}" for c in concurrency])
        ax.set_ylabel("requests/s (log)")
        ax.set_title(f"Unary Generate, mock latency {latency} ms")
        ax.grid(axis="y", alpha=0.3, which="both")
    if data.get("stream"):
        ax = flat[i]
        i += 1
        stream = _index(data["stream"], "target", "concurrency")
        stargets = [t for t in targets if any(r["target"] == t for r in data["stream"])]
        width_s = 0.8 / max(1, len(stargets))
        for k, target in enumerate(stargets):
            values = [stream.get((target, c), {}).get("ttfc_p50_ms", 0) for c in concurrency]
            xs = [x + (k - (len(stargets) - 1) / 2) * width_s for x in range(len(concurrency))]
            bars = ax.bar(xs, values, width_s, label=target, color=colors.get(target))
            for bar, v in zip(bars, values):
                ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=6, rotation=90, xytext=(0, 2), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xticks(range(len(concurrency)), [f"c={c}" for c in concurrency])
        ax.set_ylabel("time to first chunk p50, ms (log)")
        ax.set_title("StreamGenerate / SSE: time to first chunk")
        ax.grid(axis="y", alpha=0.3, which="both")
    llama = (data.get("llama") or {}).get("by_concurrency") or {}
    if llama:
        ax = flat[i]
        i += 1
        cs = list(llama)
        for k, (engine, color) in enumerate((("in-process", "#1f77b4"), ("http-server", "#ff7f0e"))):
            values = [llama[c][engine]["tokens_per_s"] for c in cs]
            xs = [x + (k - 0.5) * 0.38 for x in range(len(cs))]
            bars = ax.bar(xs, values, 0.38, label=f"{engine}", color=color)
            for bar, c in zip(bars, cs):
                e = llama[c][engine]
                ax.annotate(f"{e['tokens_per_s']:.0f} tok/s\nTTFT {e['ttft_ms_p50']:.0f} ms", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(cs)), [f"{c} concurrent" for c in cs])
        ax.set_ylabel("completion tokens/s")
        ax.set_ylim(0, max(llama[c][e]["tokens_per_s"] for c in cs for e in ("in-process", "http-server")) * 1.3)
        ax.set_title("SmolLM2 llama.cpp: in-process vs HTTP server")
        ax.legend(fontsize=8, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
    for ax in flat[i:]:
        ax.axis("off")
    fig.suptitle(f"llm-manager benchmark ({data['generated']}, {data['machine']['cpus']} CPUs; {data['layout']['description']})", fontsize=9)
    handles, labels = flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 0.975), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.955))
    fig.savefig(path, format=path.suffix.lstrip("."), metadata={"Date": None} if path.suffix == ".svg" else None)
    plt.close(fig)
