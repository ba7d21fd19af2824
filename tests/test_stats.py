from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmperf.stats import bootstrap_ratio_ci, mad, median, relative_spread

FAST = settings(max_examples=75, deadline=None)

positive = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(positive, min_size=1, max_size=8)


# --- median / mad / relative_spread -------------------------------------------------


def test_median_odd_and_even() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert median([7]) == 7.0


def test_median_ignores_one_outlier() -> None:
    assert median([100.0, 101.0, 99.0, 100.5, 10.0]) == 100.0


def test_mad() -> None:
    # deviations from the median 2: 1, 1, 0, 2, 7 -> median 1
    assert mad([1.0, 3.0, 2.0, 4.0, 9.0]) == 1.0
    assert mad([5.0]) == 0.0
    assert mad([2.0, 2.0, 2.0]) == 0.0


def test_relative_spread() -> None:
    assert relative_spread([42.0]) == 0.0
    assert relative_spread([90.0, 100.0, 110.0]) == pytest.approx(0.1)


@FAST
@given(samples, st.floats(min_value=1e-2, max_value=1e2))
def test_relative_spread_is_scale_free(values: list[float], scale: float) -> None:
    scaled = [v * scale for v in values]
    assert relative_spread(scaled) == pytest.approx(relative_spread(values), rel=1e-9, abs=1e-12)


# --- input validation -----------------------------------------------------------------


@pytest.mark.parametrize("func", [median, mad, relative_spread])
def test_empty_rejected(func) -> None:
    with pytest.raises(ValueError, match="empty"):
        func([])


@pytest.mark.parametrize("func", [median, mad, relative_spread])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_rejected(func, bad: float) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        func([1.0, bad, 2.0])


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_rejected_for_ratios(bad: float) -> None:
    with pytest.raises(ValueError, match="non-positive"):
        relative_spread([1.0, bad])
    with pytest.raises(ValueError, match="current: non-positive"):
        bootstrap_ratio_ci([1.0, bad], [1.0])
    with pytest.raises(ValueError, match="baseline: non-positive"):
        bootstrap_ratio_ci([1.0], [bad, 1.0])


def test_bootstrap_names_the_bad_side() -> None:
    with pytest.raises(ValueError, match="current: empty"):
        bootstrap_ratio_ci([], [1.0])
    with pytest.raises(ValueError, match="baseline: empty"):
        bootstrap_ratio_ci([1.0], [])
    with pytest.raises(ValueError, match="baseline: non-finite"):
        bootstrap_ratio_ci([1.0], [math.nan])


def test_non_numbers_and_nested_rejected() -> None:
    with pytest.raises(ValueError, match="numbers"):
        median(["fast"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="flat"):
        median([[1.0, 2.0]])  # type: ignore[list-item]


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5])
def test_bad_confidence_rejected(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ratio_ci([1.0, 2.0], [1.0, 2.0], confidence=confidence)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_n_resamples_rejected(n: object) -> None:
    with pytest.raises(ValueError, match="n_resamples"):
        bootstrap_ratio_ci([1.0, 2.0], [1.0, 2.0], n_resamples=n)  # type: ignore[arg-type]


# --- bootstrap_ratio_ci -----------------------------------------------------------------


def test_single_values_give_the_point_ratio() -> None:
    assert bootstrap_ratio_ci([3.0], [2.0]) == (1.5, 1.5)


def test_generators_and_arrays_accepted() -> None:
    values = [1.0, 1.1, 0.9]
    expected = bootstrap_ratio_ci(values, values)
    assert bootstrap_ratio_ci(np.array(values), (v for v in values)) == expected  # type: ignore[arg-type]


@FAST
@given(samples, samples, st.floats(min_value=0.5, max_value=0.99), st.integers(0, 2**32))
def test_ci_contains_point_ratio(
    current: list[float], baseline: list[float], confidence: float, seed: int
) -> None:
    # Each side's bootstrap median is <= (and >=) its sample median with probability
    # >= 1/4, so >= 1/16 of the ratio resamples lie on each side of the point ratio; far
    # more than the (1 - confidence) / 2 <= 1/4 % tail the percentile cuts off.
    lo, hi = bootstrap_ratio_ci(current, baseline, confidence=confidence, seed=seed)
    point = median(current) / median(baseline)
    eps = 1e-12  # a bootstrap percentile equal to the point may differ from it by an ulp
    assert lo <= point * (1 + eps) and point <= hi * (1 + eps)


@FAST
@given(samples, samples, st.integers(0, 2**32))
def test_bootstrap_is_deterministic_for_a_seed(
    current: list[float], baseline: list[float], seed: int
) -> None:
    first = bootstrap_ratio_ci(current, baseline, seed=seed)
    assert bootstrap_ratio_ci(list(current), list(baseline), seed=seed) == first


@FAST
@given(samples, samples, st.integers(0, 2**32))
def test_higher_confidence_gives_a_wider_interval(
    current: list[float], baseline: list[float], seed: int
) -> None:
    lo90, hi90 = bootstrap_ratio_ci(current, baseline, confidence=0.90, seed=seed)
    lo99, hi99 = bootstrap_ratio_ci(current, baseline, confidence=0.99, seed=seed)
    eps = 1e-12  # scipy interpolates each percentile on its own: equal ones may differ by an ulp
    assert lo99 <= lo90 * (1 + eps) and lo90 <= hi90 and hi90 <= hi99 * (1 + eps)


@FAST
@given(samples, samples)
def test_ci_lies_within_the_extreme_ratios(current: list[float], baseline: list[float]) -> None:
    lo, hi = bootstrap_ratio_ci(current, baseline)
    assert min(current) / max(baseline) * (1 - 1e-12) <= lo
    assert hi <= max(current) / min(baseline) * (1 + 1e-12)


def test_seed_matters() -> None:
    # With few resamples the interpolated percentiles depend on which were drawn.
    cur = [1.0, 1.3, 0.8, 1.1, 0.95, 1.04, 0.99]
    base = [1.0, 1.2, 0.9, 1.05, 0.85, 0.97, 1.01]
    results = {bootstrap_ratio_ci(cur, base, n_resamples=50, seed=s) for s in range(5)}
    assert len(results) > 1


def test_bootstrap_is_fast() -> None:
    cur = [101.0, 99.5, 100.2, 100.9, 98.7]
    base = [100.0, 100.4, 99.1, 101.2, 100.6]
    bootstrap_ratio_ci(cur, base)  # warm up numpy
    best = math.inf
    for _ in range(5):
        start = time.perf_counter()
        bootstrap_ratio_ci(cur, base, n_resamples=2000)
        best = min(best, time.perf_counter() - start)
    assert best < 0.010, f"2000 resamples took {best * 1e3:.1f} ms"
