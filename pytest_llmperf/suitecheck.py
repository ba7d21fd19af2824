"""The suite check: did the whole run move, even where no single test could tell?

Each test's gate compares it alone, so its tolerance must cover that test's own noise.
On a noisy runner that is wide: on vLLM's 2-core CPU build one unchanged test moves by
up to 49% in throughput between runs, so the per-test CPU tolerance is 40% and a
planted 20% slowdown passed all 20 tests (benchmarks/RESULTS.md, "The CPU gate on
this runner"). The noise of separate tests is largely independent; a change in the
code under test moves them all the same way. So over the tests of one run, per metric,
the suite check takes the median of the changes the tests' gates measured (against the
stored baseline, speed-adjusted where the runner probe was trusted, or against the
base commit in paired mode) and calls a regression when

- that median worsening is beyond a share of the tests' own tolerance for the metric
  (``--llmperf-suite-check``, a quarter by default: 10% where tests gate throughput at
  40% on the CPU build), and never below twice the floor the tests' gates used: the
  metric's noise floor between engine starts (2% for throughput, 1% for TPOT p50), or
  its between-machines floor where the baselines came from other GPUs (6% for both). A
  whole runner's drift is common to all its tests, so no median over them averages it
  away: on one H100 ITL p50 moved 0.4% across three engine starts, and between two
  H100s of one type an unchanged config moved 2.6% in throughput and 2.2% in TPOT p50,
  between two H200s 2.3% and 2.5%; and
- the worsenings are above zero with confidence: a one-sided Wilcoxon signed-rank
  test over the tests, p below ``ALPHA``.

Where a report says the gate scaled a test's baseline by the runner probe (a factor f;
the gate stopped scaling on 2026-12-04, so only older reports carry one), the threshold
grows by |ln f|: inside its band the probe's reading has been off by about the size of
its correction (it read two unchanged runs 5.5% and 9.3% faster than the recording
while the engines ran at the recording's speed), so a shift of that size may be the
probe's and not the code's.

Where the runner's own unchanged runs are recorded (``baselines/<key>/run-drift.json``,
rundrift.py), the threshold is never below the drift they bound: between sessions the
2-core CPU VMs move as a whole by -10.7% to +22.2% in median throughput at one probe
score, and an unchanged tree failed CI on ITL p50 +18.9% against 18.75%. That floor is
not applied to paired comparisons, where the runner's drift cancels.

This is the per-test rule (beyond tolerance and beyond noise) one level up. It runs
per hardware key (tests of two runners are never pooled) and needs ``MIN_TESTS``
compared tests of a metric, fewer give no verdict. Like the per-test gate against a
stored baseline, it cannot tell a slower runner from slower code when the runner probe
is not trusted; paired mode can.

Pure logic over report records: the plugin fails the session on a regression, and
``python -m pytest_llmperf merge --suite-check SHARE`` applies it to merged shards.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .metrics import METRICS, Direction, metric_spec
from .rundrift import RunDrift

ALPHA = 0.01
# The one-sided Wilcoxon test cannot reach p < 0.01 with fewer than 7 values (its
# smallest p is 2**-n); 8 leaves room for one test that did not move at all.
MIN_TESTS = 8
DEFAULT_SHARE = 0.25


class _Row(Protocol):
    @property
    def metric(self) -> str: ...
    @property
    def change(self) -> float: ...
    @property
    def tolerance(self) -> float: ...
    @property
    def worsening(self) -> float: ...
    @property
    def noise_floor(self) -> float: ...


class _Record(Protocol):
    """What the check reads of a test: ``reports.model.TestRecord`` has it."""

    @property
    def test_id(self) -> str: ...
    @property
    def hardware_key(self) -> str | None: ...
    @property
    def comparison(self) -> Sequence[Any] | None: ...
    @property
    def speed_factor(self) -> float: ...  # the runner probe's factor its gate applied
    @property
    def comparison_mode(self) -> str | None: ...  # "paired": the runner's drift cancelled


@dataclass(frozen=True)
class MetricShift:
    """One metric over the tests of one run: the median change and the verdict.

    ``median_change`` is in the metric's own sign (a throughput loss is negative);
    ``threshold`` the worsening that counts (positive); ``p_value`` the one-sided
    Wilcoxon p that the tests got worse, None with fewer than ``MIN_TESTS`` tests.
    """

    metric: str
    direction: Direction
    tests: int
    median_change: float
    threshold: float
    p_value: float | None
    verdict: str  # "regression" | "improvement" | "ok" | "too few tests"
    allowance: float = 0.0  # part of ``threshold`` granted to the runner probe's correction
    drift: float = 0.0  # the floor from the runner's recorded run-to-run drift (rundrift.py)
    drift_runs: int = 0  # the unchanged runs it was learned from

    @property
    def median_worsening(self) -> float:
        return -self.median_change if self.direction == "higher" else self.median_change

    @property
    def set_by_drift(self) -> bool:
        """True when the runner's recorded drift, not the tolerances' share, set the threshold."""
        return bool(self.drift) and self.drift >= self.threshold - self.allowance - 1e-12

    def describe(self) -> str:
        p = "" if self.p_value is None else f", p={self.p_value:.2g}"
        probe = (f", {self.allowance:.1%} of it for the speed probe's correction"
                 if self.allowance else "")
        if self.set_by_drift:
            probe = (f": this runner's run-to-run drift over {self.drift_runs} unchanged "
                     f"runs{probe}")
        return (f"{self.metric}: median change {self.median_change:+.1%} over {self.tests} tests "
                f"(threshold {self.threshold:.1%}{probe}{p}): {self.verdict}")


@dataclass(frozen=True)
class SuiteCheck:
    """The suite check of one hardware key."""

    hardware_key: str | None
    share: float
    shifts: tuple[MetricShift, ...]
    alpha: float = ALPHA

    @property
    def regressions(self) -> tuple[MetricShift, ...]:
        return tuple(s for s in self.shifts if s.verdict == "regression")

    @property
    def failed(self) -> bool:
        return bool(self.regressions)

    def lines(self) -> list[str]:
        """The verdict first, then one line per regressed or improved metric."""
        where = f" on {self.hardware_key}" if self.hardware_key else ""
        judged = [s for s in self.shifts if s.p_value is not None]
        if not judged:
            return [f"suite check{where}: no verdict, fewer than {MIN_TESTS} compared tests"]
        # Where the runner's drift set a threshold, a whole-run loss below it goes unseen:
        # a passed line that named only the share would promise more than the check did.
        by_drift = [s for s in judged if s.set_by_drift]
        drift = ""
        if by_drift:
            runs = sorted({s.drift_runs for s in by_drift})
            over = f"{runs[0]}" if len(runs) == 1 else f"{runs[0]}-{runs[-1]}"
            drift = (f"; this runner's run-to-run drift over {over} unchanged runs set "
                     f"{len(by_drift)} of the thresholds instead, "
                     f"{min(s.threshold for s in by_drift):.0%} to "
                     f"{max(s.threshold for s in by_drift):.0%}")
        head = (f"suite check{where}: FAILED, the run as a whole regressed"
                if self.failed else
                f"suite check{where}: passed ({len(judged)} metrics over up to "
                f"{max(s.tests for s in judged)} tests, {self.share:.0%} of each tolerance"
                f"{drift})")
        shown = [s for s in judged if s.verdict != "ok"]
        return [head, *(f"  {s.describe()}" for s in shown)]

    def to_json(self) -> dict[str, Any]:
        return {"hardware_key": self.hardware_key, "share": self.share,
                "alpha": self.alpha, "failed": self.failed,
                "shifts": [{**asdict(s), "median_change": _finite(s.median_change)}
                           for s in self.shifts]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SuiteCheck:
        shifts = tuple(
            MetricShift(**{**s, "median_change": math.nan if s["median_change"] is None
                           else s["median_change"]})
            for s in data["shifts"])
        return cls(hardware_key=data.get("hardware_key"), share=data["share"],
                   shifts=shifts, alpha=data.get("alpha", ALPHA))


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def wilcoxon_greater(values: Sequence[float]) -> float:
    """One-sided p that ``values`` are centred above zero (1.0 when none differ from it)."""
    from scipy import stats

    nonzero = [v for v in values if v != 0.0]
    if not nonzero:
        return 1.0
    return float(stats.wilcoxon(nonzero, alternative="greater").pvalue)


def shift_of(metric: str, rows: Sequence[_Row], share: float, alpha: float = ALPHA,
             allowances: Sequence[float] = (), drift: RunDrift | None = None) -> MetricShift:
    """The verdict on one metric from the rows of every test that compared it;
    ``allowances[i]``: |ln f| of the probe's factor applied to row i's baseline;
    ``drift``: the runner's recorded unchanged runs, whose drift bounds the threshold
    from below (rundrift.py)."""
    spec = metric_spec(metric)
    if allowances and len(allowances) != len(rows):
        raise ValueError("one allowance per row")
    pairs = [(r, a) for r, a in zip(rows, allowances or [0.0] * len(rows), strict=True)
             if math.isfinite(r.change)]
    rows = [r for r, _ in pairs]
    allowance = statistics.median(a for _, a in pairs) if pairs else 0.0
    own = statistics.median(r.tolerance for r in rows) if rows else spec.tolerance
    # The floor the tests' gates used (a row's noise_floor: the between-machines floor
    # where the baselines came from other GPUs), never below the metric's own: a runner
    # uniformly 2.5% slower than the one that recorded is a machine, not a regression.
    used = statistics.median(r.noise_floor for r in rows) if rows else 0.0
    floor = drift.floor(metric, alpha) if drift is not None else 0.0
    runs = len(drift.changes(metric)) if drift is not None and floor else 0
    threshold = max(share * own, 2 * max(spec.noise_floor, used), floor) + allowance
    if len(rows) < MIN_TESTS:
        change = statistics.median(r.change for r in rows) if rows else math.nan
        return MetricShift(metric, spec.direction, len(rows), change, threshold, None,
                           "too few tests", allowance, floor, runs)
    change = statistics.median(r.change for r in rows)
    worse = [r.worsening for r in rows]
    worsening = statistics.median(worse)
    p_worse = wilcoxon_greater(worse)
    if worsening > threshold and p_worse < alpha:
        verdict, p = "regression", p_worse
    elif -worsening > threshold and (p_better := wilcoxon_greater([-w for w in worse])) < alpha:
        verdict, p = "improvement", p_better
    else:
        verdict, p = "ok", p_worse
    return MetricShift(metric, spec.direction, len(rows), change, threshold, p, verdict,
                       allowance, floor, runs)


def check_suite(records: Iterable[_Record], share: float = DEFAULT_SHARE,
                alpha: float = ALPHA,
                drift: Mapping[str | None, RunDrift] | None = None) -> tuple[SuiteCheck, ...]:
    """One ``SuiteCheck`` per hardware key among ``records`` that compared any test;
    ``drift``: per key, the runner's recorded run-to-run drift (rundrift.py), applied
    where any of the key's tests was compared with a stored baseline (not paired)."""
    if not 0 < share <= 1:
        raise ValueError(f"suite check share {share!r}: must be a fraction in (0, 1]")
    by_key: dict[str | None, dict[str, list[tuple[_Row, float]]]] = {}
    stored: set[str | None] = set()  # keys with a test compared against a stored baseline
    for record in records:
        allowance = abs(math.log(record.speed_factor))
        if record.comparison and record.comparison_mode != "paired":
            stored.add(record.hardware_key)
        for row in record.comparison or ():
            by_key.setdefault(record.hardware_key, {}).setdefault(row.metric, []).append(
                (row, allowance))
    checks = []
    for key in sorted(by_key, key=lambda k: k or ""):
        rows = by_key[key]
        order = sorted(rows, key=lambda m: list(METRICS).index(m) if m in METRICS else len(METRICS))
        runner = (drift or {}).get(key) if key in stored else None
        shifts = tuple(shift_of(m, [r for r, _ in rows[m]], share, alpha,
                                [a for _, a in rows[m]], runner) for m in order)
        checks.append(SuiteCheck(key, share, shifts, alpha))
    return tuple(checks)
