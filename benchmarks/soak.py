"""Soak: many engine start/stop cycles in one process; does anything accumulate?

    python benchmarks/soak.py --cycles 50 --device cpu --json soak-cpu.json
    python benchmarks/soak.py --cycles 10 --device gpu --model llama-3.1-8b --json soak-gpu.json

The JSON file is rewritten after every cycle, so a soak cut short keeps its figures.

Each cycle starts an engine through the plugin's own ``EngineManager`` (the path a
pytest session takes), runs one short workload, and closes it (on a GPU that includes
the check that the engine's memory came back). After every close it records what the
owning process and the machine hold: the owner's RSS, open file descriptors and
threads, live child processes, files in /dev/shm, and on a GPU the device memory in
use (NVML) against the idle figure taken before the first start.

Verdict (exit status 1 when any fails): the owner's RSS after the last cycle within
``--rss-tolerance`` (5%) of its RSS after the first cycle (the first cycle pays for
imports: vLLM, torch), no child process left, on a GPU the device memory back within
``--device-tolerance-gib`` (0.5 GiB) of idle. Timing figures are recorded but judged
by nothing: on a shared machine they are noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.engine import EngineManager

MIB = 2**20


def _shm_files() -> int | None:
    try:
        return len(os.listdir("/dev/shm"))
    except OSError:
        return None


def _device_used_gib(device: str, indices: list[int]) -> float | None:
    if device != "gpu":
        return None
    from pytest_llmperf.hw.nvml import device_memory_used_gib

    return round(sum(device_memory_used_gib(indices).values()), 3)


def _live_children(me: psutil.Process) -> list[str]:
    out = []
    for p in me.children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline())[:80]}")
        except psutil.Error:
            continue
    return out


def snapshot(me: psutil.Process, device: str, indices: list[int]) -> dict[str, Any]:
    # multiprocessing's resource tracker lives as long as the owner; it is no engine.
    children = [c for c in _live_children(me) if "resource_tracker" not in c]
    return {
        "rss_mib": round(me.memory_info().rss / MIB, 1),
        "fds": me.num_fds() if hasattr(me, "num_fds") else None,
        "threads": me.num_threads(),
        "children": children,
        "shm_files": _shm_files(),
        "device_used_gib": _device_used_gib(device, indices),
    }


def write(args: argparse.Namespace, config: EngineConfig, workload: Workload,
          before: dict[str, Any], cycles: list[dict[str, Any]], t_all: float) -> dict[str, Any]:
    """Summarise the cycles so far and write the JSON file (atomically)."""
    gpu = args.device == "gpu"
    first, last = cycles[0], cycles[-1]
    growth = (last["rss_mib"] - first["rss_mib"]) / first["rss_mib"]
    checks = {
        "rss_within_tolerance": growth <= args.rss_tolerance,
        "no_children_left": not last["children"],
    }
    if gpu:
        checks["device_memory_back_to_idle"] = (
            last["device_used_gib"] - before["device_used_gib"] <= args.device_tolerance_gib
        )
    summary = {
        "cycles": len(cycles),
        "cycles_planned": args.cycles,
        "rss_mib_before": before["rss_mib"],
        "rss_mib_after_first": first["rss_mib"],
        "rss_mib_after_last": last["rss_mib"],
        "rss_growth_after_first": round(growth, 4),
        "rss_mib_max": max(c["rss_mib"] for c in cycles),
        "fds_after_first": first["fds"],
        "fds_after_last": last["fds"],
        "threads_after_first": first["threads"],
        "threads_after_last": last["threads"],
        "shm_files_before": before["shm_files"],
        "shm_files_after_last": last["shm_files"],
        "device_used_gib_idle": before["device_used_gib"],
        "device_used_gib_after_last": last["device_used_gib"],
        "start_s_median": sorted(c["start_s"] for c in cycles)[len(cycles) // 2],
        "total_s": round(time.perf_counter() - t_all, 1),
        "checks": checks,
        "passed": all(checks.values()),
    }
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "vllm_version": first["vllm_version"],  # as the engine reported it (no import here)
        "config": config.to_json(),
        "workload": workload.to_json(),
        "summary": summary,
        "before": before,
        "per_cycle": cycles,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    from pytest_llmperf.atomic import write_atomic

    write_atomic(Path(args.json), (json.dumps(out, indent=2) + "\n").encode())
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    ap.add_argument("--model", default=None, help="card (default: tiny-llama-2l on cpu, "
                                                  "llama-3.1-8b on gpu)")
    ap.add_argument("--max-model-len", type=int, default=None,
                    help="default: 256 on cpu, 1024 on gpu")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--input-len", type=int, default=32)
    ap.add_argument("--output-len", type=int, default=16)
    ap.add_argument("--eager", action=argparse.BooleanOptionalAction, default=None,
                    help="enforce_eager (default: on for cpu, off for gpu; --eager on a GPU "
                         "skips CUDA-graph capture, for shorter cycles)")
    ap.add_argument("--rss-tolerance", type=float, default=0.05)
    ap.add_argument("--device-tolerance-gib", type=float, default=0.5)
    ap.add_argument("--log-dir", default=None, help="engine logs (default: a temp folder)")
    ap.add_argument("--json", required=True, help="write the figures here (JSON)")
    args = ap.parse_args(argv)

    gpu = args.device == "gpu"
    model = args.model or ("llama-3.1-8b" if gpu else "tiny-llama-2l")
    config = EngineConfig(
        model=model,
        max_model_len=args.max_model_len or (1024 if gpu else 256),
        max_num_seqs=args.batch,
        enforce_eager=(not gpu) if args.eager is None else args.eager,
        gpu_memory_utilization=0.9 if gpu else 0.2,
    )
    workload = Workload(batch=args.batch, input_len=args.input_len, output_len=args.output_len,
                        trials=1, warmup=0)
    indices = list(range(config.tp))
    me = psutil.Process()
    manager = EngineManager(device=args.device, log_dir=args.log_dir)
    before = snapshot(me, args.device, indices)
    cycles: list[dict[str, Any]] = []
    t_all = time.perf_counter()
    for i in range(args.cycles):
        t0 = time.perf_counter()
        handle = manager.get(config)
        t1 = time.perf_counter()
        result = handle.run(workload)
        t2 = time.perf_counter()
        manager.close()
        t3 = time.perf_counter()
        snap = snapshot(me, args.device, indices)
        cycles.append({"cycle": i + 1, "start_s": round(t1 - t0, 2), "run_s": round(t2 - t1, 2),
                       "stop_s": round(t3 - t2, 2),
                       "output_tok_s": round(result.output_tok_s, 1),
                       "vllm_version": result.vllm_version, **snap})
        print(f"cycle {i + 1}/{args.cycles}: start {t1 - t0:.1f} s, stop {t3 - t2:.1f} s, "
              f"RSS {snap['rss_mib']:.0f} MiB, fds {snap['fds']}, children {len(snap['children'])}"
              + (f", device {snap['device_used_gib']:.2f} GiB" if gpu else ""), flush=True)
        # Written after every cycle, so an interrupted soak still leaves its figures.
        summary = write(args, config, workload, before, cycles, t_all)
    print(json.dumps(summary, indent=2))
    return 0 if summary["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
