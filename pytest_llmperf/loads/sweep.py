"""A sweep: the same workload at increasing concurrency or request rate, one result per point.

Each point is an ordinary run (``load="concurrency"`` or ``"rate"``) stored as its own
baseline entry (``test_id[c=4]``). The sweep stops at the first point that is
over-saturated (its run stopped early, or more requests failed than allowed): higher
load would only be worse. The *knee* is the highest load whose requests met every
SLO of ``slo={...}`` at least ``SLO_ATTAINMENT`` of the time (goodput / throughput).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..results import PerfResult

SLO_ATTAINMENT = 0.9


def sweep_points(workload: Any) -> list[tuple[str, Any]]:
    """(label, point workload) for every load point of a ``load="sweep"`` workload."""
    ((axis, values),) = workload.sweep.items()
    points = []
    for value in values:
        if axis == "concurrency":
            wl = replace(workload, load="concurrency", sweep={}, concurrency=int(value))
            points.append((f"c={int(value)}", wl))
        else:
            wl = replace(workload, load="rate", sweep={}, rate=float(value))
            points.append((f"rate={float(value):g}", wl))
    return points


def attainment(result: PerfResult) -> float | None:
    """Share of completed requests that met every SLO (None without SLOs)."""
    good = [t.good_requests for t in result.trials]
    if any(g is None for g in good):
        return None
    done = sum(t.num_requests for t in result.trials)
    return sum(g or 0 for g in good) / done if done else 0.0


def knee(points: list[tuple[str, PerfResult]]) -> str | None:
    best = None
    for label, result in points:
        share = attainment(result)
        if share is not None and share >= SLO_ATTAINMENT:
            best = label
    return best


@dataclass(frozen=True)
class SweepResult:
    """Every measured point of a sweep, in load order, and the knee under the SLOs."""

    workload: Any
    points: tuple[tuple[str, PerfResult], ...]
    knee: str | None
    stopped: str | None = None

    def point(self, label: str) -> PerfResult:
        for name, result in self.points:
            if name == label:
                return result
        raise KeyError(f"no sweep point {label!r}; measured: {', '.join(n for n, _ in self.points)}")

    def curve(self) -> list[dict[str, Any]]:
        """One row per point: load, output tok/s, TTFT/TPOT p50, goodput."""
        return [{"point": label, "output_tok_s": r.output_tok_s, "ttft_p50_ms": r.ttft.p50,
                 "tpot_p50_ms": r.tpot.p50, "slo_attainment": attainment(r)}
                for label, r in self.points]


def run_sweep(workload: Any, run_point: Callable[[Any], PerfResult],
              failure: type[Exception]) -> SweepResult:
    """Run the points in order; stop after the first over-saturated one."""
    measured: list[tuple[str, PerfResult]] = []
    stopped = None
    for label, wl in sweep_points(workload):
        try:
            result = run_point(wl)
        except failure as exc:
            stopped = f"sweep stopped at {label}: {exc}"
            break
        measured.append((label, result))
        early = [t.stopped for t in result.trials if t.stopped]
        if early:
            stopped = f"sweep stopped at {label}: {early[0]}"
            break
    if not measured:
        raise failure("run", stopped or "no sweep point could be measured")
    k = knee(measured)
    summary = "; ".join(
        f"{label} {r.output_tok_s:,.1f} tok/s TTFT p50 {r.ttft.p50:.1f} ms TPOT p50 {r.tpot.p50:.2f} ms"
        for label, r in measured)
    notes = [f"sweep curve: {summary}"]
    if workload.slo:
        notes.append(f"sweep knee (highest load with >= {SLO_ATTAINMENT:.0%} of requests "
                     f"meeting the SLOs): {k or 'none'}")
    if stopped:
        notes.append(stopped)
    last_label, last = measured[-1]
    measured[-1] = (last_label, replace(last, notes=(*last.notes, *notes)))
    return SweepResult(workload, tuple(measured), k, stopped)
