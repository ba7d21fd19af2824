"""What every report format reads: the run's tests, their results, baselines and verdicts.

``RunReport`` is the one shape shared by the JSON file, the Markdown and terminal
tables, the plots, the history store and the fleet merge. It is a pure function of
its test records and machines (no wall-clock stamp of its own), so the merge of
shard reports equals the report of one run over the same tests.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..baselines import BaselineEntry
from ..fingerprint import with_gpu_uuids
from ..regression import MetricComparison
from ..results import PerfResult

REPORT_SCHEMA_VERSION = 1
SUPPORTED_REPORT_VERSIONS = (1,)

# Outcome of one test, most severe first: reports list tests in this order, so a
# regression is the first thing a reviewer sees.
OUTCOMES: tuple[str, ...] = (
    "regression",    # a gated metric regressed beyond tolerance and noise
    "limits",        # an absolute floor or ceiling of the marker was missed
    "failed",        # the test body failed (an assert of its own)
    "error",         # nothing was measured, or it could not be judged (unusable baseline)
    "inconclusive",  # the gate could not tell (paired mode: confirmation runs disagreed)
    "stale",         # the baseline was measured with another config
    "missing",       # no baseline on this hardware
    "improved",      # better beyond tolerance: update the baseline
    "updated",       # the baseline was (re)recorded by this run
    "unchanged",     # paired A/B: the test is the same at the base commit, run once
    "pass",
)
FAILING = frozenset({"regression", "limits", "failed", "error"})

# How a count of each reads in a headline: "1 regressed, 6 passed".
COUNT_WORDS: dict[str, str] = {
    "regression": "regressed", "limits": "missed limits", "failed": "failed",
    "error": "errored", "inconclusive": "inconclusive", "stale": "with a stale baseline",
    "missing": "without a baseline", "improved": "improved", "updated": "recorded",
    "unchanged": "unchanged", "pass": "passed",
}

LABELS: dict[str, str] = {
    "regression": "FAIL (regression)",
    "limits": "FAIL (limits)",
    "failed": "FAIL (test)",
    "error": "ERROR",
    "inconclusive": "INCONCLUSIVE",
    "stale": "pass (stale baseline)",
    "missing": "pass (missing baseline)",
    "improved": "pass (improved)",
    "updated": "pass (baseline updated)",
    "unchanged": "pass (unchanged since base)",
    "pass": "pass",
}


def classify(verdict: Any) -> str:
    """The outcome (one of OUTCOMES) of a ``gate.Verdict``-like object."""
    if getattr(verdict, "result", None) is None:
        return "error"
    if getattr(verdict, "failed_test", False):
        return "failed"
    if getattr(verdict, "errors", None):
        return "error"
    comparison = getattr(verdict, "comparison", None)
    if comparison is not None and comparison.regressions:
        return "regression"
    if getattr(verdict, "limit_failures", None):
        return "limits"
    if getattr(verdict, "inconclusive", False):
        return "inconclusive"
    status = getattr(verdict, "baseline_status", "none")
    if status in ("missing", "stale"):
        return str(status)
    if comparison is not None and comparison.improvements:
        return "improved"
    if status == "updated":
        return "updated"
    if status == "unchanged":
        return "unchanged"
    return "pass"


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: a figure that was not measured is ``null``."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


@dataclass(frozen=True)
class TestRecord:
    """One perf test as every report shows it.

    ``base`` is the other side of a paired A/B run (the same test at the PR's base),
    None for a run against stored baselines.
    """

    __test__ = False  # not a pytest test class, despite the name

    test_id: str
    outcome: str
    hardware_key: str | None = None
    git_commit: str | None = None
    baseline_status: str = "none"
    limits_applied: bool = True
    limit_failures: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    messages: tuple[str, ...] = ()
    comparison: tuple[MetricComparison, ...] | None = None
    comparison_mode: str | None = None  # "trials", "starts" or "paired" (regression.Comparison)
    result: PerfResult | None = None
    baseline: BaselineEntry | None = None
    base: PerfResult | None = None
    # every result of a test that measured several (a sweep inside it), for its curve
    points: tuple[PerfResult, ...] = ()
    # The runner probe's factor the gate applied to the baseline: written by reports from
    # before 2026-12-04, when the CPU gate still scaled by the probe; 1.0 since.
    speed_factor: float = 1.0
    # figures derived from the result (derived.py: roofline share, decode bytes/s, cost),
    # named in the metrics catalogue; reports before 2026-12-06 have none
    derived: Mapping[str, float] = field(default_factory=dict)
    # the test's own wall time: setup + call + teardown (engine starts, warm-ups, trials,
    # confirming starts, stops); None in reports before 2026-12-06
    wall_s: float | None = None

    @property
    def label(self) -> str:
        return LABELS[self.outcome]

    @property
    def failing(self) -> bool:
        return self.outcome in FAILING

    @property
    def notes(self) -> tuple[str, ...]:
        """Everything a reader should know beside the numbers, one line each."""
        out = [*self.errors, *self.limit_failures]
        if self.outcome == "improved" and self.comparison:
            names = ", ".join(
                f"{m.metric} {m.change:+.1%}" for m in self.comparison if m.verdict == "improvement"
            )
            out.append(f"improved beyond tolerance ({names}); record it with "
                       "--llmperf-update-baselines")
        out.extend(self.messages)
        if self.result is not None:
            out.extend(self.result.notes)
            out.extend(f"WARNING {w}" for w in self.result.warnings)
        return tuple(out)

    def comparison_table(self) -> Any:
        """The comparison as ``regression.Comparison`` (for its table), None without one."""
        if self.comparison is None:
            return None
        from ..regression import Comparison

        if self.comparison_mode is None:
            return Comparison(self.comparison)
        return Comparison(self.comparison, mode=self.comparison_mode)

    def comparison_row(self, metric: str) -> MetricComparison | None:
        for row in self.comparison or ():
            if row.metric == metric:
                return row
        return None

    @classmethod
    def from_verdict(
        cls, verdict: Any, *, hardware_key: str | None = None, git_commit: str | None = None
    ) -> TestRecord:
        comparison = getattr(verdict, "comparison", None)
        return cls(
            test_id=verdict.test_id,
            outcome=classify(verdict),
            hardware_key=hardware_key,
            git_commit=git_commit,
            baseline_status=getattr(verdict, "baseline_status", "none"),
            limits_applied=getattr(verdict, "limits_applied", True),
            limit_failures=tuple(getattr(verdict, "limit_failures", ())),
            errors=tuple(getattr(verdict, "errors", ())),
            messages=tuple(getattr(verdict, "messages", ())),
            comparison=None if comparison is None else tuple(comparison.rows),
            comparison_mode=None if comparison is None else getattr(comparison, "mode", None),
            result=verdict.result,
            baseline=getattr(verdict, "baseline", None),
            base=getattr(verdict, "base_result", None),
            points=tuple(getattr(verdict, "points", ())),
            derived=dict(getattr(verdict, "derived", None) or {}),
            wall_s=getattr(verdict, "wall_s", None),
        )

    def to_json(self) -> dict[str, Any]:
        return finite_or_none({
            "test_id": self.test_id,
            "outcome": self.outcome,
            "verdict": self.label,
            "hardware_key": self.hardware_key,
            "git_commit": self.git_commit,
            "baseline_status": self.baseline_status,
            "limits_applied": self.limits_applied,
            "limit_failures": list(self.limit_failures),
            "errors": list(self.errors),
            "messages": list(self.messages),
            "comparison": None if self.comparison is None
            else [asdict(row) for row in self.comparison],
            "comparison_mode": self.comparison_mode,
            "result": None if self.result is None else self.result.to_json(),
            "baseline": None if self.baseline is None else self.baseline.to_json(),
            "base": None if self.base is None else self.base.to_json(),
            "points": [p.to_json() for p in self.points],
            "speed_factor": self.speed_factor,
            "derived": {k: self.derived[k] for k in sorted(self.derived)},
            "wall_s": self.wall_s,
        })

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TestRecord:
        def nan(v: Any) -> Any:
            return math.nan if v is None else v

        comparison = data.get("comparison")
        return cls(
            test_id=data["test_id"],
            outcome=data["outcome"],
            hardware_key=data.get("hardware_key"),
            git_commit=data.get("git_commit"),
            baseline_status=data.get("baseline_status", "none"),
            limits_applied=data.get("limits_applied", True),
            limit_failures=tuple(data.get("limit_failures", ())),
            errors=tuple(data.get("errors", ())),
            messages=tuple(data.get("messages", ())),
            comparison=None if comparison is None else tuple(
                MetricComparison(**{k: nan(v) if k in _FLOAT_FIELDS else v for k, v in row.items()})
                for row in comparison
            ),
            comparison_mode=data.get("comparison_mode"),
            result=_result(data.get("result")),
            baseline=None if data.get("baseline") is None
            else BaselineEntry.from_json(data["test_id"], data["baseline"]),
            base=_result(data.get("base")),
            points=tuple(r for r in (_result(p) for p in data.get("points", ())) if r is not None),
            speed_factor=float(data.get("speed_factor", 1.0)),
            derived={k: nan(v) for k, v in (data.get("derived") or {}).items()},
            wall_s=data.get("wall_s"),
        )


def _result(data: Mapping[str, Any] | None) -> PerfResult | None:
    if data is None:
        return None
    return PerfResult.from_json(finite_to_nan(data))


def finite_to_nan(value: Any) -> Any:
    """Undo ``finite_or_none`` inside latency distributions (a ``null`` figure is NaN)."""
    if isinstance(value, dict):
        return {k: (math.nan if v is None and k in _DIST_KEYS else finite_to_nan(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [finite_to_nan(v) for v in value]
    return value


_DIST_KEYS = frozenset({"mean", "p50", "p90", "p95", "p99", "max"})
# MetricComparison's figures that are NaN when not measured (``null`` in JSON); the
# optional ones (mde, starts_needed) stay None.
_FLOAT_FIELDS = frozenset({"baseline", "current", "change", "worse_low", "worse_high",
                           "noise_floor"})


def _natural(text: str) -> tuple[Any, ...]:
    """``test[8]`` before ``test[16]``: digit runs compare as numbers."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _order(record: TestRecord) -> tuple[Any, ...]:
    return (_natural(record.test_id), record.hardware_key or "")


@dataclass(frozen=True)
class RunReport:
    """Every perf test of a run (or of several shards), and the machines they ran on."""

    tests: tuple[TestRecord, ...]
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    tool_version: str = ""
    # suitecheck.SuiteCheck per hardware key, when the run applied the suite check; a
    # merge leaves them out (``merge --suite-check`` computes them over the merged tests)
    suite_checks: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        # One canonical order, so a report never depends on which shard finished first.
        object.__setattr__(self, "tests", tuple(sorted(self.tests, key=_order)))

    @classmethod
    def from_verdicts(
        cls,
        verdicts: Iterable[Any],
        *,
        fingerprint: Mapping[str, Any] | None = None,
        hardware_key: str | None = None,
        git_commit: str | None = None,
    ) -> RunReport:
        from .. import __version__

        tests = tuple(
            TestRecord.from_verdict(v, hardware_key=hardware_key, git_commit=git_commit)
            for v in verdicts
        )
        machines = {hardware_key: dict(fingerprint)} if hardware_key and fingerprint else {}
        return cls(tests=tests, machines=machines, tool_version=__version__)

    @property
    def counts(self) -> dict[str, int]:
        """Tests per outcome, most severe first, zero counts left out."""
        counts = {o: 0 for o in OUTCOMES}
        for t in self.tests:
            counts[t.outcome] += 1
        return {o: n for o, n in counts.items() if n}

    @property
    def failed(self) -> bool:
        return any(t.failing for t in self.tests) or any(c.failed for c in self.suite_checks)

    def by_severity(self) -> list[TestRecord]:
        rank = {o: i for i, o in enumerate(OUTCOMES)}
        return sorted(self.tests, key=lambda t: (rank[t.outcome], *_order(t)))

    def to_json(self) -> dict[str, Any]:
        doc = {
            "schema_version": REPORT_SCHEMA_VERSION,
            "tool": {"name": "pytest-llmperf", "version": self.tool_version},
            "summary": {"tests": len(self.tests), "failed": self.failed, "outcomes": self.counts},
            "machines": finite_or_none({k: self.machines[k] for k in sorted(self.machines)}),
            "tests": [t.to_json() for t in self.tests],
        }
        if self.suite_checks:
            doc["suite_checks"] = [c.to_json() for c in self.suite_checks]
        return doc

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunReport:
        from ..suitecheck import SuiteCheck

        return cls(
            tests=tuple(TestRecord.from_json(t) for t in data["tests"]),
            machines={k: dict(v) for k, v in data.get("machines", {}).items()},
            tool_version=data.get("tool", {}).get("version", ""),
            suite_checks=tuple(SuiteCheck.from_json(c) for c in data.get("suite_checks", ())),
        )


class MergeError(ValueError):
    """Shard reports that cannot be one report; the message names the files."""


def _sans_uuids(fp: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fp.items() if k != "gpu_uuids"}


def merge_reports(reports: Sequence[tuple[str, RunReport]]) -> RunReport:
    """One report from shard reports ``[(name, report), ...]``.

    A test may appear once per hardware key (shards on different GPU classes run
    the same suite, each against its own baselines); twice on one is an error, as is
    one hardware key described by two different fingerprints.
    """
    if not reports:
        raise MergeError("nothing to merge: give at least one report")
    seen: dict[tuple[Any, ...], str] = {}
    machines: dict[str, dict[str, Any]] = {}
    machine_from: dict[str, str] = {}
    tests: list[TestRecord] = []
    for name, report in reports:
        for key, fp in report.machines.items():
            # Shards of one hardware key may run on different GPUs of the model (their
            # UUIDs differ); every other fact must agree.
            if key in machines:
                if _sans_uuids(machines[key]) != _sans_uuids(fp):
                    raise MergeError(
                        f"{name}: hardware {key!r} has another fingerprint than in {machine_from[key]}"
                    )
                machines[key] = with_gpu_uuids(machines[key], fp.get("gpu_uuids", ()))
            else:
                machines[key], machine_from[key] = fp, name
        for t in report.tests:
            k = _order(t)
            if k in seen:
                raise MergeError(
                    f"{name}: {t.test_id} on {t.hardware_key or 'unknown hardware'} is also in "
                    f"{seen[k]}: shards must not overlap"
                )
            seen[k] = name
            tests.append(t)
    versions = sorted({r.tool_version for _, r in reports if r.tool_version})
    return RunReport(tests=tuple(tests), machines=machines,
                     tool_version=versions[-1] if versions else "")

