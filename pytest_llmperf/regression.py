"""The noise-aware regression decision: is this run worse than the stored baseline?

For each metric the gate compares the median of the current trials with the median of
the baseline trials, and bootstraps a confidence interval (CI) of their ratio. Both are
turned into a *worsening*, a relative change signed so that positive is bad:

* higher-is-better (throughput): ``worsening = 1 - current/baseline``
* lower-is-better (latency, memory): ``worsening = current/baseline - 1``

``worse_low`` .. ``worse_high`` is the CI of the worsening; ``worse_low`` is its
optimistic end (the least bad the change could plausibly be).

Decision rule::

    regression   if worsening > tolerance  and worse_low  > +noise_floor
    improvement  if -worsening > tolerance and worse_high < -noise_floor
    ok           otherwise

Why two conditions. ``tolerance`` is a policy: how much slower the project accepts
before a PR must explain itself. It alone would fail PRs on noise, because a baseline
and a new run never share an engine start, and engine starts differ by a drift the
trials of one run cannot show (``noise_floor``, measured per metric on quiet hardware).
So a regression must also be *confidently* beyond that drift: even the optimistic end
of the CI must be worse than the noise floor. The CI widens when trials disagree, so a
noisy run cannot fail the gate on a lucky-looking median, while a clean run with a real
slowdown fails it even with 3 trials. With a single value per side (peak memory, KV
capacity) the CI is the point and the rule reduces to ``worsening > max(tolerance,
noise_floor)``. Improvements use the mirror rule so that reports only claim a speed-up
that is equally well supported; an improvement never fails the gate.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from .metrics import METRICS, Direction
from .stats import bootstrap_ratio_ci, median

Verdict = Literal["ok", "regression", "improvement", "inconclusive"]

_VERDICT_LABEL: dict[str, str] = {"ok": "ok", "regression": "REGRESSION", "improvement": "IMPROVED",
                                  "inconclusive": "INCONCLUSIVE"}

# Decimal places per unit in the table: enough to see a 0.1% move at typical magnitudes.
_DECIMALS: dict[str, int] = {"ms": 3, "tok/s": 1, "req/s": 2, "GiB": 2, "tokens": 0, "s": 1}


def _check_tolerances(tolerances: Mapping[str, float] | None, what: str) -> dict[str, float]:
    """Reject unknown metric names and impossible values, so a typo never silently ungates."""
    if not tolerances:
        return {}
    unknown = sorted(name for name in tolerances if name not in METRICS)
    if unknown:
        raise KeyError(f"{what}: unknown metric(s) {unknown}; known metrics: {', '.join(METRICS)}")
    out: dict[str, float] = {}
    for name, tol in tolerances.items():
        out[name] = _check_tolerance(tol, f"{what}[{name!r}]")
    return out


def _check_tolerance(tol: float, what: str) -> float:
    if isinstance(tol, bool) or not isinstance(tol, (int, float)):
        raise ValueError(f"{what}={tol!r}: must be a number (a fraction, e.g. 0.03)")
    if not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{what}={tol!r}: must be a finite fraction >= 0, e.g. 0.03")
    return float(tol)


def resolve_tolerances(
    *,
    marker_tolerances: Mapping[str, float] | None = None,
    marker_tolerance: float | None = None,
    option_tolerances: Mapping[str, float] | None = None,
    option_tolerance: float | None = None,
) -> dict[str, float]:
    """Effective tolerance of every metric in METRICS.

    Precedence, most specific first: marker per-metric > marker global > option
    per-metric > option global > the metric's default. The test author knows the
    workload best, so the marker wins over a command-line option; within each source a
    per-metric value is a more deliberate choice than a blanket one.
    """
    m_per = _check_tolerances(marker_tolerances, "marker tolerances")
    o_per = _check_tolerances(option_tolerances, "option tolerances")
    m_all = None if marker_tolerance is None else _check_tolerance(marker_tolerance, "tolerance")
    o_all = None if option_tolerance is None else _check_tolerance(option_tolerance, "tolerance")
    resolved: dict[str, float] = {}
    for name, spec in METRICS.items():
        if name in m_per:
            resolved[name] = m_per[name]
        elif m_all is not None:
            resolved[name] = m_all
        elif name in o_per:
            resolved[name] = o_per[name]
        elif o_all is not None:
            resolved[name] = o_all
        else:
            resolved[name] = spec.tolerance
    return resolved


@dataclass(frozen=True)
class MetricComparison:
    """One metric's baseline vs current medians, the worsening CI and the verdict.

    ``change`` is ``current/baseline - 1`` in the metric's own sign (a throughput drop
    is negative). ``worse_low``/``worse_high`` bound the worsening, positive meaning bad.
    """

    metric: str
    unit: str
    direction: Direction
    baseline: float
    current: float
    change: float
    worse_low: float
    worse_high: float
    tolerance: float
    noise_floor: float
    verdict: Verdict
    # Set by the start-level gate (startgate.py): the worsening it would catch with 90%
    # power here, the engine starts that would bring it within tolerance, and where
    # its noise estimate came from.
    mde: float | None = None
    starts_needed: int | None = None
    noise_source: str | None = None

    @property
    def worsening(self) -> float:
        """Point worsening: ``change`` signed so that positive is bad."""
        return -self.change if self.direction == "higher" else self.change

    @property
    def threshold(self) -> float:
        """The tolerance as a signed ``change``: -0.03 for throughput, +0.02 for latency."""
        return -self.tolerance if self.direction == "higher" else self.tolerance


def _decide(
    worsening: float, worse_low: float, worse_high: float, tolerance: float, noise_floor: float
) -> Verdict:
    """The rule in the module docstring."""
    if worsening > tolerance and worse_low > noise_floor:
        return "regression"
    if -worsening > tolerance and worse_high < -noise_floor:
        return "improvement"
    return "ok"


def _fmt_value(value: float, unit: str) -> str:
    decimals = _DECIMALS.get(unit)
    if decimals is None:
        return f"{value:.4g}"
    return f"{value:.{decimals}f}"


def _fmt_pct(fraction: float) -> str:
    # Adding 0.0 turns a rounded -0.0 into 0.0, so no change never prints as "-0.0%".
    return f"{round(fraction * 100, 1) + 0.0:+.1f}%"


@dataclass(frozen=True)
class Comparison:
    """Every compared metric of one test, in catalogue order."""

    rows: tuple[MetricComparison, ...]
    notes: tuple[str, ...] = ()
    # "trials" (the per-trial bootstrap against constant noise floors), "stored" (engine
    # starts against a baseline's per-start medians) or "paired" (A/B starts).
    mode: str = "trials"
    starts: tuple[int, int] | None = None  # (baseline or base starts, current or head starts)

    @property
    def regressions(self) -> tuple[MetricComparison, ...]:
        return tuple(r for r in self.rows if r.verdict == "regression")

    @property
    def improvements(self) -> tuple[MetricComparison, ...]:
        return tuple(r for r in self.rows if r.verdict == "improvement")

    @property
    def inconclusive(self) -> tuple[MetricComparison, ...]:
        return tuple(r for r in self.rows if r.verdict == "inconclusive")

    @property
    def passed(self) -> bool:
        """True when no metric regressed; improvements never fail the gate."""
        return not self.regressions

    @property
    def state(self) -> str:
        """The test's three-state verdict: "regression", "inconclusive" or "pass"."""
        if self.regressions:
            return "regression"
        return "inconclusive" if self.inconclusive else "pass"

    def table_cells(self) -> tuple[tuple[str, ...], list[tuple[str, ...]], tuple[bool, ...]]:
        """(header, rows, right-aligned columns): what the terminal and Markdown tables show."""
        with_mde = any(r.mde is not None for r in self.rows)
        base_name = "base" if self.mode == "paired" else "baseline"
        header: tuple[str, ...] = ("metric", base_name, "now", "change", "threshold", "verdict")
        right: tuple[bool, ...] = (False, True, True, True, True, False)
        if with_mde:
            header, right = (*header[:5], "detectable", header[5]), (*right[:5], True, False)
        body = []
        for r in self.rows:
            cells: tuple[str, ...] = (r.metric, _fmt_value(r.baseline, r.unit),
                                      _fmt_value(r.current, r.unit), _fmt_pct(r.change),
                                      _fmt_pct(r.threshold))
            if with_mde:
                cells = (*cells, "-" if r.mde is None else _fmt_pct(r.mde).lstrip("+"))
            body.append((*cells, _VERDICT_LABEL[r.verdict]))
        return header, body, right

    def explanations(self) -> list[str]:
        """Why a regression smaller than its tolerance still fails (paired mode): the
        worsening is significant and the starts cannot show it stays within tolerance."""
        out = []
        for r in self.regressions:
            if r.worsening < r.tolerance:
                out.append(
                    f"{r.metric}: worse by {r.worsening:+.1%}, below its {r.tolerance:.0%} tolerance, "
                    f"but significantly worse (at least {r.worse_low:+.1%}) and possibly beyond the "
                    f"tolerance (up to {r.worse_high:+.1%}): not shown to be within it")
        return out

    def table(self) -> str:
        """Aligned plain-text table for the terminal and PR comments (with the
        explanations of regressions below their tolerance)."""
        from .reports.table import text_table

        return "\n".join([*text_table(*self.table_cells()), *self.explanations()])


def compare_to_baseline(
    current: Mapping[str, Sequence[float]],
    baseline: Mapping[str, Sequence[float]],
    *,
    tolerances: Mapping[str, float] | None = None,
    metrics: Iterable[str] | None = None,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Compare per-trial values (``PerfResult.metric_values()``) with a baseline's.

    Compared: every metric present on both sides that is gated, plus the ungated ones
    named in ``metrics`` (e.g. ``start_time_s``). A metric on one side only is skipped:
    a new metric must not fail against an old baseline. Names the catalogue does not
    know are ignored in the value dicts but rejected (KeyError) in ``metrics`` and
    ``tolerances``, where they can only be typos. Missing tolerances use the default.
    """
    if isinstance(metrics, str):
        metrics = [metrics]
    wanted = list(metrics) if metrics is not None else []
    unknown = [name for name in wanted if name not in METRICS]
    if unknown:
        raise KeyError(f"unknown metric(s) {unknown}; known metrics: {', '.join(METRICS)}")
    tols = _check_tolerances(tolerances, "tolerances")
    explicit = set(wanted)

    rows: list[MetricComparison] = []
    for name, spec in METRICS.items():
        if not (spec.gated or name in explicit):
            continue
        if name not in current or name not in baseline:
            continue
        tolerance = tols.get(name, spec.tolerance)
        try:
            # The CI first: its errors say which side ("current"/"baseline") is bad.
            ratio_lo, ratio_hi = bootstrap_ratio_ci(
                current[name], baseline[name], confidence=confidence, seed=seed
            )
            base_med = median(baseline[name])
            cur_med = median(current[name])
        except ValueError as exc:
            raise ValueError(f"metric {name!r}: {exc}") from exc
        ratio = cur_med / base_med
        if spec.direction == "higher":
            worsening, worse_low, worse_high = 1.0 - ratio, 1.0 - ratio_hi, 1.0 - ratio_lo
        else:
            worsening, worse_low, worse_high = ratio - 1.0, ratio_lo - 1.0, ratio_hi - 1.0
        # The CI's bounds come from resampled medians; rounding can leave the point a ulp
        # outside them when every trial moved alike (Hypothesis found one).
        worse_low, worse_high = min(worse_low, worsening), max(worse_high, worsening)
        rows.append(
            MetricComparison(
                metric=name,
                unit=spec.unit,
                direction=spec.direction,
                baseline=base_med,
                current=cur_med,
                change=ratio - 1.0,
                worse_low=worse_low,
                worse_high=worse_high,
                tolerance=tolerance,
                noise_floor=spec.noise_floor,
                verdict=_decide(worsening, worse_low, worse_high, tolerance, spec.noise_floor),
            )
        )
    return Comparison(tuple(rows))
