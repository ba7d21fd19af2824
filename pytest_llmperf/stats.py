"""Robust statistics for a handful of trials: medians, MAD and a bootstrap ratio CI.

The bootstrap is scipy.stats.bootstrap (percentile method, each side resampled on its
own); numpy gives the medians.

A perf test yields 3-10 trials per metric, and one slow trial (a GC pause, a noisy
neighbour) is common. Medians and the median absolute deviation ignore that one
trial where a mean and a standard deviation would not, and a percentile bootstrap
needs no normality assumption, which a sample of five cannot justify anyway.

Every function rejects empty input and non-finite values, since a NaN would
silently poison a median; the ratio-based ones also reject values <= 0, because a
ratio of a non-positive throughput or latency means the measurement is broken.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]


def _as_array(values: Sequence[float], what: str, *, positive: bool) -> FloatArray:
    """Validate ``values`` and return them as a 1-D float array; the error names ``what``."""
    try:
        arr = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: values must be numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a flat sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what}: empty sequence; need at least one value")
    if not np.all(np.isfinite(arr)):
        bad = [float(v) for v in arr[~np.isfinite(arr)]]
        raise ValueError(f"{what}: non-finite values {bad}")
    if positive and not np.all(arr > 0):
        bad = [float(v) for v in arr[arr <= 0]]
        raise ValueError(f"{what}: non-positive values {bad}; ratios need values > 0")
    return arr


def median(values: Sequence[float]) -> float:
    """Median of the trials: robust to the one trial a disturbance slowed down."""
    return float(np.median(_as_array(values, "values", positive=False)))


def mad(values: Sequence[float]) -> float:
    """Median absolute deviation from the median (unscaled, no 1.4826 normal factor)."""
    arr = _as_array(values, "values", positive=False)
    return float(np.median(np.abs(arr - np.median(arr))))


def relative_spread(values: Sequence[float]) -> float:
    """MAD / median: trial-to-trial noise as a fraction, comparable across metrics.

    One value has no spread, so it is 0 (the caller decides whether one trial is enough).
    """
    arr = _as_array(values, "values", positive=True)
    if arr.size == 1:
        return 0.0
    med = np.median(arr)
    return float(np.median(np.abs(arr - med)) / med)


def bootstrap_ratio_ci(
    current: Sequence[float],
    baseline: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap CI of ``median(current) / median(baseline)``.

    The two sides come from different engine starts, so each is resampled on its own
    (no pairing). A fixed ``seed`` makes the verdict reproducible: re-running the gate on
    the same stored numbers must never flip it. With one value on both sides there is
    nothing to resample and the interval collapses to the point ratio.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r}: must be in (0, 1), e.g. 0.95")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)):
        raise ValueError(f"n_resamples={n_resamples!r}: must be an integer")
    if n_resamples < 1:
        raise ValueError(f"n_resamples={n_resamples!r}: must be at least 1")
    cur = _as_array(current, "current", positive=True)
    base = _as_array(baseline, "baseline", positive=True)
    if cur.size == 1 and base.size == 1:
        point = float(cur[0] / base[0])
        return point, point

    import warnings

    from scipy import stats as sps  # deferred: only the gate needs it

    def ratio(cur_s: FloatArray, base_s: FloatArray, axis: int = -1) -> FloatArray:
        return np.asarray(np.median(cur_s, axis=axis) / np.median(base_s, axis=axis))

    # scipy resamples each side on its own (the sides are not paired); a side with one
    # value has nothing to resample and enters as a constant.
    statistic: Callable[..., Any]
    if cur.size == 1:
        data: tuple[FloatArray, ...] = (base,)
        statistic = lambda b, axis=-1: cur[0] / np.median(b, axis=axis)  # noqa: E731
    elif base.size == 1:
        data = (cur,)
        statistic = lambda c, axis=-1: np.median(c, axis=axis) / base[0]  # noqa: E731
    else:
        data, statistic = (cur, base), ratio
    with warnings.catch_warnings():
        # Identical values make a degenerate distribution: the interval is the point.
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        res = sps.bootstrap(data, statistic, n_resamples=int(n_resamples),
                            confidence_level=confidence, method="percentile",
                            vectorized=True, rng=np.random.default_rng(seed))
    lo, hi = res.confidence_interval
    return float(lo), float(hi)
