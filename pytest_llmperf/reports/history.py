"""A local history of runs in one SQLite file, and change points across commits.

Each run appends one row per (hardware key, commit) it measured and, per test, every
metric's per-trial values and median. ``python -m pytest_llmperf history`` reads it
back as trends per test and flags a change point: PELT (Killick, Fearnhead and Eckley
2012, via ``ruptures``) on the per-commit medians, normalised by their median, with a
BIC-style penalty scaled by the series' own noise (MAD of successive differences), and
a shift kept only when it is larger than the metric's noise floor.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from ..metrics import METRICS
from .model import RunReport

HISTORY_SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at TEXT NOT NULL,
    git_commit TEXT,
    hardware_key TEXT NOT NULL,
    fingerprint TEXT
);
CREATE TABLE IF NOT EXISTS tests (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    test_id TEXT NOT NULL,
    outcome TEXT NOT NULL,
    config TEXT,
    PRIMARY KEY (run_id, test_id)
);
CREATE TABLE IF NOT EXISTS measurements (
    run_id INTEGER NOT NULL REFERENCES runs(id),
    test_id TEXT NOT NULL,
    metric TEXT NOT NULL,
    median REAL NOT NULL,
    trial_values TEXT NOT NULL,
    PRIMARY KEY (run_id, test_id, metric)
);
CREATE INDEX IF NOT EXISTS measurements_by_test ON measurements (test_id, metric);
"""


# Commits on each side of a change point: one odd commit is noise, two agreeing are a level.
MIN_SEGMENT = 2


class HistoryError(ValueError):
    """The history file is not one this version can use; the message says which and why."""


@dataclass(frozen=True)
class Run:
    id: int
    recorded_at: str
    git_commit: str | None
    hardware_key: str


@dataclass(frozen=True)
class Point:
    """One run's value of one metric for one test."""

    run: Run
    median: float
    values: tuple[float, ...]


@dataclass(frozen=True)
class CommitPoint:
    """The runs of one commit, in the order commits were first measured."""

    commit: str
    runs: tuple[Point, ...]

    @property
    def value(self) -> float:
        return statistics.median(p.median for p in self.runs)


@dataclass(frozen=True)
class ChangePoint:
    """The series shifts at ``index`` (the first commit of the new level)."""

    index: int
    before: float
    after: float

    @property
    def change(self) -> float:
        return self.after / self.before - 1.0


class HistoryStore:
    """The SQLite history file; use as a context manager (closes the connection)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, timeout=60)
            with self._db:
                self._db.executescript(_SCHEMA)
                row = self._db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
                if row is None:
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)",
                                     (str(HISTORY_SCHEMA_VERSION),))
                elif int(row[0]) != HISTORY_SCHEMA_VERSION:
                    raise HistoryError(f"{self.path}: history schema version {row[0]}, this "
                                       f"version reads {HISTORY_SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{self.path}: not a usable history file: {exc}") from None

    def __enter__(self) -> HistoryStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def append(self, report: RunReport, recorded_at: str | None = None) -> list[int]:
        """Store the report's measured tests; one run per (hardware key, commit). Returns run ids."""
        stamp = recorded_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
        groups: dict[tuple[str, str | None], list[Any]] = {}
        for t in report.tests:
            if t.result is None or t.outcome in ("failed", "error"):
                continue  # a failed test body or an error measured nothing trustworthy
            groups.setdefault((t.hardware_key or "unknown", t.git_commit), []).append(t)
        ids = []
        with self._db:  # one transaction: a run is stored whole or not at all
            for (key, commit), tests in groups.items():
                fp = report.machines.get(key)
                cur = self._db.execute(
                    "INSERT INTO runs (recorded_at, git_commit, hardware_key, fingerprint) "
                    "VALUES (?, ?, ?, ?)",
                    (stamp, commit, key, json.dumps(fp, sort_keys=True) if fp else None),
                )
                run_id = int(cur.lastrowid or 0)
                ids.append(run_id)
                for t in tests:
                    r = t.result
                    config = f"{r.engine.label()} {r.workload.label()} [{r.device}]"
                    self._db.execute("INSERT INTO tests VALUES (?, ?, ?, ?)",
                                     (run_id, t.test_id, t.outcome, config))
                    for metric, values in r.metric_values().items():
                        self._db.execute(
                            "INSERT INTO measurements VALUES (?, ?, ?, ?, ?)",
                            (run_id, t.test_id, metric, statistics.median(values),
                             json.dumps(values)),
                        )
        return ids

    def runs(self) -> list[Run]:
        rows = self._db.execute(
            "SELECT id, recorded_at, git_commit, hardware_key FROM runs ORDER BY id"
        ).fetchall()
        return [Run(*row) for row in rows]

    def tests(self, hardware_key: str | None = None) -> list[tuple[str, str]]:
        """(hardware key, test id) pairs with stored measurements, sorted."""
        rows = self._db.execute(
            "SELECT DISTINCT r.hardware_key, t.test_id FROM tests t JOIN runs r ON r.id = t.run_id "
            "WHERE ?1 IS NULL OR r.hardware_key = ?1 ORDER BY 1, 2", (hardware_key,)
        ).fetchall()
        return [(str(a), str(b)) for a, b in rows]

    def metrics(self, hardware_key: str, test_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT DISTINCT m.metric FROM measurements m JOIN runs r ON r.id = m.run_id "
            "WHERE r.hardware_key = ? AND m.test_id = ?", (hardware_key, test_id)
        ).fetchall()
        present = {row[0] for row in rows}
        return [name for name in METRICS if name in present]

    def series(self, hardware_key: str, test_id: str, metric: str) -> list[Point]:
        rows = self._db.execute(
            "SELECT r.id, r.recorded_at, r.git_commit, r.hardware_key, m.median, m.trial_values "
            "FROM measurements m JOIN runs r ON r.id = m.run_id "
            "WHERE r.hardware_key = ? AND m.test_id = ? AND m.metric = ? ORDER BY r.id",
            (hardware_key, test_id, metric),
        ).fetchall()
        return [Point(Run(*row[:4]), float(row[4]), tuple(json.loads(row[5]))) for row in rows]


def by_commit(points: Sequence[Point]) -> list[CommitPoint]:
    """Group runs by commit, commits in the order they were first measured."""
    order: dict[str, list[Point]] = {}
    for p in points:
        order.setdefault(p.run.git_commit or f"run {p.run.id}", []).append(p)
    return [CommitPoint(c, tuple(ps)) for c, ps in order.items()]


def change_points(values: Sequence[float], *, min_change: float = 0.0,
                  min_size: int = MIN_SEGMENT) -> list[ChangePoint]:
    """Level shifts in ``values`` (PELT, l2 cost); only shifts beyond ``min_change``.

    Values are divided by their median first, so the penalty and ``min_change`` are
    relative. Fewer than ``2 * min_size`` values have no detectable change point.
    """
    n = len(values)
    if n < 2 * min_size:
        return []
    import numpy as np
    import ruptures

    x = np.asarray(values, dtype=float)
    x = x / np.median(x)
    diffs = np.diff(x)
    # Noise of one value, robustly, from successive differences (a level shift is one
    # outlying difference and barely moves their MAD). 0.1% floor: a perfectly flat
    # series must not turn every tiny wiggle into a change point.
    sigma = max(float(np.median(np.abs(diffs - np.median(diffs)))) * 1.4826 / math.sqrt(2), 1e-3)
    penalty = 3.0 * sigma**2 * math.log(n)
    ends = ruptures.Pelt(model="l2", min_size=min_size, jump=1).fit(x.reshape(-1, 1)).predict(
        pen=penalty)
    out = []
    bounds = [0, *ends]
    for i in range(1, len(bounds) - 1):
        start, cut, stop = bounds[i - 1], bounds[i], bounds[i + 1]
        before = float(np.mean(values[start:cut]))
        after = float(np.mean(values[cut:stop]))
        if abs(after / before - 1.0) > min_change:
            out.append(ChangePoint(cut, before, after))
    return out


def metric_change_points(metric: str, commits: Sequence[CommitPoint]) -> list[ChangePoint]:
    """Change points of one metric across commits, ignoring shifts within its noise floor."""
    spec = METRICS.get(metric)
    floor = spec.noise_floor if spec is not None else 0.0
    return change_points([c.value for c in commits], min_change=floor)


def trend_lines(store: HistoryStore, metrics: Sequence[str], *, hardware_key: str | None = None,
                test_filter: str | None = None) -> list[str]:
    """The history as text: per hardware and test, one row per commit and the change points."""
    from ..regression import _fmt_pct, _fmt_value
    from .table import text_table

    runs = store.runs()
    lines = [f"{store.path}: {len(runs)} run(s), "
             f"{len({r.git_commit for r in runs})} commit(s), "
             f"{len({r.hardware_key for r in runs})} hardware key(s)"]
    for key, test_id in store.tests(hardware_key):
        if test_filter and test_filter not in test_id:
            continue
        present = [m for m in metrics if m in store.metrics(key, test_id)]
        series = {m: by_commit(store.series(key, test_id, m)) for m in present}
        if not series:
            continue
        commits = [c.commit for c in next(iter(series.values()))]
        header = ["commit", "runs", *present]
        rows = []
        for i, commit in enumerate(commits):
            cells = [commit[:12], ""]
            for m in present:
                points = {c.commit: c for c in series[m]}
                c = points.get(commit)
                if c is None:
                    cells.append("-")
                    continue
                cells[1] = str(len(c.runs))
                text = _fmt_value(c.value, METRICS[m].unit if m in METRICS else "")
                if i:
                    prev = points.get(commits[i - 1])
                    if prev is not None:
                        text += f" ({_fmt_pct(c.value / prev.value - 1.0)})"
                cells.append(text)
            rows.append(cells)
        lines.append("")
        lines.append(f"{test_id} on {key}")
        lines.extend("  " + ln for ln in text_table(header, rows, [False] + [True] * (len(header) - 1)))
        found = False
        for m, commit_points in series.items():
            for cp in metric_change_points(m, commit_points):
                found = True
                at = commit_points[cp.index].commit[:12]
                after = commit_points[cp.index - 1].commit[:12]
                lines.append(f"  change point: {m} {_fmt_pct(cp.change)} at {at} (after {after}; "
                             f"mean {cp.before:.4g} before, {cp.after:.4g} from there on)")
        if len(commits) < 2 * MIN_SEGMENT:
            lines.append(f"  {len(commits)} commit(s): change points need {2 * MIN_SEGMENT}")
        elif not found:
            lines.append("  no change point beyond the metrics' noise floors")
    return lines
