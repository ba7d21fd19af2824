"""Typed results of a measured workload, and the per-trial values the gate compares."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .config import EngineConfig, Workload
from .metrics import Distribution


@dataclass(frozen=True)
class TrialResult:
    """One timed run of the workload: every prompt submitted, every token back."""

    elapsed_s: float
    num_requests: int
    input_tokens: int
    output_tokens: int
    ttft_ms: Distribution
    tpot_ms: Distribution
    itl_ms: Distribution
    e2e_ms: Distribution
    disturbances: tuple[str, ...] = ()
    remeasured: bool = False
    # The served path (backend="server"); defaults describe an offline trial.
    failed_requests: int = 0
    bursty_requests: int = 0
    good_requests: int | None = None  # requests meeting every SLO; None without SLOs
    ntpot_ms: Distribution | None = None  # E2EL / output tokens, per request
    errors: tuple[str, ...] = ()  # the first distinct request errors, quoted
    server_metrics: dict[str, float] = field(default_factory=dict)  # Prometheus deltas
    stopped: str | None = None  # why a run ended early (over-saturated), else None

    @property
    def output_tok_s(self) -> float:
        return self.output_tokens / self.elapsed_s

    @property
    def total_tok_s(self) -> float:
        return (self.input_tokens + self.output_tokens) / self.elapsed_s

    @property
    def requests_s(self) -> float:
        return self.num_requests / self.elapsed_s

    @property
    def goodput_req_s(self) -> float | None:
        """Requests per second that met every SLO (``vllm bench serve``'s goodput)."""
        return None if self.good_requests is None else self.good_requests / self.elapsed_s

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["disturbances"] = list(self.disturbances)
        data["errors"] = list(self.errors)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrialResult:
        d = dict(data)
        for key in ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms"):
            d[key] = Distribution.from_json(d[key])
        if d.get("ntpot_ms") is not None:
            d["ntpot_ms"] = Distribution.from_json(d["ntpot_ms"])
        d["disturbances"] = tuple(d.get("disturbances", ()))
        d["errors"] = tuple(d.get("errors", ()))
        return cls(**d)


@dataclass(frozen=True)
class MemoryResult:
    """Memory during the run and the KV-cache capacity vLLM reported.

    On a GPU, ``peak_device_gib`` is the whole device as NVML sees it and
    ``peak_process_gib`` the engine's own processes; on the CPU build both are RSS.
    """

    kind: str  # "gpu" or "cpu"
    peak_device_gib: float | None = None
    peak_process_gib: float | None = None
    weights_gib: float | None = None
    kv_cache_tokens: int | None = None
    max_concurrency: float | None = None
    predicted_kv_bytes_per_token: int | None = None
    kv_cache_gib: float | None = None

    @property
    def predicted_kv_cache_tokens(self) -> int | None:
        """Tokens the KV memory vLLM set aside should hold, by the card's shapes.

        Set beside ``kv_cache_tokens`` this checks the card: on an H100, 54.31 GiB
        at 131,072 B/token for Llama-3.1-8B predicts 444,907; vLLM reported 444,928.
        """
        if not self.predicted_kv_bytes_per_token or not self.kv_cache_gib:
            return None
        return int(self.kv_cache_gib * 2**30 / self.predicted_kv_bytes_per_token)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemoryResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class PerfResult:
    """All trials of one test, plus engine facts; what ``llmperf.run()`` returns."""

    engine: EngineConfig
    workload: Workload
    trials: tuple[TrialResult, ...]
    memory: MemoryResult
    start_time_s: float
    device: str
    vllm_version: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)
    # Change of vLLM's own counters over the run, warm-up included (engine_worker.ENGINE_COUNTERS).
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def preemptions(self) -> int | None:
        """Requests vLLM preempted (out of KV blocks) during the run; None if not reported."""
        value = self.counters.get("vllm:num_preemptions")
        return None if value is None else int(value)

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        queries = self.counters.get("vllm:prefix_cache_queries")
        if not queries:
            return None
        return self.counters.get("vllm:prefix_cache_hits", 0.0) / queries

    @property
    def spec_tokens_per_step(self) -> float | None:
        """Tokens a speculative step emits per sequence: 1 + accepted drafts / draft steps."""
        drafts = self.counters.get("vllm:spec_decode_num_drafts")
        if not drafts:
            return None
        return 1.0 + self.counters.get("vllm:spec_decode_num_accepted_tokens", 0.0) / drafts

    @property
    def spec_acceptance_rate(self) -> float | None:
        """Accepted draft tokens / proposed draft tokens (speculative decoding only)."""
        drafted = self.counters.get("vllm:spec_decode_num_draft_tokens")
        if not drafted:
            return None
        return self.counters.get("vllm:spec_decode_num_accepted_tokens", 0.0) / drafted
    # Doubts about the measurement itself (e.g. streams delivered in one burst), raised
    # as pytest warnings and listed in the summary.
    warnings: tuple[str, ...] = field(default_factory=tuple)

    # Pooled latency over every request of every trial.
    @property
    def ttft(self) -> Distribution:
        return _pool(self.trials, "ttft_ms")

    @property
    def tpot(self) -> Distribution:
        return _pool(self.trials, "tpot_ms")

    @property
    def itl(self) -> Distribution:
        return _pool(self.trials, "itl_ms")

    @property
    def e2e(self) -> Distribution:
        return _pool(self.trials, "e2e_ms")

    @property
    def output_tok_s(self) -> float:
        return statistics.median(t.output_tok_s for t in self.trials)

    @property
    def total_tok_s(self) -> float:
        return statistics.median(t.total_tok_s for t in self.trials)

    @property
    def requests_s(self) -> float:
        return statistics.median(t.requests_s for t in self.trials)

    @property
    def tok_s(self) -> float:
        """Shorthand for output tokens per second (what ``min_tok_s`` checks)."""
        return self.output_tok_s

    def metric_values(self) -> dict[str, list[float]]:
        """Per-trial value of every gated metric; run-wide figures appear once."""
        values: dict[str, list[float]] = {
            "output_tok_s": [t.output_tok_s for t in self.trials],
            "total_tok_s": [t.total_tok_s for t in self.trials],
            "requests_s": [t.requests_s for t in self.trials],
            "ttft_p50_ms": [t.ttft_ms.p50 for t in self.trials],
            "ttft_p99_ms": [t.ttft_ms.p99 for t in self.trials],
            "tpot_p50_ms": [t.tpot_ms.p50 for t in self.trials],
            "tpot_p99_ms": [t.tpot_ms.p99 for t in self.trials],
            "itl_p50_ms": [t.itl_ms.p50 for t in self.trials],
            "itl_p99_ms": [t.itl_ms.p99 for t in self.trials],
            "e2e_p50_ms": [t.e2e_ms.p50 for t in self.trials],
            "e2e_p99_ms": [t.e2e_ms.p99 for t in self.trials],
            "start_time_s": [self.start_time_s],
        }
        if self.trials and all(t.good_requests is not None for t in self.trials):
            values["goodput_req_s"] = [t.goodput_req_s or 0.0 for t in self.trials]
        if self.trials and all(t.ntpot_ms is not None for t in self.trials):
            values["ntpot_p50_ms"] = [t.ntpot_ms.p50 for t in self.trials if t.ntpot_ms]
        if self.memory.peak_process_gib is not None:
            values["peak_mem_gib"] = [self.memory.peak_process_gib]
        if self.memory.kv_cache_tokens is not None:
            values["kv_cache_tokens"] = [float(self.memory.kv_cache_tokens)]
        if self.preemptions is not None:
            values["preemptions"] = [float(self.preemptions)]
        return {k: v for k, v in values.items() if v and all(x == x for x in v)}

    def to_json(self) -> dict[str, Any]:
        return {
            "engine": self.engine.to_json(),
            "workload": self.workload.to_json(),
            "trials": [t.to_json() for t in self.trials],
            "memory": self.memory.to_json(),
            "start_time_s": self.start_time_s,
            "device": self.device,
            "vllm_version": self.vllm_version,
            "notes": list(self.notes),
            "counters": dict(self.counters),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PerfResult:
        return cls(
            engine=EngineConfig.from_json(data["engine"]),
            workload=Workload.from_json(data["workload"]),
            trials=tuple(TrialResult.from_json(t) for t in data["trials"]),
            memory=MemoryResult.from_json(data["memory"]),
            start_time_s=data["start_time_s"],
            device=data["device"],
            vllm_version=data.get("vllm_version", ""),
            notes=tuple(data.get("notes", ())),
            counters=dict(data.get("counters", {})),
            warnings=tuple(data.get("warnings", ())),
        )


def _pool(trials: tuple[TrialResult, ...], attr: str) -> Distribution:
    """Pool trial distributions: percentiles of the trial percentiles' median.

    Raw samples are not kept per trial (they can be 100k ITLs), so the pooled view
    takes the median across trials of each summary and the max of maxima.
    """
    dists = [getattr(t, attr) for t in trials if getattr(t, attr).count]
    if not dists:
        return Distribution.from_samples([])
    med = statistics.median
    return Distribution(
        count=sum(d.count for d in dists),
        mean=med(d.mean for d in dists),
        p50=med(d.p50 for d in dists),
        p90=med(d.p90 for d in dists),
        p95=med(d.p95 for d in dists),
        p99=med(d.p99 for d in dists),
        max=max(d.max for d in dists),
    )


def pool_starts(starts: Sequence[PerfResult], what: str = "baseline") -> PerfResult:
    """One result holding the trials of several engine starts of one workload (the
    first start's engine facts), e.g. a baseline recorded over those starts."""
    first = starts[0]
    if len(starts) == 1:
        return first
    return replace(
        first,
        trials=tuple(t for r in starts for t in r.trials),
        notes=(*first.notes, f"{what} pooled over {len(starts)} engine starts"),
    )
