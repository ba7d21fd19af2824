"""One measured workload against an OpenAI server: warm-up, timed trials, verdicts on errors.

Each trial sends fresh jobs from the workload's dataset under its load shape, timed
from the first send to the last reply (as ``vllm bench serve``). A trial with more
failed requests than ``max_error_rate`` allows raises :class:`RequestsFailed` quoting
the first errors; a server that died says so with vLLM's last words. Streams that
arrived in one burst become measurement-validity warnings.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .client.openai import OpenAIClient, make_session
from .config import Workload
from .datasets import make_jobs
from .loads import Concurrency, StopRule, make_load
from .loads.spec import resolved_concurrency, resolved_load, resolved_num_requests
from .prometheus import GaugeSampler, deltas, scrape
from .results import TrialResult
from .serving_metrics import first_errors, summarise_records

if TYPE_CHECKING:
    from .backends.server import ServerHandle

MAX_TRIALS = 1000
# Open-loop loads stop as over-saturated once this many times the server's batch
# size is in flight: the arrival rate is beyond what the server completes.
BACKLOG_FACTOR = 4
DEFAULT_MAX_NUM_SEQS = 256


def max_backlog(handle: ServerHandle) -> int:
    return BACKLOG_FACTOR * int(handle.config.max_num_seqs or DEFAULT_MAX_NUM_SEQS)


async def measure_serving(handle: ServerHandle, workload: Workload, limit_s: float,
                          run_index: int) -> tuple[list[TrialResult], list[str]]:
    return await asyncio.wait_for(_measure(handle, workload, limit_s, run_index), timeout=limit_s)


async def _measure(handle: ServerHandle, workload: Workload, limit_s: float,
                   run_index: int) -> tuple[list[TrialResult], list[str]]:
    from .backends.server import RequestsFailed

    load = make_load(workload)
    n = resolved_num_requests(workload)
    async with make_session(timeout_s=None) as session:
        client = OpenAIClient(handle.base_url, handle.model_name, session, request_timeout_s=limit_s)
        for w in range(workload.warmup):
            size = min(n, resolved_concurrency(workload) if resolved_load(workload) != "synchronous" else 1)
            jobs = make_jobs(workload, max(1, size), handle.vocab_size, f"r{run_index}-warmup{w}",
                             round_index=-1 - w, max_len=handle.config.max_model_len)
            records = await Concurrency(len(jobs)).drive(jobs, client.send, StopRule(max_error_rate=1.0))
            if records and all(not r.ok for r in records):
                handle.check_alive("run", grace_s=2.0)
                raise RequestsFailed("run", "every warm-up request failed: "
                                     + "; ".join(first_errors(records)), handle.log_path)
        trials: list[TrialResult] = []
        bursty = total = 0
        measured = 0.0
        index = 0
        while len(trials) < workload.trials or (
            measured < workload.min_duration_s and len(trials) < MAX_TRIALS
        ):
            jobs = make_jobs(workload, n, handle.vocab_size, f"r{run_index}-trial{index}",
                             round_index=index, max_len=handle.config.max_model_len)
            index += 1
            stop = StopRule(max_error_rate=max(0.5, workload.max_error_rate),
                            max_backlog=max_backlog(handle))
            before = await scrape(handle.base_url)
            sampler = GaugeSampler(handle.base_url, interval_s=1.0)
            t0 = time.perf_counter()
            sampler.start()
            records = await load.drive(jobs, client.send, stop)
            elapsed = time.perf_counter() - t0
            peaks = await sampler.stop()
            if workload.slowdown:
                stall = elapsed * workload.slowdown / (1.0 - workload.slowdown)
                await asyncio.sleep(stall)
                elapsed += stall
            after = await scrape(handle.base_url)
            trial = summarise_records(records, elapsed, workload.slo or None, stop.verdict)
            trial = replace(trial, server_metrics=deltas(before, after, peaks))
            _check_failures(handle, workload, records, trial, RequestsFailed)
            trials.append(trial)
            bursty += trial.bursty_requests
            total += trial.num_requests
            measured += elapsed
    warnings = []
    if bursty:
        warnings.append(
            f"measurement validity: {bursty} of {total} streams arrived in one burst (TTFT == "
            "E2EL, no gaps between chunks): the API server held them back (starved of CPU?), "
            "so their TTFT and ITL are not what a client would see"
        )
    return trials, warnings


def _check_failures(handle: ServerHandle, workload: Workload, records: list[Any],
                    trial: TrialResult, error: type[Exception]) -> None:
    sent = len(records)
    failed = trial.failed_requests
    if trial.stopped is None and (sent == 0 or failed / sent <= workload.max_error_rate):
        return
    handle.check_alive("run", grace_s=2.0)  # a dead server is the real story
    allowed = f"max_error_rate={workload.max_error_rate:g}"
    why = trial.stopped or f"{failed} of {sent} requests failed ({allowed})"
    quoted = "\n  ".join(trial.errors) or "(no request error: see the stop reason)"
    raise error("run", f"{why}; first errors:\n  {quoted}", handle.log_path)

