"""The offline workload: prompts in, tokens out, a timestamp for every chunk.

Runs inside the engine process against a live ``vllm.LLM``. Requests go through
``LLMEngine.add_request``/``step`` with delta outputs, the same loop ``LLM.generate``
runs, so each request's first token and every later chunk are timed as a client
sees them (as ``vllm bench serve`` does online).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .config import Workload
from .metrics import Distribution
from .results import TrialResult


@dataclass
class RequestTiming:
    submitted: float
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    chunk_gaps: list[float] = field(default_factory=list)


def make_prompts(
    workload: Workload, vocab_size: int, round_index: int, run_index: int = 0
) -> list[list[int]]:
    """Random token-id prompts, distinct per prompt, per round and per run.

    Distinct prompts keep the prefix cache from turning a trial into a cache-hit
    benchmark: every workload an engine serves (``run_index``) and every round in it
    gets fresh ones. Ids below 100 are avoided since cards put special tokens there.
    """
    rng = random.Random(f"{workload.seed}:{run_index}:{round_index}")
    low = min(100, max(vocab_size // 2, 1))
    return [
        [rng.randrange(low, vocab_size) for _ in range(workload.input_len)]
        for _ in range(workload.batch)
    ]


def run_round(llm: Any, prompts: list[list[int]], output_len: int, tag: str) -> tuple[float, dict[str, RequestTiming]]:
    """Submit every prompt at once and drive the engine until all finish."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    params = SamplingParams(
        max_tokens=output_len,
        min_tokens=output_len,
        ignore_eos=True,
        detokenize=False,
        output_kind=RequestOutputKind.DELTA,
    )
    engine = llm.llm_engine
    timings: dict[str, RequestTiming] = {}
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        rid = f"{tag}-{i}"
        timings[rid] = RequestTiming(submitted=time.perf_counter())
        engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt), params)
    while engine.has_unfinished_requests():
        outputs = engine.step()
        now = time.perf_counter()
        for out in outputs:
            timing = timings.get(out.request_id)
            if timing is None:  # older vLLM may report its internal id
                timing = timings.get(out.request_id.rsplit("-", 1)[0])
            if timing is None:
                continue
            n = sum(len(c.token_ids) for c in out.outputs)
            if n:
                if timing.first is None:
                    timing.first = now
                else:
                    timing.chunk_gaps.append(now - (timing.last or now))
                timing.last = now
                timing.tokens += n
    return time.perf_counter() - start, timings


def summarise(
    elapsed_s: float, timings: dict[str, RequestTiming], input_len: int, output_len: int
) -> TrialResult:
    """Per-request latencies of one round; raises if any request came back short."""
    short = [rid for rid, t in timings.items() if t.tokens != output_len or t.first is None]
    if short:
        got = sorted({timings[r].tokens for r in short})
        raise RuntimeError(
            f"{len(short)} of {len(timings)} requests did not return {output_len} tokens "
            f"(got {got}); the engine dropped or truncated requests"
        )
    ttft: list[float] = []
    tpot: list[float] = []
    e2e: list[float] = []
    itl: list[float] = []
    for t in timings.values():
        assert t.first is not None and t.last is not None
        ttft.append((t.first - t.submitted) * 1e3)
        e2e.append((t.last - t.submitted) * 1e3)
        if t.tokens > 1:
            tpot.append((t.last - t.first) * 1e3 / (t.tokens - 1))
        itl.extend(g * 1e3 for g in t.chunk_gaps)
    return TrialResult(
        elapsed_s=elapsed_s,
        num_requests=len(timings),
        input_tokens=input_len * len(timings),
        output_tokens=sum(t.tokens for t in timings.values()),
        ttft_ms=Distribution.from_samples(ttft),
        tpot_ms=Distribution.from_samples(tpot),
        itl_ms=Distribution.from_samples(itl),
        e2e_ms=Distribution.from_samples(e2e),
    )


def measure(
    llm: Any,
    workload: Workload,
    vocab_size: int,
    *,
    check: Callable[[float, float], list[str]] | None = None,
    max_trials: int = 1000,
    run_index: int = 0,
    on_trial: Callable[[int, TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Warm up, then time ``workload.trials`` rounds (more to cover ``min_duration_s``).

    ``check(t0, t1)`` names what disturbed a trial (see sampler.py); such a trial is
    measured once more and both facts are kept on the result. ``on_trial(n, result)``
    hears each finished trial (progress reports).
    """
    round_index = 0
    for _ in range(workload.warmup):
        prompts = make_prompts(workload, vocab_size, round_index, run_index)
        run_round(llm, prompts, workload.output_len, f"r{run_index}-warmup{round_index}")
        round_index += 1
    trials: list[TrialResult] = []
    measured = 0.0
    while len(trials) < workload.trials or (
        measured < workload.min_duration_s and len(trials) < max_trials
    ):
        result, t0, t1 = _timed_trial(llm, workload, vocab_size, round_index, run_index)
        round_index += 1
        reasons = check(t0, t1) if check else []
        if reasons:
            result, t0, t1 = _timed_trial(llm, workload, vocab_size, round_index, run_index)
            round_index += 1
            again = check(t0, t1) if check else []
            marks = again or [f"first try: {r}" for r in reasons]
            result = replace(result, disturbances=tuple(marks), remeasured=True)
        trials.append(result)
        measured += result.elapsed_s
        if on_trial is not None:
            on_trial(len(trials), result)
    return trials


def _timed_trial(
    llm: Any, workload: Workload, vocab_size: int, round_index: int, run_index: int
) -> tuple[TrialResult, float, float]:
    prompts = make_prompts(workload, vocab_size, round_index, run_index)
    t0 = time.perf_counter()
    elapsed, timings = run_round(llm, prompts, workload.output_len, f"r{run_index}-trial{round_index}")
    if workload.slowdown:
        # Known, calibrated slowdown for proving the gate: a stall worth exactly
        # `slowdown` of the throughput, added inside the timed window.
        stall = elapsed * workload.slowdown / (1.0 - workload.slowdown)
        time.sleep(stall)
        elapsed += stall
    t1 = time.perf_counter()
    return summarise(elapsed, timings, workload.input_len, workload.output_len), t0, t1

