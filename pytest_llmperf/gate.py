"""The verdict on one measured test: absolute limits, then the baseline gate.

Pure logic over results and baseline entries; the plugin turns a failing verdict
into a pytest failure and a script can print it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .baselines import BaselineEntry
from .config import Limits
from .regression import Comparison, compare_to_baseline
from .results import PerfResult

CPU_UNGATED = frozenset({"kv_cache_tokens", "peak_mem_gib"})

# limit key -> (how to read it off a result, True when it is a floor)
_LIMITS: dict[str, tuple[Callable[[PerfResult], float | None], bool]] = {
    "min_tok_s": (lambda r: r.output_tok_s, True),
    "min_total_tok_s": (lambda r: r.total_tok_s, True),
    "max_ttft_p50_ms": (lambda r: r.ttft.p50, False),
    "max_ttft_p99_ms": (lambda r: r.ttft.p99, False),
    "max_tpot_p50_ms": (lambda r: r.tpot.p50, False),
    "max_tpot_p99_ms": (lambda r: r.tpot.p99, False),
    "max_itl_p99_ms": (lambda r: r.itl.p99, False),
    "max_e2e_p99_ms": (lambda r: r.e2e.p99, False),
    "max_gpu_mem_gib": (lambda r: r.memory.peak_process_gib, False),
    "min_kv_cache_tokens": (lambda r: r.memory.kv_cache_tokens, True),
}


def check_limits(result: PerfResult, limits: Limits) -> list[str]:
    """One line per floor or ceiling the result misses; empty when all hold."""
    failures = []
    for key, bound in limits.items():
        read, is_floor = _LIMITS[key]
        value = read(result)
        if value is None:
            failures.append(f"{key}={bound}: not measured on this device")
        elif (value < bound) if is_floor else (value > bound):
            relation = "below the floor" if is_floor else "above the ceiling"
            failures.append(f"{key}={bound}: measured {value:,.2f}, {relation}")
    return failures


@dataclass
class Verdict:
    """Everything decided about one test, for the failure message and the summary."""

    test_id: str
    result: PerfResult | None
    limit_failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # e.g. an unusable baseline file
    limits_applied: bool = True
    baseline_status: str = "none"  # compared | missing | stale | updated | error | none
    comparison: Comparison | None = None
    baseline: BaselineEntry | None = None  # the stored entry compared with, for reports
    messages: list[str] = field(default_factory=list)
    failed_test: bool = False

    @property
    def regressed(self) -> bool:
        return self.comparison is not None and not self.comparison.passed

    @property
    def passed(self) -> bool:
        return (not self.failed_test and not self.errors and not self.limit_failures
                and not self.regressed)

    def failure_text(self) -> str:
        parts = list(self.errors)
        if self.limit_failures:
            parts.append("performance limits missed:\n  " + "\n  ".join(self.limit_failures))
        if self.regressed and self.comparison is not None:
            names = ", ".join(r.metric for r in self.comparison.regressions)
            parts.append(f"regression against the baseline ({names}):\n{self.comparison.table()}")
        parts.extend(self.messages)
        return "\n\n".join(parts)


def compare_entry(
    result: PerfResult,
    entry: BaselineEntry | None,
    tolerances: Mapping[str, float],
    *,
    compare: Callable[..., Any] | None = None,
) -> tuple[str, Comparison | None, list[str]]:
    """(status, comparison, messages) for a result against its stored entry."""
    if entry is None:
        return "missing", None, ["no baseline for this test on this hardware"]
    stale = entry.stale_reasons(result.engine, result.workload)
    if stale:
        return "stale", None, [
            "baseline is stale (measured with another config): " + "; ".join(stale)
            + " - re-record it with --llmperf-update-baselines"
        ]
    current = result.metric_values()
    if result.device == "cpu":
        # vLLM's CPU backend sizes its KV cache from the RAM free at start, so the KV
        # capacity and the process's RSS follow the machine's state, not the code
        # (+15% and +7.5% between two runs of one config on the same machine).
        current = {k: v for k, v in current.items() if k not in CPU_UNGATED}
    baseline = entry.metric_values()
    comparison = None
    if compare is not None:
        comparison = compare(current=current, baseline=baseline, tolerances=dict(tolerances))
    if comparison is None:
        comparison = compare_to_baseline(current, baseline, tolerances=tolerances)
    messages = []
    if entry.vllm_version and result.vllm_version and entry.vllm_version != result.vllm_version:
        messages.append(f"baseline vLLM {entry.vllm_version}, now {result.vllm_version}")
    return "compared", comparison, messages
