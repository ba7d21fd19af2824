"""How much one metric moves between engine starts on this runner.

A perf test's trials share one engine start, so their spread says nothing about the
offset a fresh start brings (graph capture, memory layout, clocks). That between-start
spread is what a regression gate must clear. It is estimated here from the per-start
medians a baseline stores (``--llmperf-baseline-starts N``), in log space so that it
is a relative spread comparable across metrics and tests:

* the test's own starts, when it has at least ``MIN_OWN_DF + 1`` of them;
* else pooled over every test of the baseline file (the same runner measured them in
  the same session): ``sum((k_i - 1) s_i**2) / sum(k_i - 1)``, itself pooled with the
  constant below while it has fewer than ``MIN_OWN_DF`` degrees of freedom (one
  difference of two starts is too thin a sample on its own: Student's t with one
  degree of freedom needs a 32x standard error to be 99% sure);
* else the metric's constant ``noise_floor`` from ``metrics.py`` (one H100 config):
  it is the largest drift seen between two starts, about two standard deviations of
  a single start, so half of it serves as the standard deviation, with
  ``FALLBACK_DF`` degrees of freedom; the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .metrics import METRICS

# A test's own starts are used alone from 3 starts (2 degrees of freedom) on.
MIN_OWN_DF = 2
# The constants are one config's observed drift, not a sample of this runner: they
# weigh like a handful of starts, so in-run data can still outvote them.
FALLBACK_DF = 4


@dataclass(frozen=True)
class NoiseEstimate:
    """Between-start standard deviation of log(value) for one metric, with its support.

    ``source`` is ``"test"`` (this test's starts), ``"file"`` (pooled over the baseline
    file's tests) or ``"constant"`` (metrics.py); ``detail`` says it in words.
    """

    metric: str
    sigma: float
    df: int
    source: str
    detail: str

    @property
    def learned(self) -> bool:
        return self.source != "constant"


def log_start_values(start_medians: Sequence[float]) -> np.ndarray:
    """Per-start medians as logs; values must be positive and finite."""
    arr = np.asarray([float(v) for v in start_medians], dtype=float)
    if arr.size and not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"per-start medians must be positive and finite, got {arr.tolist()}")
    return np.log(arr)


def _sum_squares(start_medians: Sequence[float]) -> tuple[float, int]:
    """(sum of squared deviations of the logs, degrees of freedom)."""
    logs = log_start_values(start_medians)
    if logs.size < 2:
        return 0.0, 0
    return float(np.sum((logs - logs.mean()) ** 2)), int(logs.size - 1)


def fallback_noise(metric: str) -> NoiseEstimate:
    floor = METRICS[metric].noise_floor
    sigma = math.log1p(floor) / 2.0
    return NoiseEstimate(metric, sigma, FALLBACK_DF, "constant",
                         f"constant {floor:.1%} from metrics.py (no per-start data on this runner)")


def estimate_noise(
    metric: str,
    own: Sequence[float] | None,
    others: Iterable[Sequence[float]] = (),
    *,
    min_own_df: int = MIN_OWN_DF,
) -> NoiseEstimate:
    """The between-start spread of ``metric`` from per-start medians.

    ``own``: this test's per-start medians on this runner (or None); ``others``: those
    of the other tests of the same baseline file, used when ``own`` is too short.
    """
    ss, df = _sum_squares(own or ())
    if df >= min_own_df:
        return NoiseEstimate(metric, math.sqrt(ss / df), df, "test",
                             f"{df + 1} engine starts of this test")
    tests = 1 if df else 0
    for medians in others:
        s, d = _sum_squares(medians)
        if d:
            ss, df, tests = ss + s, df + d, tests + 1
    if df >= min_own_df:
        return NoiseEstimate(metric, math.sqrt(ss / df), df, "file",
                             f"pooled over {tests} test(s) of the baseline file ({df} df)")
    if df >= 1:
        prior = fallback_noise(metric)
        total = df + prior.df
        return NoiseEstimate(metric, math.sqrt((ss + prior.df * prior.sigma**2) / total), total,
                             "file", f"{tests} test(s) of the baseline file ({df} df) pooled "
                                     f"with the constant noise floor ({prior.df} df)")
    return fallback_noise(metric)


def estimate_all(
    per_start: Mapping[str, Sequence[float]],
    others: Sequence[Mapping[str, Sequence[float]]] = (),
    metrics: Iterable[str] | None = None,
) -> dict[str, NoiseEstimate]:
    """``estimate_noise`` for every metric (default: every catalogued one)."""
    names = list(metrics) if metrics is not None else list(METRICS)
    return {
        name: estimate_noise(name, per_start.get(name),
                             [o[name] for o in others if name in o])
        for name in names
    }
