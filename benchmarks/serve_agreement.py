"""Does the plugin's client measure what ``vllm bench serve`` measures, on one server?

Starts one OpenAI server (or uses ``--endpoint``), warms it up, then for every
concurrency runs the plugin's client (``ServerHandle.run``, the path ``@perf(backend=
"server")`` takes) and ``vllm bench serve`` (``vllm.benchmarks.serve``, in-process, the
``random`` dataset, ``ignore_eos``) interleaved, alternating which goes first, ``--runs``
times each. Reports the medians of TTFT p50, TPOT p50 and output tok/s per tool, their
relative difference, and each tool's own spread (max - min over median) across runs.

GPU (H100, vLLM 0.25; about 5 minutes including a cold server start):

    source .gpu-stage/remote-env && python3 benchmarks/serve_agreement.py --gpu \\
        --model llama-3.1-8b --max-model-len 1024 --max-num-seqs 64 \\
        --input-len 256 --output-len 256 --concurrency 1 8 24 64 --runs 3 \\
        --out /tmp/llmperf-out/serve_agreement_h100.json

CPU build (tiny card; the defaults): ``python benchmarks/serve_agreement.py``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_llmperf.atomic import write_atomic  # noqa: E402
from pytest_llmperf.backends.server import ServerHandle, connect_endpoint, start_server  # noqa: E402
from pytest_llmperf.cards import resolve_model  # noqa: E402
from pytest_llmperf.config import EngineConfig, Workload  # noqa: E402
from pytest_llmperf.tokenizer import served_model_dir  # noqa: E402

BURST_TPOT_MS = 0.1  # a median TPOT below this is a burst, not a decode step
METRICS = ("ttft_p50_ms", "tpot_p50_ms", "output_tok_s")


def num_prompts(concurrency: int, per_client: int, minimum: int) -> int:
    return max(minimum, per_client * concurrency)


def plugin_run(handle: ServerHandle, c: int, n: int, input_len: int, output_len: int,
               seed: int, prompt_format: str = "text") -> dict[str, Any]:
    wl = Workload(backend="server", concurrency=c, num_requests=n, input_len=input_len,
                  output_len=output_len, trials=1, warmup=0, seed=seed,
                  prompt_format=prompt_format)
    (trial,) = handle.run(wl).trials
    return {"ttft_p50_ms": trial.ttft_ms.p50, "tpot_p50_ms": trial.tpot_ms.p50,
            "output_tok_s": trial.output_tok_s, "completed": trial.num_requests,
            "failed": trial.failed_requests, "bursty": trial.bursty_requests,
            "duration_s": trial.elapsed_s}


def _bench_parser() -> argparse.ArgumentParser:
    from vllm.benchmarks import serve as bench

    parser: argparse.ArgumentParser
    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
        parser = FlexibleArgumentParser()
    except ImportError:
        try:
            from vllm.utils import FlexibleArgumentParser  # type: ignore[attr-defined,no-redef]
            parser = FlexibleArgumentParser()
        except ImportError:
            parser = argparse.ArgumentParser()
    bench.add_cli_args(parser)
    return parser


def bench_run(handle: ServerHandle, tokenizer: str, c: int, n: int, input_len: int,
              output_len: int, seed: int, result_dir: str) -> dict[str, Any]:
    """One ``vllm bench serve`` run, in-process; options this vLLM lacks are left out."""
    from vllm.benchmarks import serve as bench

    parser = _bench_parser()
    known = {s for a in parser._actions for s in a.option_strings}
    name = f"bench-c{c}-{seed}.json"
    wanted: list[tuple[str, str | None]] = [
        ("--backend", "vllm"), ("--base-url", handle.base_url), ("--endpoint", "/v1/completions"),
        ("--model", handle.model_name), ("--tokenizer", tokenizer),
        ("--dataset-name", "random"), ("--random-input-len", str(input_len)),
        ("--random-output-len", str(output_len)), ("--random-range-ratio", "0.0"),
        ("--num-prompts", str(n)), ("--max-concurrency", str(c)), ("--request-rate", "inf"),
        ("--ignore-eos", None), ("--seed", str(seed)), ("--disable-tqdm", None),
        ("--num-warmups", "0"), ("--percentile-metrics", "ttft,tpot,itl,e2el"),
        ("--metric-percentiles", "50,99"), ("--save-result", None),
        ("--result-dir", result_dir), ("--result-filename", name),
    ]
    argv: list[str] = []
    for flag, value in wanted:
        if flag in known:
            argv += [flag] if value is None else [flag, value]
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(io.StringIO()) as out:
        bench.main(args)
    with open(os.path.join(result_dir, name), encoding="utf-8") as f:
        res = json.load(f)
    failed = int(res.get("failed", 0) or 0)
    if failed:
        raise RuntimeError(f"vllm bench serve: {failed} requests failed\n{out.getvalue()[-2000:]}")
    # vllm bench serve cannot see a burst (a starved server sending a whole stream at
    # once); its median TPOT then reads microseconds (0.004 ms against the plugin's 4 ms
    # on the 2-core CPU build), far below any decode step vLLM takes.
    bursty = res["median_tpot_ms"] < BURST_TPOT_MS
    return {"ttft_p50_ms": res["median_ttft_ms"], "tpot_p50_ms": res["median_tpot_ms"],
            "output_tok_s": res["output_throughput"], "completed": res["completed"],
            "failed": failed, "duration_s": res["duration"], "bursty": bursty}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for c in sorted({r["concurrency"] for r in runs}):
        row: dict[str, Any] = {"concurrency": c}
        for metric in METRICS:
            per: dict[str, list[float]] = {
                tool: [r[metric] for r in runs if r["concurrency"] == c and r["tool"] == tool]
                for tool in ("plugin", "bench")
            }
            med = {tool: statistics.median(v) for tool, v in per.items()}
            row[metric] = {
                "plugin": med["plugin"], "bench": med["bench"],
                "rel_diff": med["plugin"] / med["bench"] - 1.0,
                "spread_plugin": (max(per["plugin"]) - min(per["plugin"])) / med["plugin"],
                "spread_bench": (max(per["bench"]) - min(per["bench"])) / med["bench"],
                "runs_plugin": per["plugin"], "runs_bench": per["bench"],
            }
            ids = [r[metric] for r in runs if r["concurrency"] == c and r["tool"] == "plugin-ids"]
            if ids:  # --also-ids: the plugin with token-id prompts (no server-side tokenizing)
                row[metric].update(plugin_ids=statistics.median(ids), runs_plugin_ids=ids,
                                   rel_diff_ids=statistics.median(ids) / med["bench"] - 1.0)
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| c | metric | plugin | vllm bench serve | plugin vs bench | spread plugin | spread bench |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        for metric in METRICS:
            m = row[metric]
            lines.append(f"| {row['concurrency']} | {metric} | {m['plugin']:.2f} | {m['bench']:.2f} | "
                         f"{m['rel_diff']:+.1%} | {m['spread_plugin']:.1%} | {m['spread_bench']:.1%} |"
                         + (f" ids: {m['plugin_ids']:.2f} ({m['rel_diff_ids']:+.1%})"
                            if "plugin_ids" in m else ""))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", action="store_true", help="run on the GPU (default: vLLM's CPU build)")
    p.add_argument("--model", default="tiny-llama-2l", help="card name (default: tiny-llama-2l)")
    p.add_argument("--max-model-len", type=int, default=256, help="default: 256")
    p.add_argument("--max-num-seqs", type=int, default=8, help="default: 8")
    p.add_argument("--input-len", type=int, default=128, help="default: 128")
    p.add_argument("--output-len", type=int, default=64, help="default: 64")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8], help="default: 1 4 8")
    p.add_argument("--runs", type=int, default=3, help="runs per tool and concurrency (default: 3)")
    p.add_argument("--per-client", type=int, default=2,
                   help="prompts per client in a run (default: 2; at least --min-prompts)")
    p.add_argument("--min-prompts", type=int, default=8, help="default: 8")
    p.add_argument("--endpoint", default=None, help="use this running server instead of starting one")
    p.add_argument("--log-dir", default=None, help="server log directory (default: a temp dir)")
    p.add_argument("--prompt-format", default="text", choices=["text", "ids"],
                   help="what the plugin's completions carry (default: text, as vllm bench "
                        "serve's random dataset sends; ids skips the server's tokenizer)")
    p.add_argument("--also-ids", action="store_true",
                   help="also run the plugin with token-id prompts, interleaved as a third "
                        "client (shows what the server's tokenizer adds to TTFT)")
    p.add_argument("--out", default=None, help="write the runs and the summary as JSON here")
    args = p.parse_args(argv)

    device = "gpu" if args.gpu else "cpu"
    config = EngineConfig(model=args.model, max_model_len=args.max_model_len,
                          max_num_seqs=args.max_num_seqs, enforce_eager=not args.gpu,
                          gpu_memory_utilization=0.9 if args.gpu else 0.2)
    tokenizer = served_model_dir(resolve_model(args.model))
    t_start = time.perf_counter()
    if args.endpoint:
        handle = connect_endpoint(args.endpoint, config, device)
    else:
        handle = start_server(config, device, log_dir=args.log_dir or tempfile.mkdtemp(prefix="llmperf-agree-"))
    print(f"server {handle.base_url} ready in {time.perf_counter() - t_start:.0f} s "
          f"(vLLM {handle.vllm_version}, log {handle.log_path})", flush=True)
    runs: list[dict[str, Any]] = []
    try:
        top = max(args.concurrency)  # warm the server (and CUDA graphs) up, untimed
        plugin_run(handle, top, top, args.input_len, args.output_len, seed=999_999)
        with tempfile.TemporaryDirectory() as result_dir:
            bench_run(handle, tokenizer, 1, 1, args.input_len, args.output_len, 999_998, result_dir)
            for c in args.concurrency:
                n = num_prompts(c, args.per_client, args.min_prompts)
                tools = ["plugin", "bench"] + (["plugin-ids"] if args.also_ids else [])
                for r in range(args.runs):
                    k = r % len(tools)  # rotate which client goes first
                    for tool in tools[k:] + tools[:k]:
                        seed = 1000 * c + r
                        if tool != "bench":  # "plugin-ids": the plugin sending token ids
                            fmt = "ids" if tool == "plugin-ids" else args.prompt_format
                            res = plugin_run(handle, c, n, args.input_len, args.output_len, seed,
                                             fmt)
                        else:
                            res = bench_run(handle, tokenizer, c, n, args.input_len,
                                            args.output_len, seed, result_dir)
                        runs.append({"tool": tool, "concurrency": c, "run": r, "prompts": n, **res})
                        print(f"c={c} run {r} {tool:10s} TTFT p50 {res['ttft_p50_ms']:8.2f} ms  "
                              f"TPOT p50 {res['tpot_p50_ms']:7.3f} ms  {res['output_tok_s']:9.1f} tok/s"
                              + (f"  bursty {res['bursty']}" if res.get("bursty") else ""), flush=True)
    finally:
        handle.stop()
    rows = summarise(runs)
    print(table(rows))
    worst = max(abs(row[m]["rel_diff"]) for row in rows for m in METRICS)
    print(f"largest |plugin/bench - 1|: {worst:.1%}; total {time.perf_counter() - t_start:.0f} s")
    if args.out:
        doc = {"device": device, "vllm_version": handle.vllm_version, "args": vars(args),
               "runs": runs, "summary": rows, "server_log": handle.log_path}
        target = Path(args.out).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, (json.dumps(doc, indent=2, default=_finite) + "\n").encode())
    return 0


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
