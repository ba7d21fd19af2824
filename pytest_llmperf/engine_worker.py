"""The engine process: builds one ``vllm.LLM`` and serves workloads over a pipe.

Runs as a spawned, non-daemonic child (vLLM starts processes of its own), guarded
by :mod:`pytest_llmperf.procs`: its own process group, ended with its owner. Its
stdout/stderr, and so those of vLLM's engine-core children, go to a log file that
the parent reads back to explain a failure in vLLM's own words. Messages are
plain dicts of JSON-able values so both sides stay independent of pickled classes.
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback
from typing import Any

from .procs import guard_child

_KV_TOKENS = re.compile(r"KV cache size: ([\d,]+) tokens")
_CONCURRENCY = re.compile(r"Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x")
_WEIGHTS = re.compile(r"Model loading took ([\d.]+) GiB")
# GPU: "Available KV cache memory: 54.31 GiB"; CPU: "Auto set (1.05/8.34) GiB for KV cache",
# or "Explicitly set (...)" when kv_cache_memory_bytes is given.
_KV_GIB = re.compile(r"Available KV cache memory: ([\d.]+) GiB"
                     r"|(?:Auto|Explicitly) set \(([\d.]+)/[\d.]+\) GiB for KV cache")
# vLLM's own counters (Prometheus names, the same in 0.25 and 0.32) whose change over a
# run explains its numbers: requests preempted for lack of KV blocks, prefix-cache
# lookups, and speculative decoding's drafts.
ENGINE_COUNTERS = (
    "vllm:num_preemptions",
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:spec_decode_num_drafts",
    "vllm:spec_decode_num_draft_tokens",
    "vllm:spec_decode_num_accepted_tokens",
)


def engine_kwargs(engine: dict[str, Any], path: str, load_format: str) -> dict[str, Any]:
    """Translate an EngineConfig dict into ``vllm.LLM`` keyword arguments."""
    kw: dict[str, Any] = {
        "model": path,
        "tensor_parallel_size": engine["tp"],
        "dtype": engine["dtype"],
        "gpu_memory_utilization": engine["gpu_memory_utilization"],
        "enforce_eager": engine["enforce_eager"],
        "kv_cache_dtype": engine["kv_cache_dtype"],
        "seed": engine["seed"],
        "load_format": load_format,
        # Prompts are token ids and outputs are never detokenized: no tokenizer needed.
        "skip_tokenizer_init": True,
        "disable_log_stats": False,
    }
    for key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens",
                "enable_prefix_caching", "enable_chunked_prefill", "quantization",
                "speculative_config"):
        if engine.get(key) is not None:
            kw[key] = engine[key]
    spec = engine.get("speculative_config")
    if spec:
        # A draft model may be named by card, like the target.
        from .cards import known_cards, resolve_model

        if spec.get("model") in known_cards():
            kw["speculative_config"] = {**spec, "model": resolve_model(spec["model"]).path}
    kw.update(engine.get("extra") or {})
    return kw


def parse_engine_log(text: str) -> dict[str, Any]:
    """KV-cache capacity, concurrency and weight size as vLLM logged them."""
    facts: dict[str, Any] = {}
    if m := _KV_TOKENS.search(text):
        facts["kv_cache_tokens"] = int(m.group(1).replace(",", ""))
    if m := _CONCURRENCY.search(text):
        facts["max_concurrency"] = float(m.group(2))
    if m := _WEIGHTS.search(text):
        facts["weights_gib"] = float(m.group(1))
    if m := _KV_GIB.search(text):
        facts["kv_cache_gib"] = float(m.group(1) or m.group(2))
    return facts


def counter_totals(llm: Any) -> dict[str, float]:
    """Current totals of :data:`ENGINE_COUNTERS` (summed over engines), from
    ``llm.get_metrics()``, which needs ``disable_log_stats=False``; {} where it fails."""
    try:
        snapshot = llm.get_metrics()
    except Exception:
        return {}
    totals: dict[str, float] = {}
    for metric in snapshot:
        if metric.name in ENGINE_COUNTERS and hasattr(metric, "value"):
            totals[metric.name] = totals.get(metric.name, 0.0) + float(metric.value)
    return totals


def _redirect_output(log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _announce(kind: str, text: str) -> None:
    """A progress line in the log, which the parent follows (progress.LogFollower)."""
    from .progress import trial_line

    print(trial_line(kind, text), flush=True)


def _trial_announcer(planned: int) -> Any:
    def announce(n: int, trial: Any) -> None:
        again = " (re-measured)" if trial.remeasured else ""
        _announce("trial", f"{n}/{planned}: {trial.elapsed_s:.2f} s, "
                           f"{trial.output_tok_s:,.1f} tok/s{again}")

    return announce


def _error(phase: str, exc: BaseException) -> dict[str, Any]:
    return {
        "kind": "error",
        "phase": phase,
        "type": type(exc).__name__,
        "message": str(exc).strip() or type(exc).__name__,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }


def worker_main(conn: Any, request: dict[str, Any]) -> None:
    """Entry point of the child: start the engine, then answer ``run``/``stop``."""
    t_entry = time.perf_counter()
    # Own process group (the parent ends us and vLLM's children as one), the owner
    # marker for every process vLLM starts, and death with the owner, however it dies.
    guard_child(request["owner_pid"], title="engine")
    if request.get("sys_path"):
        # Started with another interpreter (--llmperf-ab-python): its own packages
        # (vLLM above all) must load, not the parent's, which spawn handed down.
        sys.path[:] = list(request["sys_path"])
    _redirect_output(request["log_path"])
    device = request["device"]
    engine = request["engine"]
    try:
        from .hw.nvml import VisibleGpu, cuda_env
        from .sampler import ResourceSampler

        gpus = [VisibleGpu.from_json(g) for g in request.get("gpus") or []]
        if gpus:  # before vLLM (and CUDA) load: the engine sees exactly its GPUs
            os.environ.update(cuda_env(gpus))
        sampler = ResourceSampler(device=device, gpus=gpus)
        sampler.start()
        import vllm
        from vllm import LLM

        t0 = time.perf_counter()
        llm = LLM(**engine_kwargs(engine, request["path"], request["load_format"]))
        start_time_s = time.perf_counter() - t0
        sys.stdout.flush()
        sys.stderr.flush()
        with open(request["log_path"], encoding="utf-8", errors="replace") as f:
            facts = parse_engine_log(f.read())
        model_config = llm.llm_engine.model_config
        cache_config = llm.llm_engine.vllm_config.cache_config
        if "kv_cache_tokens" not in facts and cache_config.num_gpu_blocks:
            facts["kv_cache_tokens"] = int(cache_config.num_gpu_blocks * cache_config.block_size)
        peak_dev, peak_proc = sampler.peak()
        conn.send({
            "kind": "ready",
            "start_time_s": start_time_s,
            # Before vLLM's own start: this process's imports (vLLM, torch), which vLLM's
            # figure leaves out and a host without compiled bytecode pays on every start.
            "import_s": t0 - t_entry,
            "vllm_version": getattr(vllm, "__version__", ""),
            "vocab_size": int(model_config.get_vocab_size()),
            "dtype": str(model_config.dtype).replace("torch.", ""),
            "max_model_len": int(model_config.max_model_len),
            "pid": os.getpid(),
            # What this engine was pinned to (its title hides /proc/<pid>/environ).
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "startup_peak_process_gib": peak_proc,
            **facts,
        })
    except BaseException as exc:  # report why, in vLLM's words, then exit
        conn.send(_error("start", exc))
        conn.close()
        return

    from .config import Workload
    from .workload import measure

    run_index = 0  # every workload on this engine gets prompts it has never seen
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break  # the parent went away
        if msg.get("kind") == "stop":
            break
        if msg.get("kind") != "run":
            conn.send({"kind": "error", "phase": "protocol", "type": "ProtocolError",
                       "message": f"unknown message {msg.get('kind')!r}", "traceback": ""})
            continue
        try:
            workload = Workload.from_json(msg["workload"])
            t_run = time.perf_counter()
            run_index += 1
            before = counter_totals(llm)
            _announce("warmup", f"{workload.warmup} untimed round(s), then {workload.trials} "
                                f"timed trial(s) of {workload.label()}")
            trials = measure(llm, workload, int(model_config.get_vocab_size()),
                             check=sampler.disturbances, run_index=run_index,
                             on_trial=_trial_announcer(workload.trials))
            peak_dev, peak_proc = sampler.peak(t_run)
            after = counter_totals(llm)
            conn.send({
                "kind": "result",
                "counters": {k: after[k] - before.get(k, 0.0) for k in after},
                "trials": [t.to_json() for t in trials],
                "peak_device_gib": peak_dev,
                "peak_process_gib": peak_proc,
                "conditions": sampler.conditions(t_run, time.perf_counter()),
            })
        except BaseException as exc:
            conn.send(_error("run", exc))
    sampler.stop()
    try:
        del llm
        import gc

        gc.collect()
    finally:
        conn.close()
