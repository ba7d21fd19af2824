"""Baseline files: the per-trial numbers a PR is compared against, kept in the repo.

One JSON file per suite file and hardware, ``<root>/<hardware_key>/<suite path>.json``,
so a PR that changes performance shows the new numbers as a readable diff. Files are
validated against ``schema/baseline.v2.json`` on every read and before every write,
and every complaint names the file and the JSON path, because these files are edited
by hand and merged by git. Writes are atomic and serialised across processes
(pytest-xdist workers record baselines of one suite file at the same time).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import importlib.resources
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Any

from . import stats
from .atomic import write_atomic
from .config import EngineConfig, Workload
from .fingerprint import Fingerprint
from .hostspeed import MAX_RATIO, HostSpeed
from .metrics import METRICS
from .results import PerfResult

SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)
SCHEMA_RESOURCE = "schema/baseline.v2.json"
# Version 1 lacks per-start medians; its files are read as they are and rewritten as
# version 2 by the next --llmperf-update-baselines (see ``migrate``).

# Workload keys that change how long we measure, or inject a test-only slowdown, but
# not what is measured: a baseline recorded with other values still applies.
IGNORED_WORKLOAD_KEYS = frozenset({"slowdown", "trials", "warmup", "min_duration_s"})

# An entry keeps at most this many recordings, one per runner speed state (its own and
# SpeedState's): the 2-core CPU runners were seen in three states, probe about 35, 64
# and 130-190, with engines 1.3-4.7x apart between the last two.
MAX_SPEED_STATES = 3

_HARDWARE_KEY = re.compile(r"[a-z0-9][a-z0-9._-]*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class BaselineError(Exception):
    """A baseline file is unreadable or invalid; the message says where and why.

    ``file``, ``json_path`` (``$.entries["t"].metrics.x.values[2]``) and ``reason`` are
    also available as attributes. For invalid JSON, ``json_path`` is None and ``line``
    and ``column`` are set instead.
    """

    def __init__(
        self,
        file: Path | str,
        json_path: str | None,
        reason: str,
        *,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.file = str(file)
        self.json_path = json_path
        self.reason = reason
        self.line = line
        self.column = column
        if line is not None:
            where = f"{self.file}:{line}:{column}"
        else:
            where = f"{self.file}: {json_path or '$'}"
        super().__init__(f"{where}: {reason}")


def format_json_path(parts: Sequence[str | int]) -> str:
    """``["entries", "a.py::t", "metrics"]`` -> ``$.entries["a.py::t"].metrics``."""
    out = ["$"]
    for part in parts:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif _IDENTIFIER.fullmatch(part):
            out.append(f".{part}")
        else:
            out.append(f"[{json.dumps(part, ensure_ascii=False)}]")
    return "".join(out)


@functools.lru_cache(maxsize=4)
def _schema_text(version: int = SCHEMA_VERSION) -> str:
    resource = f"schema/baseline.v{version}.json"
    try:
        return importlib.resources.files("pytest_llmperf").joinpath(resource).read_text(
            encoding="utf-8"
        )
    except (FileNotFoundError, ModuleNotFoundError, TypeError, NotADirectoryError):
        # Fallback for unusual loaders that cannot serve package data.
        return (Path(__file__).parent / resource).read_text(encoding="utf-8")


def load_schema(version: int = SCHEMA_VERSION) -> dict[str, Any]:
    """The JSON Schema of a baseline file (a fresh copy; callers may mutate it)."""
    schema: dict[str, Any] = json.loads(_schema_text(version))
    return schema


@functools.lru_cache(maxsize=4)
def _validator(version: int = SCHEMA_VERSION) -> Any:
    import jsonschema  # deferred: only needed once a baseline is read or written

    return jsonschema.Draft202012Validator(load_schema(version))


def migrate(doc: dict[str, Any]) -> dict[str, Any]:
    """A validated document of any supported version as the current version.

    v1 -> v2: per-start medians are new and optional, so entries carry over as they
    are (their gate falls back to the pooled trials as one start).
    """
    if doc.get("schema_version") == 1:
        doc = {**doc, "schema_version": 2}
    return doc


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class MetricRecord:
    """Per-trial values of one metric, with their median and MAD for quick reading."""

    values: tuple[float, ...]
    median: float
    mad: float
    # One median per engine start the values were pooled from (schema v2); None in
    # version 1 files, where all values count as one start.
    start_medians: tuple[float, ...] | None = None

    @classmethod
    def from_values(cls, values: Sequence[float],
                    starts: Sequence[Sequence[float]] | None = None) -> MetricRecord:
        """Summarise values; they must be positive and finite (gates compare ratios).

        ``starts``: the same values grouped by engine start (their concatenation is
        ``values``); each start's median is kept for the gate's noise estimate.
        """
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("a metric needs at least one value")
        if not all(math.isfinite(v) and v > 0 for v in vals):
            raise ValueError(f"metric values must be positive and finite, got {list(vals)}")
        medians = None
        if starts is not None:
            medians = tuple(stats.median(s) for s in starts if len(s))
        return cls(values=vals, median=stats.median(vals), mad=stats.mad(vals),
                   start_medians=medians or None)

    def per_start(self) -> tuple[float, ...]:
        """Per-start medians; a version 1 record is one start (the median of its values)."""
        return self.start_medians or (self.median,)

    def pooled_with(self, newer: MetricRecord) -> MetricRecord:
        """This record and a newer recording of the same metric as one: values and
        per-start medians concatenated (this record's first), median and MAD recomputed."""
        values = (*self.values, *newer.values)
        return MetricRecord(values=values, median=stats.median(values), mad=stats.mad(values),
                            start_medians=(*self.per_start(), *newer.per_start()))

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"values": list(self.values), "median": self.median, "mad": self.mad}
        if self.start_medians:
            data["start_medians"] = list(self.start_medians)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MetricRecord:
        medians = data.get("start_medians")
        return cls(
            values=tuple(float(v) for v in data["values"]),
            median=float(data["median"]),
            mad=float(data["mad"]),
            start_medians=tuple(float(v) for v in medians) if medians else None,
        )


def _jsonable(value: Any) -> Any:
    """The value as it will read back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(value))


def _field_defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = _jsonable(f.default)
        elif f.default_factory is not MISSING:
            out[f.name] = _jsonable(f.default_factory())
    return out


def _render(value: Any) -> str:
    return "absent" if value is MISSING else json.dumps(value, sort_keys=True)


def _probe(host_speed: Mapping[str, Any] | None) -> HostSpeed | None:
    if host_speed is None:
        return None
    with contextlib.suppress(KeyError, TypeError, ValueError):
        return HostSpeed.from_json(host_speed)
    return None


@dataclass(frozen=True)
class SpeedState:
    """Another recording of an entry's test, made while the runner ran in another speed
    state (``host_speed``: its probe then). A CPU runner of one hardware key can run in
    states 2-5x apart for hours, and its engines do not follow the probe's ratio between
    them (1.3-4.7x across the suites for a probe ratio of 2.07), so scaling one
    recording cannot serve both: the gate compares with the recording of the state
    nearest the current probe (``gate.speed_state``)."""

    host_speed: dict[str, Any]
    metrics: dict[str, MetricRecord]
    recorded_at: str
    git_commit: str | None

    def to_json(self) -> dict[str, Any]:
        return {"host_speed": self.host_speed,
                "metrics": {name: rec.to_json() for name, rec in self.metrics.items()},
                "recorded_at": self.recorded_at, "git_commit": self.git_commit}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SpeedState:
        return cls(host_speed=dict(data["host_speed"]),
                   metrics={name: MetricRecord.from_json(m) for name, m in data["metrics"].items()},
                   recorded_at=data["recorded_at"], git_commit=data.get("git_commit"))


def _comparable(section: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in section.items() if k not in IGNORED_WORKLOAD_KEYS}


@dataclass(frozen=True)
class BaselineEntry:
    """What was measured for one test id on one hardware, and under which config."""

    test_id: str
    engine: dict[str, Any]
    workload: dict[str, Any]
    metrics: dict[str, MetricRecord]
    fingerprint: dict[str, Any]
    recorded_at: str
    git_commit: str | None
    vllm_version: str | None
    # hostspeed.HostSpeed.to_json() of the recording session, when it was probed
    host_speed: dict[str, Any] | None = None
    # Recordings of the same test in other runner speed states, newest first (CPU runs)
    speed_states: tuple[SpeedState, ...] = ()

    @classmethod
    def from_result(
        cls,
        test_id: str,
        result: PerfResult,
        fingerprint: Fingerprint,
        git_commit: str | None,
        recorded_at: str | None = None,
    ) -> BaselineEntry:
        """Record a fresh result (one engine start); see ``from_starts``."""
        return cls.from_starts(test_id, [result], fingerprint, git_commit, recorded_at)

    @classmethod
    def from_starts(
        cls,
        test_id: str,
        starts: Sequence[PerfResult],
        fingerprint: Fingerprint,
        git_commit: str | None,
        recorded_at: str | None = None,
        host_speed: dict[str, Any] | None = None,
    ) -> BaselineEntry:
        """Record the results of one workload in one or more engine starts: their trials
        pooled, and each start's median kept (the runner's between-start noise).
        Metrics with zero or non-finite values are left out: a relative gate cannot
        compare against them. The first start gives the config and versions."""
        if not starts:
            raise ValueError("a baseline entry needs at least one measured engine start")
        result = starts[0]
        per_start = [r.metric_values() for r in starts]
        metrics: dict[str, MetricRecord] = {}
        for name in result.metric_values():
            if name not in METRICS:
                continue
            groups = [v[name] for v in per_start if name in v]
            with contextlib.suppress(ValueError):
                metrics[name] = MetricRecord.from_values(
                    [x for g in groups for x in g], groups
                )
        if recorded_at is None:
            recorded_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(
            test_id=test_id,
            engine=_jsonable(result.engine.to_json()),
            workload=_jsonable(result.workload.to_json()),
            metrics=metrics,
            fingerprint=_jsonable(fingerprint.to_json()),
            recorded_at=recorded_at,
            git_commit=git_commit,
            vllm_version=result.vllm_version or fingerprint.vllm_version,
            host_speed=host_speed,
        )

    def states(self) -> list[BaselineEntry]:
        """The entry as recorded in each runner speed state it holds, its own recording
        first: plain entries (no states of their own), each with that recording's
        metrics, probe, time and commit."""
        plain = replace(self, speed_states=())
        return [plain, *(replace(plain, metrics=s.metrics, host_speed=s.host_speed,
                                 recorded_at=s.recorded_at, git_commit=s.git_commit)
                         for s in self.speed_states)]

    def keeping_states_of(self, previous: BaselineEntry | None, *, apart: float = MAX_RATIO,
                          keep: int = MAX_SPEED_STATES) -> BaselineEntry:
        """This fresh recording, with the recordings of ``previous`` (the stored entry it
        replaces) that were made in another runner speed state: those whose probe is
        more than ``apart`` times off this one's and off every state kept before them
        (newest first), up to ``keep`` recordings in all. Within ``apart``
        (``hostspeed.MAX_RATIO``) two probes read one speed state, so one recording serves.

        Nothing is kept unless both were probed with one probe version and measured the
        same config (engine and workload, but for IGNORED_WORKLOAD_KEYS) with the same
        software (fingerprint): a recording of other code or another config is stale."""
        mine = _probe(self.host_speed)
        if previous is None or mine is None or keep < 2 or not self._measures_as(previous):
            return self
        scores = [mine.score]
        kept: list[SpeedState] = []
        for old in previous.states():
            probe = _probe(old.host_speed)
            if probe is None or probe.version != mine.version or old.host_speed is None:
                continue
            if all(abs(math.log(probe.score / s)) > math.log(apart) for s in scores):
                scores.append(probe.score)
                kept.append(SpeedState(old.host_speed, old.metrics, old.recorded_at, old.git_commit))
            if len(kept) == keep - 1:
                break
        return replace(self, speed_states=tuple(kept))

    def appended_to(self, previous: BaselineEntry | None, *,
                    apart: float = MAX_RATIO) -> tuple[BaselineEntry, str]:
        """This fresh recording pooled into the recording of ``previous`` made in the same
        runner speed state (probe within ``apart`` of this one's; the nearest if several),
        so that a baseline can gather engine starts from several sessions or days instead
        of carrying one session's offset. The other states are kept as
        ``keeping_states_of`` keeps them. Returns the entry and a sentence saying what was
        pooled, or why nothing was: no previous entry, another config or software (stale),
        no probe, or no recording in this speed state; then the entry is this recording
        with the other states kept, as without appending."""
        mine = _probe(self.host_speed)
        if previous is None:
            why = "no stored entry to append to"
        elif not self._measures_as(previous):
            why = "the stored entry measured another config or software, so it was replaced"
        elif mine is None and _probe(previous.host_speed) is None:
            return self._pooled_into(previous, previous, apart), (
                f"appended to the stored recording ({previous.recorded_at}); "
                f"{self._starts_text(previous)}")
        elif mine is None:
            why = "this run has no runner-speed probe to match a stored speed state with"
        else:
            old, gap = previous.nearest_state(mine)
            if gap <= math.log(apart):
                assert old.host_speed is not None
                return self._pooled_into(old, previous, apart), (
                    f"appended to the recording of probe {old.host_speed['score']:.4g} "
                    f"({old.recorded_at}); {self._starts_text(old)}")
            why = f"no stored recording in this runner speed state (probe {mine.score:.4g})"
        return self.keeping_states_of(previous, apart=apart), f"nothing appended: {why}"

    def _measures_as(self, previous: BaselineEntry) -> bool:
        """Whether ``previous`` measured the same config (engine and workload, but for
        IGNORED_WORKLOAD_KEYS) with the same software (fingerprint)."""
        return (previous.fingerprint == self.fingerprint and previous.engine == self.engine
                and _comparable(previous.workload) == _comparable(self.workload))

    def recorded_speed(self) -> HostSpeed | None:
        """The runner-speed probe this recording was made at; None without a readable one."""
        return _probe(self.host_speed)

    def nearest_state(self, now: HostSpeed | None) -> tuple[BaselineEntry, float]:
        """The recording (of ``states()``) whose probe is nearest ``now``, by the least
        |ln(now / recorded)| of their scores, the newest on a tie, and that distance: inf
        when there is no comparable probe (another probe version, or none), and then
        the newest recording."""
        def distance(state: BaselineEntry) -> float:
            recorded = state.recorded_speed()
            if now is None or recorded is None or recorded.version != now.version or now.score <= 0:
                return math.inf
            return abs(math.log(now.score / recorded.score))

        best = min(self.states(), key=distance)  # min keeps the first (newest) of equals
        return best, distance(best)

    def _starts_text(self, old: BaselineEntry) -> str:
        before = max((len(r.per_start()) for r in old.metrics.values()), default=0)
        added = max((len(r.per_start()) for r in self.metrics.values()), default=0)
        return f"{before} + {added} engine start(s) pooled"

    def _pooled_into(self, old: BaselineEntry, previous: BaselineEntry,
                     apart: float) -> BaselineEntry:
        """This recording's metrics pooled with ``old``'s (one state of ``previous``),
        the other states of ``previous`` kept."""
        metrics = {name: (old.metrics[name].pooled_with(rec) if name in old.metrics else rec)
                   for name, rec in self.metrics.items()}
        # The state pooled into lies within ``apart`` of this probe, so keeping_states_of
        # keeps only the others (none without a probe).
        return replace(self, metrics=metrics).keeping_states_of(previous, apart=apart)

    def metric_values(self) -> dict[str, list[float]]:
        """Per-trial values by metric name, shaped like ``PerfResult.metric_values()``."""
        return {name: list(rec.values) for name, rec in self.metrics.items()}

    def start_medians(self) -> dict[str, list[float]]:
        """Per-engine-start medians by metric name (one per start; one in total for a
        version 1 entry)."""
        return {name: list(rec.per_start()) for name, rec in self.metrics.items()}

    def parsed_fingerprint(self) -> Fingerprint:
        """The stored fingerprint as an object (e.g. for ``software_differences``)."""
        return Fingerprint.from_json(self.fingerprint)

    def stale_reasons(self, engine: EngineConfig, workload: Workload) -> list[str]:
        """Why this baseline no longer measures the same thing; empty when it still does.

        One string per differing key, e.g. ``"engine.max_num_seqs: baseline 24, now 20"``.
        Keys only a newer config knows are fine while they hold their default (the
        baseline ran with that behaviour). Keys in IGNORED_WORKLOAD_KEYS are skipped.
        """
        reasons: list[str] = []
        for section, stored, current, ignored, defaults in (
            ("engine", self.engine, engine.to_json(), frozenset(), _field_defaults(EngineConfig)),
            ("workload", self.workload, workload.to_json(), IGNORED_WORKLOAD_KEYS,
             _field_defaults(Workload)),
        ):
            now = _jsonable(current)
            keys = list(now) + sorted(k for k in stored if k not in now)
            for key in keys:
                if key in ignored:
                    continue
                before = stored.get(key, MISSING)
                after = now.get(key, MISSING)
                if before is MISSING and key in defaults and after == defaults[key]:
                    continue
                if before is MISSING or after is MISSING or before != after:
                    reasons.append(
                        f"{section}.{key}: baseline {_render(before)}, now {_render(after)}"
                    )
        return reasons

    def to_json(self) -> dict[str, Any]:
        """The entry as stored under ``entries[test_id]`` (the id is the key, not a field)."""
        return {
            "engine": self.engine,
            "workload": self.workload,
            "metrics": {name: rec.to_json() for name, rec in self.metrics.items()},
            "fingerprint": self.fingerprint,
            "recorded_at": self.recorded_at,
            "git_commit": self.git_commit,
            "vllm_version": self.vllm_version,
            # only when probed, so that entries without it stay valid version 1 entries
            **({"host_speed": self.host_speed} if self.host_speed is not None else {}),
            **({"speed_states": [s.to_json() for s in self.speed_states]}
               if self.speed_states else {}),
        }

    @classmethod
    def from_json(cls, test_id: str, data: Mapping[str, Any]) -> BaselineEntry:
        return cls(
            test_id=test_id,
            engine=dict(data["engine"]),
            workload=dict(data["workload"]),
            metrics={name: MetricRecord.from_json(m) for name, m in data["metrics"].items()},
            fingerprint=dict(data["fingerprint"]),
            recorded_at=data["recorded_at"],
            git_commit=data.get("git_commit"),
            vllm_version=data.get("vllm_version"),
            host_speed=data.get("host_speed"),
            speed_states=tuple(SpeedState.from_json(s) for s in data.get("speed_states", ())),
        )


# ------------------------------------------------------------------------- validation


class _DuplicateKeys(dict):
    """A JSON object that repeated a key (json keeps the last silently; we complain)."""

    duplicates: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dups: list[str] = []
    for key, value in pairs:
        if key in out:
            dups.append(key)
        out[key] = value
    if not dups:
        return out
    flagged = _DuplicateKeys(out)
    flagged.duplicates = dups
    return flagged


def _find_non_json(value: Any, path: list[str | int]) -> tuple[list[str | int], str] | None:
    """First duplicate key or NaN/Infinity in a parsed or about-to-be-written document."""
    if isinstance(value, float) and not math.isfinite(value):
        return path, f"{value} is not a valid JSON number (numbers must be finite)"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > _MAX_FLOAT_INT:
        return path, f"{str(value)[:12]}... ({len(str(abs(value)))} digits) is too large a number"
    if isinstance(value, dict):
        if isinstance(value, _DuplicateKeys):
            return path, f"duplicate key {value.duplicates[0]!r} (e.g. a bad merge)"
        for key, item in value.items():
            found = _find_non_json(item, [*path, key])
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            found = _find_non_json(item, [*path, i])
            if found:
                return found
    return None


_MAX_FLOAT_INT = int(sys.float_info.max)


def _check_metric_values(file: Path, doc: dict[str, Any]) -> None:
    """What the schema cannot say: a metric's median lies within its own values."""
    for test_id, entry in doc.get("entries", {}).items():
        recordings: list[tuple[list[str | int], Any]] = [([], entry)]
        recordings += [(["speed_states", i], state)
                       for i, state in enumerate(entry.get("speed_states") or ())]
        for where, recording in recordings:
            for name, record in (recording.get("metrics") or {}).items():
                values, median = record.get("values"), record.get("median")
                if not values or not isinstance(median, (int, float)):
                    continue  # the schema decides whether that shape is allowed
                if not min(values) <= median <= max(values):
                    raise BaselineError(
                        file,
                        format_json_path(["entries", test_id, *where, "metrics", name, "median"]),
                        f"{record['median']} lies outside its values "
                        f"[{min(values)}, {max(values)}] (hand-edited? re-record it)",
                    )


def _check_document(file: Path, doc: Any, hardware_key: str) -> None:
    """Raise BaselineError unless ``doc`` is a valid baseline file for ``hardware_key``."""
    found = _find_non_json(doc, [])
    if found:
        raise BaselineError(file, format_json_path(found[0]), found[1])
    if not isinstance(doc, dict):
        raise BaselineError(file, "$", f"expected a JSON object, got {type(doc).__name__}")
    version = doc.get("schema_version", MISSING)
    if version is not MISSING and (
        isinstance(version, bool) or version not in SUPPORTED_SCHEMA_VERSIONS
    ):
        supported = ", ".join(str(v) for v in SUPPORTED_SCHEMA_VERSIONS)
        newer = (
            " (written by a newer pytest-llmperf? upgrade it)"
            if isinstance(version, int) and not isinstance(version, bool)
            and version > max(SUPPORTED_SCHEMA_VERSIONS)
            else ""
        )
        raise BaselineError(
            file,
            "$.schema_version",
            f"unsupported schema_version {json.dumps(version)}; this version of "
            f"pytest-llmperf reads schema_version {supported}{newer}",
        )
    import jsonschema

    errors = list(_validator(int(version) if version is not MISSING else SCHEMA_VERSION)
                  .iter_errors(doc))
    if errors:
        error = jsonschema.exceptions.best_match(errors)
        parts = list(error.absolute_path)
        reason = error.message
        if error.validator == "pattern" and parts[-1:] == ["recorded_at"]:
            reason = (f"{error.instance!r} is not an ISO-8601 timestamp with a time zone, "
                      "e.g. '2025-01-02T03:04:05+00:00'")
        if error.validator == "additionalProperties" and parts[-1:] == ["metrics"]:
            reason += f"; known metrics: {', '.join(METRICS)}"
        if len(errors) > 1:
            reason += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
        raise BaselineError(file, format_json_path(parts), reason)
    _check_metric_values(file, doc)
    if doc["hardware_key"] != hardware_key:
        raise BaselineError(
            file,
            "$.hardware_key",
            f"file says {doc['hardware_key']!r} but lies in the directory for {hardware_key!r}; "
            "baselines of one hardware must not be compared against another",
        )


def _parse(file: Path, text: str, hardware_key: str) -> dict[str, Any]:
    try:
        doc = json.loads(text, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as exc:
        raise BaselineError(
            file, None, f"invalid JSON: {exc.msg}", line=exc.lineno, column=exc.colno
        ) from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise BaselineError(file, "$", f"invalid JSON: {exc}") from None
    except RecursionError:
        raise BaselineError(file, "$", "invalid JSON: nested too deeply") from None
    try:
        _check_document(file, doc, hardware_key)
    except RecursionError:  # parsed, but deeper than the checks can walk
        raise BaselineError(file, "$", "nested too deeply to be a baseline file") from None
    result: dict[str, Any] = migrate(doc)
    return result


# ---------------------------------------------------------------------------- storage


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``lock_path``; the file is removed on release.

    Removing it keeps the baselines directory clean for ``git add``. A waiter that
    locked the file just before it was unlinked notices (the path no longer names its
    inode) and retries on the new file, so two holders can never overlap.
    """
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            mine = os.fstat(fd)
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
        except BaseException:
            os.close(fd)
            raise
        if current is not None and (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
            break
        os.close(fd)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(fd)  # releases the lock


class BaselineStore:
    """Baselines of one hardware under ``root`` (``root/<hardware_key>/<suite>.json``)."""

    def __init__(self, root: Path | str, hardware_key: str) -> None:
        if not _HARDWARE_KEY.fullmatch(hardware_key):
            raise ValueError(
                f"hardware_key={hardware_key!r}: must be a lower-case slug "
                "([a-z0-9][a-z0-9._-]*), e.g. Fingerprint.hardware_key"
            )
        self.root = Path(root)
        self.hardware_key = hardware_key
        self._cache: dict[Path, tuple[tuple[int, int, int], dict[str, BaselineEntry]]] = {}

    def __repr__(self) -> str:
        return f"BaselineStore(root={str(self.root)!r}, hardware_key={self.hardware_key!r})"

    @property
    def directory(self) -> Path:
        return self.root / self.hardware_key

    def path_for(self, suite_file: str | os.PathLike[str]) -> Path:
        """Baseline file of a suite file given relative to the rootdir.

        ``suites/test_decode.py`` -> ``root/<hardware_key>/suites/test_decode.json``.
        Absolute paths and paths that climb out with '..' are rejected (ValueError).
        """
        raw = os.fspath(suite_file)
        if not raw or PurePath(raw).is_absolute() or raw.startswith(("/", "\\")):
            raise ValueError(
                f"suite file {raw!r}: expected a path relative to the rootdir, "
                "e.g. 'suites/test_decode.py'"
            )
        normal = PurePath(os.path.normpath(raw))
        if normal.parts[:1] in ((".",), ("..",)) or not normal.name:
            raise ValueError(f"suite file {raw!r}: escapes the baselines directory")
        return self.directory / normal.with_suffix(".json")

    def _lock_path(self, target: Path) -> Path:
        return target.with_name(f".{target.name}.lock")

    def _read(self, target: Path) -> tuple[str, dict[str, Any]] | None:
        try:
            raw = target.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:  # a directory in its place, no permission, an I/O error
            raise BaselineError(target, "$", f"cannot read: {exc.strerror or exc}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BaselineError(
                target, "$", f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
        return text, _parse(target, text, self.hardware_key)

    def load(self, suite_file: str | os.PathLike[str]) -> dict[str, BaselineEntry]:
        """All entries of a suite file's baseline; empty when there is none yet."""
        target = self.path_for(suite_file)
        try:
            st = target.stat()
        except FileNotFoundError:
            self._cache.pop(target, None)
            return {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._cache.get(target)
        if cached and cached[0] == stamp:
            return dict(cached[1])
        read = self._read(target)
        if read is None:
            return {}
        entries = {
            test_id: BaselineEntry.from_json(test_id, data)
            for test_id, data in read[1]["entries"].items()
        }
        self._cache[target] = (stamp, entries)
        return dict(entries)

    def get(self, suite_file: str | os.PathLike[str], test_id: str) -> BaselineEntry | None:
        """The baseline of one test, or None when it has never been recorded here."""
        return self.load(suite_file).get(test_id)

    def record(
        self,
        suite_file: str | os.PathLike[str],
        test_id: str,
        starts: Sequence[PerfResult],
        fingerprint: Fingerprint,
        git_commit: str | None,
        *,
        host_speed: dict[str, Any] | None = None,
        append: bool = False,
    ) -> tuple[BaselineEntry, list[str]]:
        """Record ``starts`` (engine starts of one workload) as ``test_id``'s baseline and
        write it (``update``). The stored entry's recordings of other runner speed states
        are kept (``keeping_states_of``); with ``append`` the starts are pooled into the
        recording of this speed state instead of replacing it (``appended_to``). Returns
        the entry written and sentences saying what was pooled or kept."""
        entry = BaselineEntry.from_starts(test_id, starts, fingerprint, git_commit,
                                          host_speed=host_speed)
        previous = self.get(suite_file, test_id)
        messages: list[str] = []
        if append:
            entry, pooled = entry.appended_to(previous)
            messages.append(pooled)
        else:
            entry = entry.keeping_states_of(previous)
        if entry.speed_states:
            kept = ", ".join(f"{s.host_speed['score']:.4g} ({s.recorded_at})"
                             for s in entry.speed_states if s.host_speed is not None)
            messages.append(f"kept the baseline's recordings of other runner speed states, "
                            f"probe {kept}; delete the entry to drop them")
        self.update(suite_file, {test_id: entry})
        return entry, messages

    def update(
        self, suite_file: str | os.PathLike[str], entries: Mapping[str, BaselineEntry]
    ) -> Path:
        """Merge ``entries`` into the suite's baseline file, atomically; return its path.

        Same test ids are replaced, others kept. The current file is re-read under an
        exclusive lock so concurrent writers (xdist workers) never lose each other's
        entries; an invalid current file raises BaselineError and is left untouched.
        """
        target = self.path_for(suite_file)
        new: dict[str, Any] = {}
        for test_id, entry in entries.items():
            if not isinstance(entry, BaselineEntry):
                raise TypeError(f"entries[{test_id!r}]: expected BaselineEntry, got {entry!r}")
            if entry.test_id != test_id:
                raise ValueError(f"entries[{test_id!r}] holds the entry of {entry.test_id!r}")
            new[test_id] = entry.to_json()
        try:
            return self._update(target, new)
        except OSError as exc:  # the old file, if any, is untouched (write_atomic)
            raise BaselineError(target, "$", f"cannot write: {exc.strerror or exc}") from None

    def _update(self, target: Path, new: dict[str, Any]) -> Path:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self._lock_path(target)):
            current = self._read(target)  # validated: only the new entries need checking
            envelope = {"schema_version": SCHEMA_VERSION, "hardware_key": self.hardware_key}
            try:
                _check_document(target, {**envelope, "entries": new}, self.hardware_key)
            except BaselineError as exc:
                raise BaselineError(
                    target, exc.json_path, f"refusing to write: {exc.reason}"
                ) from None
            merged = dict(current[1]["entries"]) if current else {}
            merged.update(new)
            doc = {**envelope, "entries": merged}
            text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise BaselineError(
                    target, "$", f"refusing to write: text is not valid Unicode ({exc.reason})"
                ) from None
            if current is None or current[0] != text:
                write_atomic(target, data)
        return target
