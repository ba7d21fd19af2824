"""How far an unchanged tree's whole run drifts on one runner, learned from its own runs.

The suite check (suitecheck.py) fails a run whose tests moved together, and a quarter of
the tests' tolerance is its default threshold. That holds where a whole runner is steady
between sessions: on one H100, ITL p50 moved 0.4% across three engine starts. The 2-core
CPU VMs are not: at one probe score, unchanged runs' median throughput change over the
suites ranged -10.7% to +22.2% between sessions, TPOT p50 -19.3% to +20.8%, and ITL p50
reached +18.9% in CI (stop 37) against an 18.75% threshold, failing an unchanged tree
(benchmarks/RESULTS.md, "The CPU main job's run-to-run drift"). Nothing in the session
measures that drift (the speed probe reads the same score on both sides of it), so it is
learned the way a test's noise is, from the runner's own unchanged runs:
``baselines/<hardware_key>/run-drift.json`` lists each unchanged run's median change per
metric (``python -m pytest_llmperf drift add REPORT.json``), and the suite check's
threshold for a metric is never below

    t(1 - alpha, n) * sqrt(mean(change**2))

over the n recorded runs that have it (a one-sided bound on the drift of one more
unchanged run, the recorded changes taken as zero-mean: their mean offset counts as
drift too). Fewer than ``MIN_RUNS`` runs teach nothing; the file is optional, and a
runner without one keeps the share rule alone. The price is stated in every verdict: on
a runner that drifts by 14%, a whole-run loss must be about 35% to be called.

Pure logic and file handling: the plugin and ``python -m pytest_llmperf merge`` read the
file beside the baselines; paired mode (``--llmperf-ab``) compares within one session,
where the runner's drift cancels, so the floor is not applied there.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .metrics import METRICS

FILE_NAME = "run-drift.json"
SCHEMA_VERSION = 1
# Two runs give a t quantile of 7 (alpha 0.01) on one degree of freedom: a floor that
# large says nothing. Three is the least that bounds anything.
MIN_RUNS = 3


class DriftError(Exception):
    """A run-drift file is unreadable or invalid, or a report cannot be recorded in it;
    the message names the file and the place in it."""

    def __init__(self, file: Path | str, where: str, reason: str) -> None:
        self.file, self.where, self.reason = str(file), where, reason
        super().__init__(f"{file}: {where}: {reason}")


@dataclass(frozen=True)
class DriftRun:
    """One unchanged run: the suite check's median change per metric (own sign)."""

    label: str
    median_change: Mapping[str, float]
    source: str = ""
    probe: float | None = None
    tests: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label}
        if self.source:
            out["source"] = self.source
        if self.probe is not None:
            out["probe"] = self.probe
        if self.tests is not None:
            out["tests"] = self.tests
        out["median_change"] = {m: round(c, 6) for m, c in self.median_change.items()}
        return out


@dataclass(frozen=True)
class RunDrift:
    """The recorded unchanged runs of one runner (hardware key)."""

    hardware_key: str
    runs: tuple[DriftRun, ...] = ()

    def changes(self, metric: str) -> list[float]:
        return [r.median_change[metric] for r in self.runs if metric in r.median_change]

    def rms(self, metric: str) -> float:
        """The recorded changes' root mean square about zero (nan with none recorded)."""
        values = self.changes(metric)
        return math.sqrt(sum(v * v for v in values) / len(values)) if values else math.nan

    def floor(self, metric: str, alpha: float) -> float:
        """The worsening of ``metric`` one more unchanged run stays below with confidence
        1 - alpha (a one-sided t bound on the recorded changes' RMS); 0.0 with fewer than
        ``MIN_RUNS`` runs."""
        from scipy import stats

        n = len(self.changes(metric))
        if n < MIN_RUNS:
            return 0.0
        return float(stats.t.ppf(1 - alpha, n)) * self.rms(metric)

    def with_run(self, run: DriftRun, file: Path | str = "") -> RunDrift:
        """These runs and ``run``; ``file`` names the file in the error of a repeated label."""
        if any(r.label == run.label for r in self.runs):
            raise DriftError(file or self.hardware_key, "$.runs",
                             f"a run labelled {run.label!r} is already recorded; give another --label")
        return RunDrift(self.hardware_key, (*self.runs, run))

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "hardware_key": self.hardware_key,
                "runs": [r.to_json() for r in self.runs]}


def path_for(root: Path | str, hardware_key: str) -> Path:
    return Path(root) / hardware_key / FILE_NAME


@functools.lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    text = importlib.resources.files("pytest_llmperf").joinpath(
        f"schema/run-drift.v{SCHEMA_VERSION}.json").read_text(encoding="utf-8")
    return jsonschema.Draft202012Validator(json.loads(text))


def load(file: Path | str, hardware_key: str) -> RunDrift | None:
    """The runs recorded in ``file``; None when there is no such file."""
    import jsonschema

    from .baselines import format_json_path

    path = Path(file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DriftError(path, "$", f"unreadable: {exc}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DriftError(path, f"line {exc.lineno} column {exc.colno}",
                         f"invalid JSON: {exc.msg}") from None
    errors = list(_validator().iter_errors(doc))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        raise DriftError(path, format_json_path(list(error.absolute_path)), error.message)
    if doc["hardware_key"] != hardware_key:
        raise DriftError(path, "$.hardware_key",
                         f"file says {doc['hardware_key']!r} but lies in the directory for "
                         f"{hardware_key!r}; one runner's drift says nothing of another's")
    runs = []
    for i, raw in enumerate(doc["runs"]):
        unknown = sorted(set(raw["median_change"]) - set(METRICS))
        if unknown:
            raise DriftError(path, format_json_path(["runs", i, "median_change", unknown[0]]),
                             f"unknown metric; known metrics: {', '.join(METRICS)}")
        runs.append(DriftRun(label=raw["label"], median_change=dict(raw["median_change"]),
                             source=raw.get("source", ""), probe=raw.get("probe"),
                             tests=raw.get("tests")))
    labels = [r.label for r in runs]
    if len(set(labels)) != len(labels):
        twice = next(label for label in labels if labels.count(label) > 1)
        raise DriftError(path, "$.runs", f"the label {twice!r} is recorded twice")
    return RunDrift(hardware_key, tuple(runs))


def load_for(root: Path | str, keys: Iterable[str | None]) -> dict[str | None, RunDrift]:
    """The drift of each hardware key that has a file under ``root``."""
    found: dict[str | None, RunDrift] = {}
    for key in keys:
        if key is None:
            continue
        drift = load(path_for(root, key), key)
        if drift is not None:
            found[key] = drift
    return found


def save(file: Path | str, drift: RunDrift) -> None:
    path = Path(file)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, (json.dumps(drift.to_json(), indent=2) + "\n").encode())


def runs_from_report(report: Any, source: str, label: str,
                     probe: float | None = None) -> list[tuple[str, DriftRun]]:
    """(hardware key, run) per suite check of a report (``reports.model.RunReport``):
    what an unchanged run teaches. Refused where it would teach the wrong thing: a
    paired run (the runner's drift cancels there), a planted slowdown, a run without a
    suite check, or one that compared fewer tests than the check needs."""
    from .suitecheck import MIN_TESTS

    if not report.suite_checks:
        raise DriftError(source, "$.suite_checks",
                         "no suite check in this report (run with the suite check on, "
                         "against stored baselines)")
    for test in report.tests:
        if test.comparison_mode == "paired":
            raise DriftError(source, "$.tests", f"{test.test_id} was compared in paired mode, "
                             "where the runner's drift cancels; record runs against stored baselines")
        slowdown = test.result.workload.slowdown if test.result is not None else 0.0
        if slowdown:
            raise DriftError(source, "$.tests", f"{test.test_id} ran with a planted slowdown "
                             f"({slowdown:g}); only unchanged runs teach drift")
    out = []
    for check in report.suite_checks:
        judged = {s.metric: s for s in check.shifts
                  if s.tests >= MIN_TESTS and math.isfinite(s.median_change)}
        if not judged or check.hardware_key is None:
            raise DriftError(source, "$.suite_checks",
                             f"the suite check on {check.hardware_key or 'unknown hardware'} "
                             f"judged no metric (fewer than {MIN_TESTS} compared tests)")
        out.append((check.hardware_key, DriftRun(
            label=label, source=source, probe=probe,
            tests=max(s.tests for s in judged.values()),
            median_change={m: s.median_change for m, s in judged.items()})))
    return out


def describe(drift: RunDrift, metrics: Sequence[str], alpha: float) -> list[str]:
    """One line per metric: runs, RMS and floor, for ``drift show``."""
    lines = []
    for m in metrics:
        values = drift.changes(m)
        if not values:
            continue
        floor = drift.floor(m, alpha)
        bound = f"floor {floor:.1%}" if floor else f"no floor (fewer than {MIN_RUNS} runs)"
        lines.append(f"{m}: {len(values)} run(s), changes {min(values):+.1%}..{max(values):+.1%}, "
                     f"RMS {drift.rms(m):.1%}: {bound}")
    return lines
