from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmperf.metrics import METRICS
from pytest_llmperf.regression import (
    Comparison,
    MetricComparison,
    compare_to_baseline,
    resolve_tolerances,
)

FAST = settings(max_examples=60, deadline=None)

ALL = list(METRICS)
GATED = [name for name, spec in METRICS.items() if spec.gated]

# Trials within +-0.5% of a centre: the bootstrap ratio then stays within a factor
# K = 1.005 / 0.995 (~1.01005) of the true scale, whichever trials it resamples.
SPREAD = 0.005
centres = st.floats(min_value=0.01, max_value=1e6)
offsets = st.lists(st.floats(min_value=-SPREAD, max_value=SPREAD), min_size=1, max_size=7)
# Extra margin beyond tolerance + noise_floor. Worst case (derivation in
# _scaled_pair): the bound needs margin > (K - 1) * (1 + max(tolerance, noise_floor)),
# at most 0.01005 * 1.6 ~= 0.0161 for the tolerances drawn here; 0.02 clears it.
margins = st.floats(min_value=0.02, max_value=0.1)
tolerances = st.floats(min_value=0.005, max_value=0.5)


def _scaled_pair(
    centre: float, base_off: list[float], cur_off: list[float], factor: float
) -> tuple[list[float], list[float]]:
    """Baseline trials around ``centre``, current trials around ``centre * factor``.

    Every resampled ratio lies in [factor / K, factor * K]. With factor = 1 -+ d and
    d = tolerance + noise_floor + margin, both the point worsening and the optimistic
    CI end clear max(tolerance, noise_floor) as long as margin > (K - 1)(1 + tol/noise).
    """
    baseline = [centre * (1 + o) for o in base_off]
    current = [centre * factor * (1 + o) for o in cur_off]
    return current, baseline


# --- resolve_tolerances ---------------------------------------------------------------


def test_defaults_come_from_the_catalogue() -> None:
    assert resolve_tolerances() == {name: spec.tolerance for name, spec in METRICS.items()}


def test_precedence() -> None:
    resolved = resolve_tolerances(
        marker_tolerances={"output_tok_s": 0.11},
        marker_tolerance=0.12,
        option_tolerances={"output_tok_s": 0.13, "ttft_p50_ms": 0.14},
        option_tolerance=0.15,
    )
    assert resolved["output_tok_s"] == 0.11  # marker per-metric beats everything
    assert resolved["ttft_p50_ms"] == 0.12  # marker global beats option per-metric
    assert set(resolved) == set(METRICS)


def test_option_per_metric_beats_option_global() -> None:
    resolved = resolve_tolerances(option_tolerances={"ttft_p50_ms": 0.14}, option_tolerance=0.15)
    assert resolved["ttft_p50_ms"] == 0.14
    assert resolved["output_tok_s"] == 0.15


def test_option_global_beats_default_and_marker_per_metric_only_touches_its_metric() -> None:
    resolved = resolve_tolerances(marker_tolerances={"tpot_p50_ms": 0.01}, option_tolerance=0.2)
    assert resolved["tpot_p50_ms"] == 0.01
    assert resolved["itl_p50_ms"] == 0.2


def test_unknown_tolerance_metric_rejected() -> None:
    with pytest.raises(KeyError, match="tok_per_s"):
        resolve_tolerances(option_tolerances={"tok_per_s": 0.1})


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_bad_tolerance_value_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        resolve_tolerances(option_tolerance=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="output_tok_s"):
        resolve_tolerances(marker_tolerances={"output_tok_s": bad})  # type: ignore[dict-item]


# --- the decision rule: properties ------------------------------------------------------


@FAST
@given(st.lists(st.floats(min_value=1e-3, max_value=1e6), min_size=1, max_size=7), st.data())
def test_identical_samples_never_regress_or_improve(
    values: list[float], data: st.DataObject
) -> None:
    # Any spread at all: the point change of identical samples is zero, never beyond a
    # tolerance, whatever the bootstrap says.
    shuffled = data.draw(st.permutations(values))
    current = {name: shuffled for name in ALL}
    baseline = {name: values for name in ALL}
    result = compare_to_baseline(current, baseline, metrics=ALL)
    assert len(result.rows) == len(ALL)
    assert all(row.verdict == "ok" for row in result.rows)
    assert result.passed and not result.improvements
    assert all(row.change == 0.0 for row in result.rows)


@FAST
@given(st.sampled_from(ALL), centres, offsets, offsets, margins, tolerances, st.integers(0, 2**16))
def test_scaling_beyond_tolerance_and_noise_in_the_bad_direction_regresses(
    metric: str,
    centre: float,
    base_off: list[float],
    cur_off: list[float],
    margin: float,
    tolerance: float,
    seed: int,
) -> None:
    spec = METRICS[metric]
    d = tolerance + spec.noise_floor + margin
    factor = 1 - d if spec.direction == "higher" else 1 + d
    current, baseline = _scaled_pair(centre, base_off, cur_off, factor)
    result = compare_to_baseline(
        {metric: current},
        {metric: baseline},
        tolerances={metric: tolerance},
        metrics=[metric],
        seed=seed,
    )
    (row,) = result.rows
    assert row.verdict == "regression", row
    assert not result.passed
    assert result.regressions == (row,)


@FAST
@given(st.sampled_from(ALL), centres, offsets, offsets, margins, tolerances, st.integers(0, 2**16))
def test_scaling_in_the_good_direction_improves_and_never_regresses(
    metric: str,
    centre: float,
    base_off: list[float],
    cur_off: list[float],
    margin: float,
    tolerance: float,
    seed: int,
) -> None:
    spec = METRICS[metric]
    d = tolerance + spec.noise_floor + margin  # < 0.91, so a latency factor stays > 0
    factor = 1 + d if spec.direction == "higher" else 1 - d
    current, baseline = _scaled_pair(centre, base_off, cur_off, factor)
    result = compare_to_baseline(
        {metric: current},
        {metric: baseline},
        tolerances={metric: tolerance},
        metrics=[metric],
        seed=seed,
    )
    (row,) = result.rows
    assert row.verdict == "improvement", row
    assert result.passed
    assert result.improvements == (row,)


@FAST
@given(
    st.sampled_from(ALL),
    st.lists(st.floats(min_value=1e-3, max_value=1e6), min_size=1, max_size=7),
    st.floats(min_value=1.0, max_value=1.5),
)
def test_good_direction_never_regresses_for_any_spread(
    metric: str, base: list[float], gain: float
) -> None:
    # Every baseline trial moved in the good direction by `gain`: however wide the spread
    # (and so the CI), the point change is not a worsening, so it can never regress.
    spec = METRICS[metric]
    factor = gain if spec.direction == "higher" else 1 / gain
    current = [v * factor for v in base]
    result = compare_to_baseline({metric: current}, {metric: base}, metrics=[metric])
    (row,) = result.rows
    assert row.verdict != "regression"
    assert row.worse_low <= row.worsening <= row.worse_high


@FAST
@given(
    st.sampled_from(ALL),
    st.lists(st.floats(min_value=1e-3, max_value=1e6), min_size=1, max_size=7),
    st.lists(st.floats(min_value=1e-3, max_value=1e6), min_size=1, max_size=7),
    st.integers(0, 2**16),
)
def test_worsening_ci_contains_point_and_is_deterministic(
    metric: str, current: list[float], baseline: list[float], seed: int
) -> None:
    first = compare_to_baseline({metric: current}, {metric: baseline}, metrics=[metric], seed=seed)
    (row,) = first.rows
    assert row.worse_low <= row.worsening <= row.worse_high
    again = compare_to_baseline({metric: current}, {metric: baseline}, metrics=[metric], seed=seed)
    assert again == first


# --- the decision rule: examples -------------------------------------------------------


def test_noisy_run_with_a_bad_median_is_not_a_regression() -> None:
    # Median throughput is 4% down (beyond the 3% tolerance), but one trial is 10% up:
    # the CI's optimistic end is an improvement, so this cannot be called a regression.
    result = compare_to_baseline(
        {"output_tok_s": [800.0, 960.0, 1100.0]}, {"output_tok_s": [1000.0, 1000.0, 1000.0]}
    )
    (row,) = result.rows
    assert row.change == pytest.approx(-0.04)
    assert row.worse_low < row.noise_floor
    assert row.verdict == "ok"


def test_clean_slowdown_with_three_trials_regresses() -> None:
    result = compare_to_baseline(
        {"output_tok_s": [955.0, 960.0, 950.0]}, {"output_tok_s": [1000.0, 1005.0, 998.0]}
    )
    (row,) = result.rows
    assert row.baseline == 1000.0 and row.current == 955.0
    assert row.change == pytest.approx(-0.045)
    assert row.worsening == pytest.approx(0.045)
    assert row.verdict == "regression"


def test_single_values_gate_on_max_of_tolerance_and_noise() -> None:
    # peak_mem_gib: tolerance 3%, noise floor 1%, one value per side.
    base = {"peak_mem_gib": [10.0]}
    assert compare_to_baseline({"peak_mem_gib": [10.2]}, base).rows[0].verdict == "ok"
    assert compare_to_baseline({"peak_mem_gib": [10.4]}, base).rows[0].verdict == "regression"
    assert compare_to_baseline({"peak_mem_gib": [9.6]}, base).rows[0].verdict == "improvement"
    # a tolerance below the noise floor: the noise floor still protects
    loose = compare_to_baseline({"peak_mem_gib": [10.05]}, base, tolerances={"peak_mem_gib": 0.001})
    assert loose.rows[0].verdict == "ok"


def test_directions() -> None:
    cur = {"output_tok_s": [1100.0], "tpot_p50_ms": [11.0]}
    base = {"output_tok_s": [1000.0], "tpot_p50_ms": [10.0]}
    rows = {r.metric: r for r in compare_to_baseline(cur, base).rows}
    assert rows["output_tok_s"].verdict == "improvement"
    assert rows["output_tok_s"].worsening == pytest.approx(-0.1)
    assert rows["tpot_p50_ms"].verdict == "regression"
    assert rows["tpot_p50_ms"].worsening == pytest.approx(0.1)
    assert rows["tpot_p50_ms"].threshold == pytest.approx(0.02)
    assert rows["output_tok_s"].threshold == pytest.approx(-METRICS["output_tok_s"].tolerance)


# --- compare_to_baseline: selection and errors ------------------------------------------


def _values(scale: float = 1.0) -> dict[str, list[float]]:
    return {name: [100.0 * scale, 101.0 * scale, 99.0 * scale] for name in METRICS}


def test_only_gated_metrics_by_default() -> None:
    result = compare_to_baseline(_values(), _values())
    assert [r.metric for r in result.rows] == GATED
    assert "start_time_s" not in GATED


def test_listed_ungated_metric_is_added_to_the_gated_ones() -> None:
    result = compare_to_baseline(_values(), _values(), metrics=["start_time_s"])
    expected = [m for m in ALL if m in GATED or m == "start_time_s"]
    assert [r.metric for r in result.rows] == expected  # catalogue order
    assert "start_time_s" not in GATED


def test_metric_on_one_side_only_is_skipped() -> None:
    current = {"output_tok_s": [1.0], "kv_cache_tokens": [5.0]}
    baseline = {"output_tok_s": [1.0], "ttft_p50_ms": [5.0], "not_a_metric": [1.0]}
    result = compare_to_baseline(current, baseline)
    assert [r.metric for r in result.rows] == ["output_tok_s"]


def test_unknown_listed_metric_rejected_by_name() -> None:
    with pytest.raises(KeyError, match="tok_s_out.*bogus"):
        compare_to_baseline(_values(), _values(), metrics=["output_tok_s", "tok_s_out", "bogus"])


def test_unknown_tolerance_metric_rejected_by_compare() -> None:
    with pytest.raises(KeyError, match="ttft_ms"):
        compare_to_baseline(_values(), _values(), tolerances={"ttft_ms": 0.1})


def test_missing_tolerances_fall_back_to_defaults() -> None:
    result = compare_to_baseline(_values(), _values(), tolerances={"output_tok_s": 0.2})
    tol = {r.metric: r.tolerance for r in result.rows}
    assert tol["output_tok_s"] == 0.2
    assert tol["ttft_p50_ms"] == METRICS["ttft_p50_ms"].tolerance


def test_tolerance_changes_the_verdict() -> None:
    cur, base = {"output_tok_s": [950.0]}, {"output_tok_s": [1000.0]}
    assert not compare_to_baseline(cur, base).passed
    assert compare_to_baseline(cur, base, tolerances={"output_tok_s": 0.06}).passed


@pytest.mark.parametrize(
    ("current", "baseline", "match"),
    [
        ([], [1.0], "'ttft_p50_ms'.*current: empty"),
        ([1.0], [float("nan")], "'ttft_p50_ms'.*baseline: non-finite"),
        ([0.0, 1.0], [1.0], "'ttft_p50_ms'.*current: non-positive"),
    ],
)
def test_bad_values_name_the_metric_and_side(
    current: list[float], baseline: list[float], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        compare_to_baseline({"ttft_p50_ms": current}, {"ttft_p50_ms": baseline})


def test_results_are_frozen() -> None:
    result = compare_to_baseline(_values(), _values())
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rows[0].verdict = "regression"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.rows = ()  # type: ignore[misc]


# --- table --------------------------------------------------------------------------------


def test_table_text() -> None:
    current = {
        "output_tok_s": [955.0, 960.0, 950.0],
        "tpot_p50_ms": [6.0, 6.01, 5.99],
        "ttft_p50_ms": [40.0, 41.0, 40.5],
    }
    baseline = {
        "output_tok_s": [1000.0, 1005.0, 998.0],
        "tpot_p50_ms": [7.0, 7.01, 6.99],
        "ttft_p50_ms": [40.0, 40.2, 40.1],
    }
    text = compare_to_baseline(current, baseline).table()
    lines = text.splitlines()
    assert lines[0].split() == ["metric", "baseline", "now", "change", "threshold", "verdict"]
    body = {line.split()[0]: line.split() for line in lines[2:]}
    assert body["output_tok_s"] == [
        "output_tok_s",
        "1000.0",
        "955.0",
        "-4.5%",
        f"-{METRICS['output_tok_s'].tolerance:.1%}",
        "REGRESSION",
    ]
    assert body["tpot_p50_ms"] == ["tpot_p50_ms", "7.000", "6.000", "-14.3%", "+2.0%", "IMPROVED"]
    assert body["ttft_p50_ms"] == ["ttft_p50_ms", "40.100", "40.500", "+1.0%", "+25.0%", "ok"]
    # numeric columns are right-aligned: they end where the header's (and the rule's) end
    ends = {tuple(m.end() for m in re.finditer(r"\S+", line))[1:5] for line in lines}
    assert len(ends) == 1


def test_table_of_nothing_is_just_the_header() -> None:
    text = Comparison(()).table()
    assert text.splitlines()[0].startswith("metric")
    assert len(text.splitlines()) == 2


def test_table_formats_units_and_no_negative_zero() -> None:
    row = MetricComparison(
        metric="kv_cache_tokens",
        unit="tokens",
        direction="higher",
        baseline=120000.0,
        current=119999.99,
        change=-1e-9,
        worse_low=0.0,
        worse_high=0.0,
        tolerance=0.02,
        noise_floor=0.005,
        verdict="ok",
    )
    line = Comparison((row,)).table().splitlines()[2]
    assert line.split() == ["kv_cache_tokens", "120000", "120000", "+0.0%", "-2.0%", "ok"]


# --- plumbing from PerfResult.metric_values() -----------------------------------------------


def test_compare_perf_results() -> None:
    from pytest_llmperf.config import EngineConfig, Workload
    from pytest_llmperf.metrics import Distribution
    from pytest_llmperf.results import MemoryResult, PerfResult, TrialResult

    def result(elapsed: list[float], tpot: float) -> PerfResult:
        trials = tuple(
            TrialResult(
                elapsed_s=e,
                num_requests=8,
                input_tokens=1024,
                output_tokens=1024,
                ttft_ms=Distribution.from_samples([20.0, 22.0]),
                tpot_ms=Distribution.from_samples([tpot, tpot * 1.001]),
                itl_ms=Distribution.from_samples([tpot, tpot * 1.001]),
                e2e_ms=Distribution.from_samples([e * 1000.0]),
            )
            for e in elapsed
        )
        return PerfResult(
            engine=EngineConfig(model="tiny"),
            workload=Workload(batch=8),
            trials=trials,
            memory=MemoryResult(kind="cpu", peak_process_gib=3.0),
            start_time_s=30.0,
            device="cpu",
        )

    base = result([1.0, 1.002, 0.999], tpot=7.0)
    slow = result([1.1, 1.101, 1.099], tpot=7.7)
    same = compare_to_baseline(base.metric_values(), base.metric_values())
    assert same.passed and not same.improvements
    worse = compare_to_baseline(slow.metric_values(), base.metric_values())
    regressed = {r.metric for r in worse.regressions}
    assert {"output_tok_s", "total_tok_s", "requests_s", "tpot_p50_ms", "e2e_p50_ms"} <= regressed
    assert "peak_mem_gib" not in regressed and "start_time_s" not in regressed
