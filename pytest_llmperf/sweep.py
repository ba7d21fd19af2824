"""Config sweeps: engine parameters x load -> a table, the Pareto front, the knee, the best config.

The experiments practitioners run by hand before choosing a serving config (as
``vllm bench sweep`` does): every combination of some engine parameters
(``max_num_seqs``, ``max_num_batched_tokens`` ...) with every load point (batch,
input and output lengths), each measured on a real engine. The caller supplies how
one point is measured, ``run(engine, workload) -> PerfResult``, so the same sweep
runs from a script with an :class:`~pytest_llmperf.engine.EngineManager` or from a
test through the ``llmperf`` fixture. Nothing here imports pytest or vLLM.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .config import EngineConfig, Workload
from .metrics import METRICS
from .results import PerfResult

Runner = Callable[[EngineConfig, Workload], PerfResult]


class SweepError(ValueError):
    """A sweep was asked for something it cannot do; the message names the key."""


def metric(result: PerfResult, name: str) -> float | None:
    """A catalogue metric of a result as one number (the median over trials)."""
    if name not in METRICS:
        raise SweepError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
    values = result.metric_values().get(name)
    if name == "preemptions" and values is None and result.preemptions is not None:
        return 0.0
    return statistics.median(values) if values else None


def grid(params: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the given values, in order: ``{"a": [1, 2], "b": [3]}`` ->
    ``[{"a": 1, "b": 3}, {"a": 2, "b": 3}]``; an empty mapping is one empty point."""
    for key, values in params.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise SweepError(f"sweep values of {key!r} must be a non-empty list, got {values!r}")
    keys = list(params)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*params.values())]


@dataclass(frozen=True)
class SweepPoint:
    """One measured combination: what was set, and what it gave."""

    engine_params: dict[str, Any]
    load: dict[str, Any]
    result: PerfResult

    def value(self, name: str) -> float | None:
        return metric(self.result, name)

    def label(self) -> str:
        parts = [f"{k}={'default' if v is None else v}"
                 for k, v in {**self.engine_params, **self.load}.items()]
        return " ".join(parts) or "(base)"


@dataclass(frozen=True)
class Sweep:
    """All points of a sweep, in the order they were measured, and the one a gate judges.

    ``gated`` does not depend on that order (which follows the engine left running by
    the test before): it is the marker's own engine config at the last load given, or,
    where the sweep leaves that config out, the last combination as given.
    """

    points: tuple[SweepPoint, ...]
    gated: SweepPoint | None = None
    columns: tuple[str, ...] = ("output_tok_s", "e2e_p50_ms", "ttft_p99_ms", "tpot_p50_ms",
                                "preemptions")

    def table(self) -> list[str]:
        """An aligned text table, one row per point."""
        header = ["point", *self.columns]
        rows = [header]
        for p in self.points:
            cells = [p.label()]
            for name in self.columns:
                v = p.value(name)
                cells.append("-" if v is None else f"{v:,.0f}" if name == "preemptions" else f"{v:,.2f}")
            rows.append(cells)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in rows]
        lines.insert(1, "-" * len(lines[0]))
        return lines

    def pareto(self, throughput: str = "output_tok_s", latency: str = "e2e_p50_ms") -> list[SweepPoint]:
        """Points no other point beats on both throughput (higher) and latency (lower),
        sorted by latency: the configs worth choosing between."""
        scored = [(p, p.value(throughput), p.value(latency)) for p in self.points]
        valid = [(p, t, lat) for p, t, lat in scored if t is not None and lat is not None]
        front = []
        for p, t, lat in valid:
            dominated = any(
                t2 >= t and l2 <= lat and (t2 > t or l2 < lat) for _, t2, l2 in valid
            )
            if not dominated:
                front.append((lat, p))
        return [p for _, p in sorted(front, key=lambda x: x[0])]

    def meets(self, point: SweepPoint, slo: Mapping[str, float]) -> bool:
        """True when every metric in ``slo`` is on the good side of its bound."""
        for name, bound in slo.items():
            v = point.value(name)
            if v is None:
                return False
            if (v > bound) if METRICS[name].direction == "lower" else (v < bound):
                return False
        return True

    def best(self, slo: Mapping[str, float], by: str = "output_tok_s") -> SweepPoint | None:
        """The point with the highest ``by`` among those meeting the SLO, or None."""
        for name in slo:
            if name not in METRICS:
                raise SweepError(f"slo: unknown metric {name!r}; known metrics: {', '.join(METRICS)}")
        ok = [p for p in self.points if self.meets(p, slo) and p.value(by) is not None]
        return max(ok, key=lambda p: p.value(by) or 0.0) if ok else None

    def largest_without_preemption(self, key: str) -> SweepPoint | None:
        """The point with the largest ``key`` (an engine or load parameter) that ran
        with no preemption; None when every point preempted."""
        clean = [p for p in self.points if (p.result.preemptions or 0) == 0
                 and isinstance({**p.engine_params, **p.load}.get(key), (int, float))]
        return max(clean, key=lambda p: {**p.engine_params, **p.load}[key]) if clean else None

    def curve(self, x: str, y: str = "output_tok_s") -> list[tuple[float, float]]:
        """(x, y) pairs sorted by x, for a sweep over one parameter."""
        pairs = []
        for p in self.points:
            params = {**p.engine_params, **p.load}
            v = p.value(y)
            if isinstance(params.get(x), (int, float)) and v is not None:  # not None (default)
                pairs.append((float(params[x]), v))
        return sorted(pairs)


KNEE_GAIN = 0.15  # the knee: doubling the load past it buys less than 15% more tok/s


def knee_index(curve: Sequence[tuple[float, float]], min_gain: float = KNEE_GAIN) -> int | None:
    """Index of the point where a rising throughput curve stops paying: the first point
    from which no larger x gains ``min_gain`` or more per doubling of x (for x that
    doubles, simply "``min_gain`` more"). Judging every later point, not only the next,
    keeps one noisy step (batch 2 barely above batch 1 on a busy 2-core runner, then
    batch 4 well above both) from calling the knee at the start of a curve that goes on
    rising. None while the curve still pays at its last point, or for an empty curve.
    The one definition of the knee: the tests' notes and the charts
    (``reports/plots.py``) both read it.
    """
    for i, (x0, y0) in enumerate(curve[:-1]):
        if y0 <= 0:
            continue
        later = [(x1, y1) for x1, y1 in curve[i + 1:] if x1 > x0]
        if later and all((y1 / y0) ** (1.0 / math.log2(x1 / x0)) - 1.0 < min_gain for x1, y1 in later):
            return i
    return None


def knee(curve: Sequence[tuple[float, float]], min_gain: float = KNEE_GAIN) -> float | None:
    """The x of ``knee_index``; the last x when every step still gains ``min_gain`` (no
    knee inside the range); None for an empty curve.

    With batches that double, 0.15 reads "doubling the batch buys less than 15% more
    tokens per second", which is where practitioners stop raising ``max_num_seqs``.
    """
    if not curve:
        return None
    i = knee_index(curve, min_gain)
    return curve[-1][0] if i is None else curve[i][0]


@dataclass
class SweepRunner:
    """Measures every engine-params x load combination with ``run`` and collects a Sweep.

    Points are ordered engine-params first, so each engine config starts once. Engine
    starts are what a sweep costs, so the order also saves two: a config equal to the
    ``live`` engine (already started) runs first, and the base config (``self.engine``,
    which the next test with the same marker will ask for) runs last. Tables, curves
    and the knee sort by value, so the order never shows.
    """

    run: Runner
    engine: EngineConfig
    workload: Workload
    on_point: Callable[[SweepPoint], None] | None = None
    points: list[SweepPoint] = field(default_factory=list)
    live: EngineConfig | None = None

    def _is_base(self, params: dict[str, Any]) -> bool:
        """Whether ``params`` leave the marker's own engine config as it is."""
        return replace(self.engine, **params).key() == self.engine.key()

    def _ordered(self, combos: list[dict[str, Any]]) -> list[int]:
        """Indices into ``combos`` in the order they run."""
        def rank(i: int) -> int:
            config = replace(self.engine, **combos[i])
            if self.live is not None and config.key() == self.live.key():
                return 0
            return 2 if self._is_base(combos[i]) else 1

        return sorted(range(len(combos)), key=rank)  # stable: the given order otherwise

    def sweep(
        self,
        engine_params: Mapping[str, Sequence[Any]] | None = None,
        loads: Sequence[Mapping[str, Any]] = ({},),
    ) -> Sweep:
        engine_keys = set(EngineConfig.__dataclass_fields__)
        load_keys = set(Workload.__dataclass_fields__)
        for key in engine_params or {}:
            if key not in engine_keys:
                raise SweepError(f"{key!r} is not an engine parameter (a load key belongs in loads=)")
        for load in loads:
            for key in load:
                if key not in load_keys:
                    raise SweepError(f"load key {key!r} is not a workload key")
        combos = grid(engine_params or {})
        by_combo: dict[tuple[int, int], SweepPoint] = {}
        for i in self._ordered(combos):
            engine = replace(self.engine, **combos[i])
            for j, load in enumerate(loads):
                result = self.run(engine, replace(self.workload, **load))
                point = SweepPoint(dict(combos[i]), dict(load), result)
                self.points.append(point)
                by_combo[(i, j)] = point
                if self.on_point is not None:
                    self.on_point(point)
        base = [i for i, params in enumerate(combos) if self._is_base(params)]
        last = (base[-1] if base else len(combos) - 1, len(loads) - 1)
        return Sweep(tuple(self.points), gated=by_combo.get(last))
