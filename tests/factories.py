"""Build realistic PerfResult objects without an engine, for tests of everything after it."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.metrics import METRICS, Distribution
from pytest_llmperf.regression import MetricComparison
from pytest_llmperf.results import MemoryResult, PerfResult, TrialResult

# The tiny CPU card as @perf marker arguments, for suites written through pytester.
TINY = 'model="tiny-llama-2l", device="cpu", max_model_len=512'


def write_suite(pytester: pytest.Pytester, body: str, name: str = "test_suite") -> None:
    """Write a pytester suite module ``name`` whose ``body`` can use ``pytest`` and ``perf``."""
    pytester.makepyfile(**{name: "import pytest\nfrom pytest_llmperf import perf\n\n" + body})


def _dist(p50: float, count: int) -> Distribution:
    """A plausible right-skewed latency distribution around ``p50``."""
    return Distribution(
        count=count,
        mean=p50 * 1.02,
        p50=p50,
        p90=p50 * 1.10,
        p95=p50 * 1.15,
        p99=p50 * 1.30,
        max=p50 * 1.50,
    )


def make_result(
    output_tok_s: float = 1000.0,
    tpot_ms: float = 7.0,
    trials: int = 3,
    jitter: float = 0.0,
    seed: int = 0,
    engine: EngineConfig | None = None,
    workload: Workload | None = None,
    device: str = "gpu",
    ttft_scale: float = 1.0,
) -> PerfResult:
    """A PerfResult whose trials run at ``output_tok_s`` and ``tpot_ms`` (TTFT: 4 TPOTs,
    times ``ttft_scale``).

    ``jitter`` is the relative standard deviation of a per-trial speed factor (seeded
    by ``seed``): throughput scales with it and latencies inversely, as on real runs.
    """
    workload = workload or Workload(batch=8, input_len=128, output_len=128, trials=trials)
    engine = engine or EngineConfig(model="test/tiny-model", max_num_seqs=workload.batch)
    rng = random.Random(seed)
    out_tokens = workload.batch * workload.output_len
    in_tokens = workload.batch * workload.input_len
    trial_results = []
    for _ in range(trials):
        speed = max(0.05, 1.0 + jitter * rng.gauss(0.0, 1.0)) if jitter else 1.0
        tpot = tpot_ms / speed
        ttft = tpot * 4.0 * ttft_scale
        trial_results.append(
            TrialResult(
                elapsed_s=out_tokens / (output_tok_s * speed),
                num_requests=workload.batch,
                input_tokens=in_tokens,
                output_tokens=out_tokens,
                ttft_ms=_dist(ttft, workload.batch),
                tpot_ms=_dist(tpot, workload.batch),
                itl_ms=_dist(tpot, workload.batch * (workload.output_len - 1)),
                e2e_ms=_dist(ttft + tpot * (workload.output_len - 1), workload.batch),
            )
        )
    return PerfResult(
        engine=engine,
        workload=workload,
        trials=tuple(trial_results),
        memory=MemoryResult(
            kind=device,
            peak_device_gib=20.0 if device == "gpu" else None,
            peak_process_gib=18.0,
            weights_gib=2.0,
            kv_cache_tokens=100_000,
            max_concurrency=48.0,
        ),
        start_time_s=30.0,
        device=device,
        vllm_version="0.32.0",
    )


def comparison_row(metric: str, change: float, tolerance: float = 0.40) -> MetricComparison:
    """One gate comparison row of ``metric`` that moved by ``change`` (its own sign)."""
    spec = METRICS[metric]
    worsening = -change if spec.direction == "higher" else change
    return MetricComparison(
        metric=metric, unit=spec.unit, direction=spec.direction, baseline=100.0,
        current=100.0 * (1 + change), change=change, worse_low=worsening - 0.3,
        worse_high=worsening + 0.3, tolerance=tolerance, noise_floor=spec.noise_floor,
        verdict="ok")


@dataclass(frozen=True)
class SuiteRecord:
    """What the suite check reads of a test (``reports.model.TestRecord`` has it)."""

    test_id: str
    hardware_key: str | None
    comparison: tuple[MetricComparison, ...] | None
    speed_factor: float = 1.0
    comparison_mode: str | None = None
