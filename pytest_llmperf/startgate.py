"""The regression decision over engine starts: paired A/B, or against stored starts.

The unit of evidence is the engine start: each start's value of a metric is the
median of its trials, taken as a log so that changes are relative. Trials of one
start share that start's offset, so they can never show it; starts can.

Paired (``compare_paired``): base and head ran on the same runner, interleaved by
engine start, and start i of each side forms a pair. The per-pair differences
``d_i = log(head_i / base_i)`` (signed so that positive is worse) cancel any drift
that hit both sides of a pair. Their mean is tested with Student's t, the standard
deviation pooled from the pairs themselves (n - 1 degrees of freedom) and from the
runner's between-start spread (``noise.py``; a difference of two starts has twice
its variance), so two pairs are already informative.

Stored (``compare_to_starts``): the current run's start values against a baseline's
per-start medians (two-sample t, the same pooled spread). A baseline was recorded in
another session, maybe on another machine of the type, so a change must also clear
the metric's ``noise_floor`` (``metrics.py``): the drift between sessions that one
session's starts cannot show and that only paired mode cancels.

Three states per metric, from a lower bound ``lo`` of the worsening at one-sided
confidence 1 - ALPHA (the false-alarm rate: 1%) and an upper bound ``hi`` at 1 -
EQUIVALENCE_ALPHA (95%), and the metric's tolerance::

    regression    lo > allowance and hi >= tolerance    (significantly worse, and not
                  (stored: and point > tolerance)        shown to be within tolerance)
    inconclusive  not a regression, but point > tolerance, or lo > allowance and
                  hi >= tolerance                       (suspect: measure more)
    ok            otherwise                             ("improvement" when shown better
                                                         by more than the tolerance)

(allowance: 0 when paired, the noise floor when stored.) Paired, a change at the
tolerance is caught whenever the test is significant, so the minimum detectable
effect (MDE: the worsening caught with ``POWER`` probability) is the figure to set
beside the tolerance: when it is larger, this runner cannot resolve that tolerance
with this many starts, and the report says how many would. Against a stored baseline
the point estimate must also exceed the tolerance, as in the trial-level gate: the
drift between machines of one type (TPOT p50 1.5% between two H100s, each within
0.3%) is real, significant and not a regression; near the tolerance it is reported as
inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .metrics import METRICS, MetricSpec
from .noise import NoiseEstimate, fallback_noise
from .regression import Comparison, MetricComparison, Verdict, _check_tolerances

ALPHA = 0.01  # one-sided false-alarm rate per metric
EQUIVALENCE_ALPHA = 0.05  # one-sided error of "within tolerance"
POWER = 0.90
MAX_STARTS = 64  # beyond this the report just says "more than 64"

StartValues = Mapping[str, Sequence[float]]  # one engine start: metric -> trial values


@dataclass(frozen=True)
class StartTest:
    """The t statistics of one metric: point worsening, its standard error and df."""

    point: float  # log worsening (positive is bad)
    se: float
    df: int
    n: int  # pairs, or current starts

    def bounds(self, alpha: float = ALPHA,
               equivalence_alpha: float = EQUIVALENCE_ALPHA) -> tuple[float, float]:
        """Lower bound at one-sided 1 - alpha, upper at 1 - equivalence_alpha."""
        if self.se == 0:
            return self.point, self.point
        return (self.point - _t_quantile(1.0 - alpha, self.df) * self.se,
                self.point + _t_quantile(1.0 - equivalence_alpha, self.df) * self.se)


@lru_cache(maxsize=4096)
def _t_quantile(p: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(p, df))


@lru_cache(maxsize=4096)
def _nc_for_power(df: int, alpha: float, power: float) -> float:
    """Noncentrality at which a one-sided t test at ``alpha`` rejects with ``power``."""
    from scipy import optimize, stats

    crit = _t_quantile(1.0 - alpha, df)

    def short(nc: float) -> float:
        return float(stats.nct.sf(crit, df, nc)) - power

    return float(optimize.brentq(short, 0.0, 1e3))


def detectable(se: float, df: int, *, allowance: float = 0.0, alpha: float = ALPHA,
               power: float = POWER) -> float:
    """The log worsening the gate catches with ``power`` (its MDE), for this se and df."""
    if se == 0:
        return allowance
    return allowance + _nc_for_power(df, alpha, power) * se


def decide(test: StartTest, tolerance: float, *, allowance: float = 0.0,
           alpha: float = ALPHA, require_point: bool = False) -> Verdict:
    """The three-state rule in the module docstring, on log worsening and log tolerance
    (``require_point``: the stored-baseline variant)."""
    lo, hi = test.bounds(alpha)
    proven = lo > allowance and hi >= tolerance
    if proven and (test.point > tolerance or not require_point):
        return "regression"
    if proven or test.point > tolerance:
        return "inconclusive"
    if hi < -allowance and -test.point > tolerance:
        return "improvement"
    return "ok"


def log_tolerance(spec: MetricSpec, fraction: float) -> float:
    """A relative tolerance as a log worsening (a 2% throughput loss is -log(0.98))."""
    if spec.direction == "higher":
        return -math.log1p(-min(fraction, 0.999999))
    return math.log1p(fraction)


def _relative(spec: MetricSpec, log_worsening: float) -> float:
    """A log worsening back as the relative worsening the tables show."""
    if spec.direction == "higher":
        return 1.0 - math.exp(-log_worsening)
    return math.expm1(log_worsening)


def start_value(values: Sequence[float]) -> float:
    """One engine start's figure for a metric: the median of its trials."""
    arr = np.asarray([float(v) for v in values], dtype=float)
    if arr.size == 0 or not np.all(np.isfinite(arr) & (arr > 0)):
        raise ValueError(f"start values must be positive and finite, got {arr.tolist()}")
    return float(np.median(arr))


def _signed(spec: MetricSpec, log_change: float) -> float:
    return -log_change if spec.direction == "higher" else log_change


def _pooled_variance(own_ss: float, own_df: int, prior_var: float, prior_df: int) -> tuple[float, int]:
    df = own_df + prior_df
    if df == 0:
        return 0.0, 0
    return (own_ss + prior_var * prior_df) / df, df


def paired_test(base: Sequence[float], head: Sequence[float], noise: NoiseEstimate) -> StartTest:
    """t statistics of paired log differences (``base``/``head``: start values, in order;
    the sign is raw log(head/base), for lower-is-better metrics)."""
    if len(base) != len(head) or not base:
        raise ValueError(f"paired starts need equal, non-zero counts: {len(base)} and {len(head)}")
    d = np.log(np.asarray(head, dtype=float)) - np.log(np.asarray(base, dtype=float))
    n = int(d.size)
    ss = float(np.sum((d - d.mean()) ** 2)) if n > 1 else 0.0
    var, df = _pooled_variance(ss, n - 1, 2.0 * noise.sigma**2, noise.df)
    return StartTest(float(d.mean()), math.sqrt(var / n), df, n)


def two_sample_test(baseline: Sequence[float], current: Sequence[float],
                    noise: NoiseEstimate) -> StartTest:
    """t statistics of log(current) vs log(baseline) start values (unpaired)."""
    if not baseline or not current:
        raise ValueError("both sides need at least one engine start")
    lb, lc = np.log(np.asarray(baseline, dtype=float)), np.log(np.asarray(current, dtype=float))
    ss = float(np.sum((lc - lc.mean()) ** 2)) if lc.size > 1 else 0.0
    # The baseline's own starts are already in ``noise`` when it was learned from them.
    var, df = _pooled_variance(ss, int(lc.size) - 1, noise.sigma**2, noise.df)
    se = math.sqrt(var * (1.0 / lc.size + 1.0 / lb.size))
    return StartTest(float(lc.mean() - lb.mean()), se, df, int(lc.size))


def _starts_to_resolve(se_at: Callable[[int], tuple[float, int]], n: int, tolerance: float, allowance: float,
                       alpha: float) -> int | None:
    """Fewest starts (pairs, or current starts) whose MDE is within tolerance."""
    for m in range(n, MAX_STARTS + 1):
        se, df = se_at(m)
        if detectable(se, df, allowance=allowance, alpha=alpha) <= tolerance:
            return m
    return None


def _gated(metrics: Iterable[str] | None) -> list[str]:
    wanted = set(metrics or ())
    unknown = sorted(wanted - set(METRICS))
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known metrics: {', '.join(METRICS)}")
    return [name for name, spec in METRICS.items() if spec.gated or name in wanted]


def _start_values(starts: Sequence[StartValues], name: str, unusable: list[str]
                  ) -> list[float] | None:
    """Each start's figure for ``name``; None when a start lacks it. A trial that measured
    zero or nothing (TPOT p50 is 0 ms when most served streams arrived in one burst) has
    no figure to compare in ratios: the metric is left out and named in ``unusable``."""
    if not all(name in s for s in starts):
        return None
    try:
        return [start_value(s[name]) for s in starts]
    except ValueError:
        bad = next((v for s in starts for v in s[name] if not (math.isfinite(v) and v > 0)), None)
        unusable.append(f"{name} (a trial measured {bad:g})" if bad is not None
                        else f"{name} (a start without trials)")
        return None


def _unusable_note(unusable: Sequence[str]) -> list[str]:
    if not unusable:
        return []
    return ["not compared, no usable figure in every trial: " + ", ".join(unusable)
            + " (see the measurement-validity warnings)"]


def _noise_note(noise: Mapping[str, NoiseEstimate], names: Sequence[str]) -> str:
    used = [noise[n] for n in names if n in noise]
    constant = [e.metric for e in used if not e.learned]
    learned = [e for e in used if e.learned]
    parts = []
    if learned:
        parts.append(f"between-start noise learned on this runner ({learned[0].detail})")
    if constant:
        parts.append("constant noise floors from metrics.py for " + ", ".join(constant)
                     + " (no per-start medians here: record the baseline with "
                       "--llmperf-baseline-starts 3)")
    return "noise: " + "; ".join(parts) if parts else ""


def _row(spec: MetricSpec, test: StartTest, base_value: float, current_value: float,
         tolerance: float, allowance: float, alpha: float, starts_needed: int | None,
         noise: NoiseEstimate, require_point: bool = False) -> MetricComparison:
    signed = StartTest(_signed(spec, test.point), test.se, test.df, test.n)
    lo, hi = signed.bounds(alpha)
    tol_log = log_tolerance(spec, tolerance)
    allow_log = log_tolerance(spec, allowance) if allowance else 0.0
    verdict = decide(signed, tol_log, allowance=allow_log, alpha=alpha,
                     require_point=require_point)
    return MetricComparison(
        metric=spec.name, unit=spec.unit, direction=spec.direction,
        baseline=base_value, current=current_value,
        change=math.expm1(test.point),
        worse_low=_relative(spec, lo), worse_high=_relative(spec, hi),
        tolerance=tolerance, noise_floor=allowance, verdict=verdict,
        mde=_relative(spec, detectable(test.se, test.df, allowance=allow_log, alpha=alpha)),
        starts_needed=starts_needed, noise_source=noise.source,
    )


def _mde_notes(rows: Sequence[MetricComparison], unit: str) -> list[str]:
    """One line naming every metric whose tolerance this runner cannot resolve."""
    parts = []
    for r in rows:
        if r.mde is None or r.mde <= r.tolerance or r.verdict == "regression":
            continue
        more = (f"~{r.starts_needed} {unit} would" if r.starts_needed
                else f"more than {MAX_STARTS} {unit} would")
        parts.append(f"{r.metric} {r.tolerance:.1%} (detectable: {r.mde:.1%}; {more})")
    if not parts:
        return []
    return [f"tolerance cannot be resolved here with {POWER:.0%} power for: " + ", ".join(parts)]


def compare_paired(
    base: Sequence[StartValues],
    head: Sequence[StartValues],
    *,
    tolerances: Mapping[str, float] | None = None,
    noise: Mapping[str, NoiseEstimate] | None = None,
    metrics: Iterable[str] | None = None,
    alpha: float = ALPHA,
) -> Comparison:
    """Paired A/B verdict: ``base[i]`` and ``head[i]`` are the trial values of the i-th
    engine start of each side, interleaved on one runner. ``noise``: the runner's
    between-start spread per metric (default: the constants)."""
    if len(base) != len(head) or not base:
        raise ValueError(f"paired mode needs the same number of starts per side, "
                         f"got base {len(base)} and head {len(head)}")
    tols = _check_tolerances(tolerances, "tolerances")
    noise = dict(noise or {})
    rows = []
    unusable: list[str] = []
    for name in _gated(metrics):
        b, h = _start_values(base, name, unusable), _start_values(head, name, unusable)
        if b is None or h is None:
            continue
        spec = METRICS[name]
        est = noise.get(name) or fallback_noise(name)
        noise[name] = est
        test = paired_test(b, h, est)
        tolerance = tols.get(name, spec.tolerance)
        sigma2_d = (test.se**2) * test.n

        def se_at(m: int, sigma2_d: float = sigma2_d, prior_df: int = est.df) -> tuple[float, int]:
            return math.sqrt(sigma2_d / m), (m - 1) + prior_df

        need = _starts_to_resolve(se_at, test.n, log_tolerance(spec, tolerance), 0.0, alpha)
        base_value = float(np.exp(np.mean(np.log(b))))
        rows.append(_row(spec, test, base_value, base_value * math.exp(test.point), tolerance,
                         0.0, alpha, need, est))
    notes = [n for n in (_noise_note(noise, [r.metric for r in rows]),) if n]
    notes += _mde_notes(rows, "engine starts per side") + _unusable_note(unusable)
    return Comparison(tuple(rows), tuple(notes), mode="paired", starts=(len(base), len(head)))


def compare_to_starts(
    current: Sequence[StartValues],
    baseline: Mapping[str, Sequence[float]],
    *,
    tolerances: Mapping[str, float] | None = None,
    noise: Mapping[str, NoiseEstimate] | None = None,
    metrics: Iterable[str] | None = None,
    alpha: float = ALPHA,
    floors: Mapping[str, float] | None = None,
) -> Comparison:
    """Stored-baseline verdict: ``current`` engine starts (trial values each) against a
    baseline's per-start medians (``baseline[metric]``, one value per recorded start).
    ``floors``: the allowance per metric a change must clear (default: its
    ``noise_floor``; ``gate.compare_entry`` passes ``between_machines`` when the
    baseline came from another machine)."""
    if not current:
        raise ValueError("need at least one current engine start")
    tols = _check_tolerances(tolerances, "tolerances")
    noise = dict(noise or {})
    rows = []
    unusable: list[str] = []
    for name in _gated(metrics):
        c = _start_values(current, name, unusable)
        if c is None or not baseline.get(name):
            continue
        b = [float(v) for v in baseline[name]]
        spec = METRICS[name]
        est = noise.get(name) or fallback_noise(name)
        noise[name] = est
        test = two_sample_test(b, c, est)
        tolerance = tols.get(name, spec.tolerance)
        allowance = (floors or {}).get(name, spec.noise_floor)
        k = len(b)
        sigma2 = test.se**2 / (1.0 / test.n + 1.0 / k)

        def se_at(m: int, sigma2: float = sigma2, k: int = k, prior_df: int = est.df) -> tuple[float, int]:
            return math.sqrt(sigma2 * (1.0 / m + 1.0 / k)), (m - 1) + prior_df

        need = _starts_to_resolve(se_at, test.n, log_tolerance(spec, tolerance),
                                  log_tolerance(spec, allowance), alpha)
        base_value = float(np.exp(np.mean(np.log(b))))
        rows.append(_row(spec, test, base_value, base_value * math.exp(test.point), tolerance,
                         allowance, alpha, need, est, require_point=True))
    notes = [n for n in (_noise_note(noise, [r.metric for r in rows]),) if n]
    notes += _mde_notes(rows, "engine starts") + _unusable_note(unusable)
    k = max((len(v) for v in baseline.values()), default=0)
    return Comparison(tuple(rows), tuple(notes), mode="stored", starts=(k, len(current)))
