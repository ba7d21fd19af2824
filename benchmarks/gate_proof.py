"""Measure what the regression gate sees across engine starts, for proving it.

    python benchmarks/gate_proof.py --starts 5 --out results.json
    python benchmarks/gate_proof.py --analyse results.json [more.json:plain] [--tolerance 0.02]

Collect: each engine start runs the workload plainly and with known injected
slowdowns (``Workload.slowdown``), ``--trials`` trials each, and every PerfResult is
saved. Analyse (no GPU needed): every ordered pair of distinct starts is one A/A
comparison (plain vs plain) and one detection test per slowdown (slowed vs plain),
decided by the same ``compare_to_baseline`` the plugin uses.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from typing import Any

from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.regression import compare_to_baseline
from pytest_llmperf.results import PerfResult


def collect(args: argparse.Namespace) -> None:
    from pytest_llmperf.engine import start_engine

    engine = EngineConfig(model=args.model, max_model_len=args.max_model_len,
                          max_num_seqs=args.batch, enforce_eager=args.device == "cpu",
                          gpu_memory_utilization=0.9 if args.device == "gpu" else 0.25)
    plain = Workload(batch=args.batch, input_len=args.input_len, output_len=args.output_len,
                     trials=args.trials)
    slowdowns = [float(s) for s in args.slowdowns.split(",") if s]
    runs: list[dict[str, Any]] = []
    for start in range(args.starts):
        t = time.perf_counter()
        handle = start_engine(engine, args.device)
        try:
            for slowdown in [0.0, *slowdowns]:
                result = handle.run(replace(plain, slowdown=slowdown))
                runs.append({"start": start, "slowdown": slowdown, "result": result.to_json()})
                print(json.dumps({"start": start, "slowdown": slowdown,
                                  "output_tok_s": round(result.output_tok_s, 1),
                                  "tpot_p50_ms": round(result.tpot.p50, 3),
                                  "ttft_p50_ms": round(result.ttft.p50, 1)}), flush=True)
        finally:
            handle.stop()
        print(f"start {start}: {time.perf_counter() - t:.0f} s (engine start "
              f"{handle.start_time_s:.0f} s)", flush=True)
        with open(args.out, "w") as f:
            json.dump({"runs": runs}, f)


def load(paths: list[str], plain_only: list[bool]) -> dict[tuple[str, float], PerfResult]:
    """Results keyed by (file:start, slowdown); ``plain_only`` files keep slowdown 0 runs."""
    by: dict[tuple[str, float], PerfResult] = {}
    for i, (path, plain) in enumerate(zip(paths, plain_only, strict=False)):
        with open(path) as f:
            for r in json.load(f)["runs"]:
                if plain and r["slowdown"] > 0:
                    continue
                by[(f"{i}:{r['start']}", r["slowdown"])] = PerfResult.from_json(r["result"])
    return by


def _pooled(results: list[PerfResult]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in results:
        for metric, values in r.metric_values().items():
            out.setdefault(metric, []).extend(values)
    return out


def analyse(
    by: dict[tuple[str, float], PerfResult], tolerance: float | None = None, baseline_starts: int = 1
) -> dict[str, Any]:
    """A/A false alarms and slowdown detections for every baseline of ``baseline_starts``
    pooled engine starts against every other start, as ``--llmperf-baseline-starts`` does."""
    tol = None if tolerance is None else {"output_tok_s": tolerance, "total_tok_s": tolerance,
                                          "requests_s": tolerance}
    starts = sorted({s for s, _ in by})
    baselines = list(itertools.combinations(starts, baseline_starts))
    aa_alarms: list[str] = []
    aa = 0
    detection: dict[float, list[int]] = {}
    for base in baselines:
        pooled = _pooled([by[(b, 0.0)] for b in base])
        for now in starts:
            if now in base:
                continue
            aa += 1
            cmp = compare_to_baseline(by[(now, 0.0)].metric_values(), pooled, tolerances=tol)
            aa_alarms.extend(f"{base}->{now}: {m.metric} {m.change:+.2%}" for m in cmp.regressions)
            for (s, d), slowed in by.items():
                if s != now or d == 0:
                    continue
                cmp = compare_to_baseline(slowed.metric_values(), pooled, tolerances=tol)
                hit = detection.setdefault(d, [0, 0])
                hit[0] += any(m.metric == "output_tok_s" for m in cmp.regressions)
                hit[1] += 1
    plain = {s: round(by[(s, 0.0)].output_tok_s, 1) for s in starts}
    return {"output_tok_s_tolerance": tolerance or "default", "baseline_starts": baseline_starts,
            "starts": len(starts), "aa_comparisons": aa, "aa_false_alarms": aa_alarms,
            "detected_output_tok_s": {f"{d:.0%}": f"{h}/{n}" for d, (h, n) in sorted(detection.items())},
            "plain_median_tok_s_per_start": plain}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--analyse", metavar="JSON", nargs="+",
                    help="result files; suffix one with :plain to use only its unslowed runs")
    ap.add_argument("--tolerance", type=float, action="append",
                    help="throughput tolerance(s) to evaluate (default: the metric default)")
    ap.add_argument("--baseline-starts", type=int, action="append",
                    help="engine starts pooled into each baseline (default: 1)")
    ap.add_argument("--device", default="gpu", choices=["gpu", "cpu"])
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--input-len", type=int, default=256)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--max-model-len", type=int, default=1024)
    ap.add_argument("--slowdowns", default="0.05,0.03,0.02")
    ap.add_argument("--out", default="gate-proof.json")
    args = ap.parse_args()
    if args.analyse:
        paths = [p.removesuffix(":plain") for p in args.analyse]
        by = load(paths, [p.endswith(":plain") for p in args.analyse])
        for k in args.baseline_starts or [1]:
            for tol in args.tolerance or [None]:
                print(json.dumps(analyse(by, tol, k), indent=2))
    else:
        collect(args)


if __name__ == "__main__":
    main()
