"""How many streamed chunks per second can the client take in? (a client benchmark)

STUB SERVER, NOT vLLM: a minimal OpenAI-style SSE server on loopback, in its own
process, streams ``--tokens`` completion chunks per request as fast as it can, each
written separately, then a usage chunk and ``[DONE]``. It exists only to measure the
clients: the plugin's (``pytest_llmperf.client.openai.OpenAIClient``) and ``vllm bench
serve``'s (``vllm.benchmarks.lib.endpoint_request_func.async_request_openai_completions``),
each driving the same stub at the same concurrency, interleaved. Reported: chunks per
second received and parsed, and the client process's CPU time per request.

    python benchmarks/client_ceiling.py                       # both clients, c = 1 16 64
    python benchmarks/client_ceiling.py --serve 8123          # just the stub
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


# -- the stub (labelled: only for measuring clients) ------------------------------------


def serve(port: int, tokens: int) -> None:
    from aiohttp import web

    chunk = [b"data: " + json.dumps({"id": "stub", "object": "text_completion", "model": "stub",
                                     "choices": [{"index": 0, "text": f" t{i}",
                                                  "finish_reason": None}]}).encode() + b"\n\n"
             for i in range(tokens)]
    usage = (b'data: {"id": "stub", "choices": [], "usage": {"prompt_tokens": 8, '
             b'"completion_tokens": %d, "total_tokens": %d}}\n\n' % (tokens, tokens + 8))

    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        n = int(body.get("max_tokens") or tokens)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(n):
            await resp.write(chunk[i % tokens])
        await resp.write(usage if n == tokens else usage.replace(b"%d" % tokens, b"%d" % n))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the clients ------------------------------------------------------------------------


async def plugin_client(url: str, c: int, n: int, tokens: int) -> tuple[int, int]:
    from pytest_llmperf.client.openai import OpenAIClient, make_session
    from pytest_llmperf.client.records import ServeRequest
    from pytest_llmperf.loads import Concurrency, SingleRequest, StopRule

    async with make_session() as session:
        client = OpenAIClient(url, "stub", session)
        jobs = [SingleRequest(ServeRequest(output_len=tokens, input_len=8, prompt=list(range(8))))
                for _ in range(n)]
        records = await Concurrency(c).drive(jobs, client.send, StopRule())
    bad = [r.error for r in records if not r.ok]
    if bad:
        raise RuntimeError(f"plugin client: {len(bad)} failed: {bad[:2]}")
    return sum(len(r.chunk_times) for r in records), len(records)


async def vllm_client(url: str, c: int, n: int, tokens: int) -> tuple[int, int]:
    import aiohttp
    from vllm.benchmarks.lib.endpoint_request_func import (
        RequestFuncInput,
        async_request_openai_completions,
    )

    sem = asyncio.Semaphore(c)
    connector = aiohttp.TCPConnector(limit=c, limit_per_host=c, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, trust_env=True,
                                     timeout=aiohttp.ClientTimeout(total=6 * 3600)) as session:
        async def one() -> Any:
            async with sem:
                return await async_request_openai_completions(RequestFuncInput(
                    prompt=list(range(8)), api_url=url + "/v1/completions", prompt_len=8,
                    output_len=tokens, model="stub", ignore_eos=True), session)

        outs = await asyncio.gather(*(one() for _ in range(n)))
    bad = [o.error for o in outs if not o.success]
    if bad:
        raise RuntimeError(f"vllm bench serve client: {len(bad)} failed: {bad[:1]}")
    return sum(len(o.itl) + 1 for o in outs), len(outs)


def measure(tool: str, url: str, c: int, n: int, tokens: int) -> dict[str, float]:
    fn = plugin_client if tool == "plugin" else vllm_client
    cpu0, t0 = time.process_time(), time.perf_counter()
    chunks, done = asyncio.run(fn(url, c, n, tokens))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"chunks_s": chunks / wall, "cpu_ms_per_request": cpu * 1e3 / done,
            "cpu_us_per_chunk": cpu * 1e6 / chunks, "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve", type=int, metavar="PORT", help="only run the stub server on PORT")
    p.add_argument("--tokens", type=int, default=256, help="chunks per request (default: 256)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64], help="default: 1 16 64")
    p.add_argument("--requests", type=int, default=64, help="requests per run (default: 64)")
    p.add_argument("--runs", type=int, default=3, help="runs per client and concurrency (default: 3)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve, args.tokens)
        return 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stub = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--tokens", str(args.tokens)],
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(url + "/health", timeout=1).close()  # noqa: S310
                break
            except OSError:
                time.sleep(0.1)
        measure("plugin", url, 4, 8, args.tokens)  # warm both up
        measure("vllm", url, 4, 8, args.tokens)
        rows = []
        for c in args.concurrency:
            per: dict[str, list[dict[str, float]]] = {"plugin": [], "vllm": []}
            for r in range(args.runs):
                for tool in (("plugin", "vllm") if r % 2 == 0 else ("vllm", "plugin")):
                    per[tool].append(measure(tool, url, c, max(args.requests, c), args.tokens))
            row: dict[str, Any] = {"concurrency": c}
            for tool, runs in per.items():
                row[tool] = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
            rows.append(row)
            print(f"c={c:3d}  plugin {row['plugin']['chunks_s']:9,.0f} chunks/s "
                  f"{row['plugin']['cpu_ms_per_request']:6.2f} ms CPU/request | vllm bench serve "
                  f"{row['vllm']['chunks_s']:9,.0f} chunks/s {row['vllm']['cpu_ms_per_request']:6.2f} "
                  "ms CPU/request", flush=True)
    finally:
        stub.terminate()
        stub.wait(10)
    if args.out:
        from pytest_llmperf.atomic import write_atomic

        doc = {"stub": "minimal SSE stub server on loopback, for measuring clients only",
               "tokens": args.tokens, "requests": args.requests, "cpus": os.cpu_count(), "rows": rows}
        write_atomic(Path(args.out).resolve(), (json.dumps(doc, indent=2) + "\n").encode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
