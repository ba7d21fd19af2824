"""Start-level gate: runner noise, paired and stored comparisons, MDE, three states."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmperf.gate import settle
from pytest_llmperf.metrics import METRICS
from pytest_llmperf.noise import FALLBACK_DF, NoiseEstimate, estimate_noise, fallback_noise
from pytest_llmperf.regression import Comparison, MetricComparison
from pytest_llmperf.startgate import (
    ALPHA,
    POWER,
    StartTest,
    compare_paired,
    compare_to_starts,
    decide,
    detectable,
    log_tolerance,
    paired_test,
)

FAST = settings(max_examples=40, deadline=None)
GATED = [name for name, spec in METRICS.items() if spec.gated]


def _start(scale: float, jitter: list[float] | None = None) -> dict[str, list[float]]:
    """Trial values of every gated metric for one engine start, ``scale`` times slower."""
    jitter = jitter or [0.0, 0.0, 0.0]
    out = {}
    for name in GATED:
        worse = METRICS[name].direction == "lower"
        base = 100.0
        out[name] = [base * (scale if worse else 1 / scale) * (1 + j) for j in jitter]
    return out


def _noise(sigma: float, df: int = 20) -> dict[str, NoiseEstimate]:
    return {n: NoiseEstimate(n, sigma, df, "test", "test data") for n in GATED}


# --- the three-state rule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("point", "se", "expected"),
    [
        (0.0, 0.001, "ok"),            # shown within tolerance
        (0.05, 0.001, "regression"),   # significantly worse and beyond tolerance
        (0.0195, 0.001, "regression"),  # significant, and the tolerance not ruled out
        (0.01, 0.001, "ok"),           # a real but small loss, shown below tolerance
        (0.0, 0.02, "ok"),             # too noisy to show anything, nothing suspect
        (0.03, 0.02, "inconclusive"),  # looks beyond tolerance, not significant
        (-0.05, 0.001, "improvement"),
    ],
)
def test_decide(point: float, se: float, expected: str) -> None:
    assert decide(StartTest(point, se, 30, 4), 0.02) == expected


def test_allowance_raises_the_bar_for_a_regression() -> None:
    test = StartTest(0.025, 0.002, 30, 4)
    assert decide(test, 0.02) == "regression"
    assert decide(test, 0.02, allowance=0.03) == "inconclusive"


def test_stored_variant_needs_the_point_beyond_tolerance() -> None:
    """Machine-to-machine drift near the tolerance is significant but no regression."""
    drift = StartTest(0.018, 0.002, 30, 4)
    assert decide(drift, 0.02) == "regression"  # paired: not shown within tolerance
    assert decide(drift, 0.02, allowance=0.005, require_point=True) == "inconclusive"
    beyond = StartTest(0.025, 0.002, 30, 4)
    assert decide(beyond, 0.02, allowance=0.005, require_point=True) == "regression"


# --- MDE -----------------------------------------------------------------------------


def test_detectable_scales_with_se_and_shrinks_with_df() -> None:
    assert detectable(0.0, 3) == 0.0
    assert detectable(0.0, 3, allowance=0.01) == 0.01
    assert detectable(0.02, 10) == pytest.approx(2 * detectable(0.01, 10))
    assert detectable(0.01, 3) > detectable(0.01, 30) > detectable(0.01, 1000)
    # Large df: z quantiles, (z_0.99 + z_0.90) * se.
    assert detectable(0.01, 100000) == pytest.approx((2.3263 + 1.2816) * 0.01, rel=1e-3)


@pytest.mark.parametrize("df", [3, 8])
def test_power_at_the_mde_is_90_percent(df: int) -> None:
    """Simulate the test as the gate runs it: n pairs, the spread pooled with a prior of
    ``df - n + 1`` degrees of freedom. At a true worsening equal to the MDE, about 90%
    of runs must find it significant, and at zero about ALPHA of them."""
    rng = np.random.default_rng(0)
    n, sigma_d = 2, 0.01
    prior_df = df - (n - 1)
    se = sigma_d / math.sqrt(n)
    mde = detectable(se, df)
    runs = 20000
    for effect, expected, slack in ((mde, POWER, 0.015), (0.0, ALPHA, 0.004)):
        d = rng.normal(effect, sigma_d, size=(runs, n))
        ss = ((d - d.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
        prior = sigma_d**2 * rng.chisquare(prior_df, size=runs) / prior_df
        s = np.sqrt((ss + prior * prior_df) / df)
        hits = [StartTest(float(m), float(v / math.sqrt(n)), df, n).bounds()[0] > 0
                for m, v in zip(d.mean(axis=1), s, strict=True)]
        assert np.mean(hits) == pytest.approx(expected, abs=slack)


# --- paired comparisons --------------------------------------------------------------


@FAST
@given(st.lists(st.floats(0.5, 2.0), min_size=1, max_size=5),
       st.lists(st.floats(-0.01, 0.01), min_size=3, max_size=3))
def test_identical_sides_never_regress(offsets: list[float], jitter: list[float]) -> None:
    starts = [_start(o, jitter) for o in offsets]
    cmp = compare_paired(starts, starts, noise=_noise(0.005))
    assert not cmp.regressions and not cmp.improvements
    assert {r.change for r in cmp.rows} == {0.0}


@FAST
@given(st.floats(0.03, 0.3), st.lists(st.floats(0.8, 1.25), min_size=2, max_size=4),
       st.lists(st.floats(-0.001, 0.001), min_size=2, max_size=4))
def test_drift_shared_by_a_pair_cancels(change: float, drifts: list[float],
                                        noise: list[float]) -> None:
    """Each pair drifts by up to 25% together; a uniform slowdown beyond tolerance is
    still a regression on every gated metric whose tolerance it exceeds."""
    n = min(len(drifts), len(noise))
    base = [_start(drifts[i] * (1 + noise[i])) for i in range(n)]
    head = [_start(drifts[i] * (1 + change)) for i in range(n)]
    cmp = compare_paired(base, head, noise=_noise(0.001))
    for row in cmp.rows:
        if change > METRICS[row.metric].tolerance * 1.5:
            assert row.verdict == "regression", row


@FAST
@given(st.floats(0.03, 0.5), st.integers(1, 4))
def test_improvements_never_regress(change: float, n: int) -> None:
    base = [_start(1.0) for _ in range(n)]
    head = [_start(1 / (1 + change)) for _ in range(n)]
    cmp = compare_paired(base, head, noise=_noise(0.002))
    assert not cmp.regressions
    assert cmp.state == "pass"


def test_noisy_pairs_are_inconclusive_and_say_how_many_starts_resolve_it() -> None:
    base = [_start(1.0), _start(1.0)]
    head = [_start(1.05), _start(1.01)]
    cmp = compare_paired(base, head, noise=_noise(0.02, df=2))
    assert cmp.state == "inconclusive"
    tput = next(r for r in cmp.rows if r.metric == "output_tok_s")
    assert tput.mde is not None and tput.mde > tput.tolerance
    assert tput.starts_needed is None or tput.starts_needed > 2
    assert any("tolerance cannot be resolved here with 90% power for: " in n
               and "output_tok_s 2.0% (detectable: " in n for n in cmp.notes)
    assert "detectable" in cmp.table()


def test_starts_needed_is_the_fewest_that_resolve_the_tolerance() -> None:
    base, head = [_start(1.0)] * 2, [_start(1.0)] * 2
    cmp = compare_paired(base, head, noise=_noise(0.006, df=4))
    row = next(r for r in cmp.rows if r.metric == "output_tok_s")
    need = row.starts_needed
    assert need is not None and need > 2
    sigma2_d = 2 * 0.006**2
    tol = log_tolerance(METRICS["output_tok_s"], row.tolerance)
    assert detectable(math.sqrt(sigma2_d / need), need - 1 + 4) <= tol
    assert detectable(math.sqrt(sigma2_d / (need - 1)), need - 2 + 4) > tol


def test_constant_noise_is_used_and_reported_without_runner_data() -> None:
    cmp = compare_paired([_start(1.0)] * 2, [_start(1.0)] * 2)
    assert {r.noise_source for r in cmp.rows} == {"constant"}
    assert any("constant noise floors from metrics.py" in n for n in cmp.notes)


def test_paired_rejects_unequal_sides() -> None:
    with pytest.raises(ValueError, match="same number of starts"):
        compare_paired([_start(1.0)], [_start(1.0)] * 2)


@pytest.mark.parametrize("mode", ["paired", "stored"])
def test_a_trial_that_measured_zero_leaves_its_metric_out_and_says_so(mode: str) -> None:
    # A served trial whose streams mostly arrived in one burst has TPOT p50 0 ms (seen
    # on the 2-core CPU build): that metric cannot be compared; the rest still are.
    bad = _start(2.0)
    bad["tpot_p50_ms"] = [0.0, 7.1, 7.0]
    if mode == "paired":
        c = compare_paired([_start(1.0)], [bad])
    else:
        c = compare_to_starts([bad], {k: [v[0]] for k, v in _start(1.0).items()})
    assert "tpot_p50_ms" not in {r.metric for r in c.rows}
    assert c.regressions and c.regressions[0].metric == "output_tok_s"
    assert any("not compared" in n and "tpot_p50_ms (a trial measured 0)" in n for n in c.notes)


def test_paired_test_pools_pairs_with_the_prior() -> None:
    noise = NoiseEstimate("x", 0.01, 4, "test", "")
    t = paired_test([100.0, 100.0, 100.0], [101.0, 103.0, 102.0], noise)
    d = np.log([1.01, 1.03, 1.02])
    ss = float(((d - d.mean()) ** 2).sum())
    assert t.df == 2 + 4
    assert t.se == pytest.approx(math.sqrt((ss + 4 * 2 * 0.01**2) / 6 / 3))
    assert t.point == pytest.approx(d.mean())


# --- stored baselines with per-start medians ---------------------------------------


def test_stored_gate_needs_the_noise_floor_cleared() -> None:
    """Against stored starts a change must clear the cross-session drift allowance."""
    baseline = {name: [100.0, 100.0, 100.0] for name in GATED}
    for name in GATED:
        if METRICS[name].direction == "higher":
            baseline[name] = [100.0] * 3
    small = compare_to_starts([_start(1.005)], baseline, noise=_noise(0.0005))
    assert small.state == "pass"
    big = compare_to_starts([_start(1.2)], baseline, noise=_noise(0.0005))
    assert {r.metric for r in big.regressions} >= {"output_tok_s", "tpot_p50_ms"}
    assert big.mode == "stored" and big.starts == (3, 1)


# --- noise estimation ---------------------------------------------------------------


def test_noise_from_the_test_the_file_or_the_constant() -> None:
    own = estimate_noise("output_tok_s", [100.0, 101.0, 99.0])
    assert own.source == "test" and own.df == 2
    assert own.sigma == pytest.approx(np.std(np.log([100.0, 101.0, 99.0]), ddof=1))

    pooled = estimate_noise("output_tok_s", [100.0, 101.0], [[50.0, 51.0, 50.5], [10.0]])
    logs = [np.log([100.0, 101.0]), np.log([50.0, 51.0, 50.5])]
    ss = sum(float(((x - x.mean()) ** 2).sum()) for x in logs)
    assert pooled.source == "file" and pooled.df == 3
    assert pooled.sigma == pytest.approx(math.sqrt(ss / 3))

    thin = estimate_noise("output_tok_s", [100.0, 101.0])
    const = fallback_noise("output_tok_s")
    d = np.log([100.0, 101.0])
    assert thin.source == "file" and thin.df == 1 + FALLBACK_DF
    assert thin.sigma == pytest.approx(
        math.sqrt((float(((d - d.mean()) ** 2).sum()) + FALLBACK_DF * const.sigma**2) / thin.df))

    none = estimate_noise("output_tok_s", [100.0])
    assert none == fallback_noise("output_tok_s")
    assert none.df == FALLBACK_DF and not none.learned
    assert none.sigma == pytest.approx(math.log1p(METRICS["output_tok_s"].noise_floor) / 2)


def test_noise_rejects_non_positive_medians() -> None:
    with pytest.raises(ValueError, match="positive"):
        estimate_noise("output_tok_s", [100.0, 0.0, 1.0])


# --- confirmation starts (gate.settle) -----------------------------------------------


def _cmp(verdict: str, needed: int | None, have: int) -> Comparison:
    row = MetricComparison("output_tok_s", "tok/s", "higher", 100.0, 97.0, -0.03, 0.0, 0.05,
                           0.02, 0.0, verdict, mde=0.04, starts_needed=needed)  # type: ignore[arg-type]
    return Comparison((row,), mode="paired", starts=(have, have))


def test_settle_adds_starts_while_inconclusive_and_reachable() -> None:
    script = [_cmp("inconclusive", 3, 2), _cmp("inconclusive", 3, 3), _cmp("regression", 3, 4)]
    added: list[int] = []
    cmp, n = settle(lambda: script[len(added)], lambda: added.append(1), confirm=5)
    assert cmp.state == "regression" and n == 2


def test_settle_stops_at_the_limit_and_when_out_of_reach() -> None:
    added: list[int] = []
    cmp, n = settle(lambda: _cmp("inconclusive", 3, 2 + len(added)),
                    lambda: added.append(1), confirm=1)
    assert cmp.state == "inconclusive" and n == 1  # --llmperf-confirm=1
    added.clear()
    cmp, n = settle(lambda: _cmp("inconclusive", 40, 2), lambda: added.append(1), confirm=2)
    assert n == 0 and not added  # 40 starts needed: two more would only cost time
    cmp, n = settle(lambda: _cmp("inconclusive", None, 2), lambda: added.append(1), confirm=2)
    assert n == 0 and not added
    cmp, n = settle(lambda: _cmp("ok", 2, 2), lambda: added.append(1), confirm=2)
    assert cmp.state == "pass" and n == 0


def test_a_paired_regression_below_its_tolerance_says_why_it_fails() -> None:
    """Significantly worse, and the starts cannot show it stays within tolerance: the
    table says so instead of showing a bare REGRESSION at +6% against 10%."""
    from pytest_llmperf.regression import Comparison, MetricComparison

    row = MetricComparison(metric="tpot_p99_ms", unit="ms", direction="lower", baseline=10.0,
                           current=10.6, change=0.06, worse_low=0.02, worse_high=0.12,
                           tolerance=0.10, noise_floor=0.0, verdict="regression")
    beyond = MetricComparison(metric="tpot_p50_ms", unit="ms", direction="lower", baseline=10.0,
                              current=11.5, change=0.15, worse_low=0.12, worse_high=0.18,
                              tolerance=0.10, noise_floor=0.0, verdict="regression")
    cmp = Comparison((row, beyond), mode="paired")
    [line] = cmp.explanations()
    assert line.startswith("tpot_p99_ms: worse by +6.0%, below its 10% tolerance")
    assert "at least +2.0%" in line and "up to +12.0%" in line
    assert line in cmp.table()
