"""pytest-benchmark as a second view of every perf test (our baselines stay the gate).

Each timed trial becomes one round of the test's ``benchmark`` fixture, through the
same ``Metadata`` object that ``benchmark.pedantic`` fills, so pytest-benchmark's own
``--benchmark-json``, ``--benchmark-autosave``, ``--benchmark-compare`` and its table
work on perf tests unchanged. A round's time is the trial's wall time (fixed workload,
so lower is faster); the LLM metrics go to ``extra_info``: the median of each metric
at the top level, and per-trial values, config and verdict under ``"llmperf"``.
"""

from __future__ import annotations

import statistics
from typing import Any

from ..results import PerfResult

MODE = "pytest-llmperf (one round per timed trial)"


def extra_info(result: PerfResult, outcome: str | None = None) -> dict[str, Any]:
    values = result.metric_values()
    info: dict[str, Any] = {name: statistics.median(v) for name, v in values.items()}
    info["llmperf"] = {
        "engine": result.engine.to_json(),
        "workload": result.workload.to_json(),
        "device": result.device,
        "vllm_version": result.vllm_version,
        "trials": values,
        "outcome": outcome,
    }
    return info


def record_trials(benchmark: Any, result: PerfResult, outcome: str | None = None) -> bool:
    """Report ``result``'s trials through a pytest-benchmark ``BenchmarkFixture``.

    False (and nothing recorded) when benchmarking is disabled (``--benchmark-disable``,
    pytest-xdist) or the test used the fixture itself: pytest-benchmark allows one use.
    """
    if benchmark is None or getattr(benchmark, "disabled", True) or benchmark._mode:
        return False
    benchmark._mode = MODE
    benchmark.extra_info.update(extra_info(result, outcome))
    stats = benchmark._make_stats(1)  # one iteration per round, as pedantic(iterations=1)
    for trial in result.trials:
        stats.update(trial.elapsed_s)
    return True
