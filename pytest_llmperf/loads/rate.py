"""Open loop at a request rate: Poisson arrivals, or gamma ones with a burstiness factor.

Inter-arrival times are gamma-distributed with shape ``burstiness`` and mean
``1 / rate`` (as ``vllm bench serve --burstiness``): 1 is a Poisson process, below 1
burstier, above 1 more even. Arrivals do not wait for replies, so a rate the server
cannot sustain builds a queue; the stop rule ends such a run as over-saturated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..client.records import RequestRecord
from .base import Job, Send, StopRule, open_loop


def arrival_times(n: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> list[float]:
    """Offsets (seconds from the start) of ``n`` arrivals; the first one at 0."""
    if rate <= 0 or burstiness <= 0:
        raise ValueError(f"rate={rate} and burstiness={burstiness} must be positive")
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=max(n - 1, 0))
    return [0.0, *np.cumsum(gaps).tolist()][:n]


@dataclass(frozen=True)
class Rate:
    rate: float
    burstiness: float = 1.0
    max_concurrency: int | None = None
    seed: int = 0
    name: str = "rate"

    def arrivals(self, n: int) -> list[float]:
        return arrival_times(n, self.rate, self.burstiness, self.seed)

    async def drive(self, jobs: Sequence[Job], send: Send, stop: StopRule) -> list[RequestRecord]:
        return await open_loop(jobs, self.arrivals(len(jobs)), send, stop, self.max_concurrency)

    def label(self) -> str:
        b = "" if self.burstiness == 1.0 else f" b{self.burstiness:g}"
        return f"r{self.rate:g}/s{b}"


def exponential_ks_pvalue(gaps: list[float], rate: float) -> float:
    """p-value of a one-sample Kolmogorov-Smirnov test (scipy's exact distribution for
    small samples) that ``gaps`` are exponential with ``rate``; NaN for no gaps."""
    if not gaps:
        return float("nan")
    from scipy import stats

    return float(stats.kstest(np.asarray(gaps, dtype=float), "expon", args=(0.0, 1.0 / rate)).pvalue)
