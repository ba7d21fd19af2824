"""The verdict on one measured test: absolute limits, then the baseline gate.

Pure logic over results and baseline entries; the plugin turns a failing verdict
into a pytest failure and a script can print it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .baselines import BaselineEntry
from .config import Limits
from .fingerprint import Fingerprint
from .hostspeed import HostSpeed, state_note
from .metrics import METRICS
from .noise import estimate_all
from .regression import Comparison
from .results import PerfResult
from .startgate import compare_to_starts

CPU_UNGATED = frozenset({"kv_cache_tokens", "peak_mem_gib"})

# limit key -> (how to read it off a result, True when it is a floor)
_LIMITS: dict[str, tuple[Callable[[PerfResult], float | None], bool]] = {
    "min_tok_s": (lambda r: r.output_tok_s, True),
    "min_total_tok_s": (lambda r: r.total_tok_s, True),
    "max_ttft_p50_ms": (lambda r: r.ttft.p50, False),
    "max_ttft_p99_ms": (lambda r: r.ttft.p99, False),
    "max_tpot_p50_ms": (lambda r: r.tpot.p50, False),
    "max_tpot_p99_ms": (lambda r: r.tpot.p99, False),
    "max_itl_p99_ms": (lambda r: r.itl.p99, False),
    "max_e2e_p99_ms": (lambda r: r.e2e.p99, False),
    "max_gpu_mem_gib": (lambda r: r.memory.peak_process_gib, False),
    "min_kv_cache_tokens": (lambda r: r.memory.kv_cache_tokens, True),
}


def check_limits(result: PerfResult, limits: Limits) -> list[str]:
    """One line per floor or ceiling the result misses; empty when all hold."""
    failures = []
    for key, bound in limits.items():
        read, is_floor = _LIMITS[key]
        value = read(result)
        if value is None:
            failures.append(f"{key}={bound}: not measured on this device")
        elif (value < bound) if is_floor else (value > bound):
            relation = "below the floor" if is_floor else "above the ceiling"
            failures.append(f"{key}={bound}: measured {value:,.2f}, {relation}")
    return failures


@dataclass
class Verdict:
    """Everything decided about one test, for the failure message and the summary."""

    test_id: str
    result: PerfResult | None
    limit_failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # e.g. an unusable baseline file
    limits_applied: bool = True
    # compared | paired | unchanged | missing | stale | updated | error | none
    baseline_status: str = "none"
    comparison: Comparison | None = None
    baseline: BaselineEntry | None = None  # the stored entry compared with, for reports
    messages: list[str] = field(default_factory=list)
    failed_test: bool = False
    confirmations: int = 0  # engine starts added because the gate was inconclusive
    base_result: PerfResult | None = None  # paired A/B: the base commit's side, pooled
    # Every result the test measured, in order, when it measured more than one (a sweep
    # inside the test): the report keeps them so a chart can draw the test's own curve.
    points: list[PerfResult] = field(default_factory=list)
    derived: dict[str, float] = field(default_factory=dict)  # derived.py: cost, roofline
    wall_s: float | None = None  # the test's setup + call + teardown (pytest's durations)

    @property
    def regressed(self) -> bool:
        return self.comparison is not None and not self.comparison.passed

    @property
    def inconclusive(self) -> bool:
        return self.comparison is not None and self.comparison.state == "inconclusive"

    @property
    def passed(self) -> bool:
        return (not self.failed_test and not self.errors and not self.limit_failures
                and not self.regressed)

    def failure_text(self) -> str:
        parts = list(self.errors)
        if self.limit_failures:
            parts.append("performance limits missed:\n  " + "\n  ".join(self.limit_failures))
        if self.regressed and self.comparison is not None:
            names = ", ".join(r.metric for r in self.comparison.regressions)
            against = ("the base commit" if self.comparison.mode == "paired"
                       else "the baseline")
            parts.append(f"regression against {against} ({names}):\n{self.comparison.table()}")
        parts.extend(self.messages)
        return "\n\n".join(parts)


def _gated_values(result: PerfResult) -> dict[str, list[float]]:
    current = result.metric_values()
    if result.device == "cpu":
        # vLLM's CPU backend sizes its KV cache from the RAM free at start, so the KV
        # capacity and the process's RSS follow the machine's state, not the code
        # (+15% and +7.5% between two runs of one config on the same machine).
        current = {k: v for k, v in current.items() if k not in CPU_UNGATED}
    return current


def _short_ids(uuids: Sequence[str]) -> str:
    return ", ".join(u[:12] for u in uuids)


def machine_floors(entry: BaselineEntry, machine: Fingerprint) -> tuple[dict[str, float] | None, str]:
    """(allowance per metric, why) for a stored entry measured now on ``machine``: None
    and "" when the entry names the same GPUs; else every metric's ``between_machines``
    floor, since two GPUs of one model differ by more than one GPU's engine starts, and
    for an ``enforce_eager`` engine the wider floor of a host-bound decode."""
    recorded = entry.parsed_fingerprint()
    same = recorded.same_machine(machine)
    if same:
        return None, ""
    eager = entry.engine.get("enforce_eager") is True
    allowed = {n: s.between_machines_for(eager=eager) for n, s in METRICS.items() if s.gated}
    floors = {n: f for n, f in allowed.items() if f > METRICS[n].noise_floor}  # the others keep theirs
    raised = [f"{n} {f:.1%}" for n, f in floors.items()]
    where = (f"on other GPUs ({_short_ids(recorded.gpu_uuids)}; now {_short_ids(machine.gpu_uuids)})"
             if same is False else "on GPUs it does not name (recorded before GPU UUIDs were stored)")
    kind = ("of one type running an enforce_eager engine, whose decode is bound by the host "
            "launching kernels" if eager else "of one type")
    return floors, (f"baseline recorded {where}: a change must also clear the drift between "
                    f"machines {kind} ({', '.join(raised)}); re-record it on this runner "
                    "(--llmperf-update-baselines), or gate in paired mode (--llmperf-ab), "
                    "for the tighter floors")


def runner_noise(entry: BaselineEntry | None, file_entries: Iterable[BaselineEntry] = ()) -> dict[str, Any]:
    """Between-start noise per metric, learned from the per-start medians of ``entry``
    (this test) and of the other entries of its baseline file."""
    others = [e.start_medians() for e in file_entries if entry is None or e.test_id != entry.test_id]
    return estimate_all(entry.start_medians() if entry is not None else {}, others)


def compare_entry(
    result: PerfResult | Sequence[PerfResult],
    entry: BaselineEntry | None,
    tolerances: Mapping[str, float],
    *,
    compare: Callable[..., Any] | None = None,
    file_entries: Iterable[BaselineEntry] = (),
    host_speed: HostSpeed | None = None,
    machine: Fingerprint | None = None,
) -> tuple[str, Comparison | None, list[str]]:
    """(status, comparison, messages) for a result against its stored entry.

    ``result``: one engine start's result, or several (confirmation starts) of one
    workload. The decision is ``startgate.compare_to_starts``: the current starts
    against the entry's per-start medians, with the runner's noise learned from them
    and from ``file_entries`` (the other tests of the baseline file), unless the
    ``compare`` hook returns a Comparison of its own (it sees pooled trials).

    ``host_speed``: this session's runner-speed probe (CPU runs). The entry's recording
    of the speed state nearest it is the one compared with (``speed_state``), as it
    is: the probe picks the state and never scales (hostspeed.py says why). When even
    the nearest is more than ``hostspeed.MAX_RATIO`` away, a message says so
    (``hostspeed.state_note``).

    ``machine``: this session's fingerprint of the GPUs measured. When the entry was
    recorded on other GPUs, or names none, changes must clear each metric's
    ``between_machines`` floor (``machine_floors``), and a message says why.
    """
    starts = [result] if isinstance(result, PerfResult) else list(result)
    first = starts[0]
    if entry is None:
        return "missing", None, ["no baseline for this test on this hardware"]
    stale = entry.stale_reasons(first.engine, first.workload)
    if stale:
        return "stale", None, [
            "baseline is stale (measured with another config): " + "; ".join(stale)
            + " - re-record it with --llmperf-update-baselines"
        ]
    messages = []
    if first.device == "cpu":
        entry, why = speed_state(entry, host_speed)
        if why:
            messages.append(why)
        file_entries = [speed_state(e, host_speed)[0] for e in file_entries]
        note = state_note(host_speed, entry.recorded_speed())
        if note:
            messages.append(note)
    floors: dict[str, float] | None = None
    if machine is not None and first.device == "gpu":
        floors, why = machine_floors(entry, machine)
        if why:
            messages.append(why)
    per_start = [_gated_values(r) for r in starts]
    comparison = None
    if compare is not None:
        pooled: dict[str, list[float]] = {}
        for values in per_start:
            for k, v in values.items():
                pooled.setdefault(k, []).extend(v)
        comparison = compare(current=pooled, baseline=entry.metric_values(),
                             tolerances=dict(tolerances))
    if comparison is None:
        comparison = compare_to_starts(per_start, entry.start_medians(), tolerances=tolerances,
                                       noise=runner_noise(entry, file_entries), floors=floors)
    if entry.vllm_version and first.vllm_version and entry.vllm_version != first.vllm_version:
        messages.append(f"baseline vLLM {entry.vllm_version}, now {first.vllm_version}")
    return "compared", comparison, messages


def speed_state(entry: BaselineEntry, now: HostSpeed | None) -> tuple[BaselineEntry, str]:
    """(recording, why): ``entry``'s recording of the runner speed state nearest ``now``
    (the least |ln(now / recorded)| of their probe scores; the newest on a tie, and
    when there is no probe to go by) as a plain entry, and one line saying which, or ""
    when the entry holds one recording only."""
    states = entry.states()
    if len(states) == 1:
        return states[0], ""
    best, distance = entry.nearest_state(now)
    scores = ", ".join(f"{s.score:.4g}" for s in (st.recorded_speed() for st in states)
                       if s is not None)
    chosen = best.recorded_speed()
    if now is None or chosen is None or math.isinf(distance):
        return best, (f"baseline holds recordings of {len(states)} runner speed states "
                      f"(probe {scores}) and this run has no comparable probe: compared "
                      f"with the newest, recorded {best.recorded_at}")
    return best, (f"baseline recorded in {len(states)} runner speed states (probe {scores}): "
                  f"compared with the one nearest this runner's probe ({now.score:.4g}): "
                  f"{chosen.score:.4g}, recorded {best.recorded_at}")


def settle(
    decide: Callable[[], Comparison],
    another_start: Callable[[], None],
    confirm: int,
) -> tuple[Comparison, int]:
    """Decide; while inconclusive, add an engine start (``another_start``) and decide
    again, up to ``confirm`` times. Stops early when no inconclusive metric could be
    resolved within the starts left (its ``starts_needed`` is out of reach), since more
    starts would only cost time. Returns the last comparison and the starts added."""
    comparison = decide()
    added = 0
    while comparison.state == "inconclusive" and added < confirm:
        have = comparison.starts[1] if comparison.starts else 1
        reachable = [r for r in comparison.inconclusive
                     if r.starts_needed is not None and r.starts_needed <= have + confirm - added]
        if not reachable:
            break
        another_start()
        added += 1
        comparison = decide()
    return comparison, added


@dataclass
class StoreGate:
    """What the stored-baseline gate decided for one test (``gate_on_store``)."""

    status: str  # compare_entry's: "compared", "missing" or "stale"
    comparison: Comparison | None
    messages: list[str]
    confirmations: int = 0  # engine starts added while the gate was inconclusive
    judged: PerfResult | None = None  # a fresh start judged in place of a disturbed first one


def gate_on_store(
    result: PerfResult,
    entry: BaselineEntry | None,
    tolerances: Mapping[str, float],
    *,
    more_starts: Callable[[int], list[PerfResult]],
    confirm: int,
    compare: Callable[..., Any] | None = None,
    file_entries: Iterable[BaselineEntry] = (),
    host_speed: HostSpeed | None = None,
    machine: Fingerprint | None = None,
) -> StoreGate:
    """Gate ``result`` (one engine start) against its stored ``entry`` (``compare_entry``),
    spending at most ``confirm`` fresh engine starts (``more_starts(n)`` measures the same
    workload in ``n`` of them) before it decides:

    - a regression is measured again in a fresh start before it fails the test.
      Reproduced, it is decided over both starts; not reproduced, the first start is set
      aside as disturbed (a shared runner's neighbour, a slow start) and the fresh one is
      judged alone (``judged``): one bad start never fails a build by itself;
    - while the gate is inconclusive, starts are added (``settle``) with what is left.
    """
    starts = [result]
    file_entries = list(file_entries)  # read by every decision, not once

    def judge() -> tuple[str, Comparison | None, list[str]]:
        return compare_entry(starts, entry, tolerances, compare=compare, file_entries=file_entries,
                             host_speed=host_speed, machine=machine)

    def decide() -> Any:
        return judge()[1]

    status, comparison, messages = judge()
    gate = StoreGate(status, comparison, [])
    if comparison is not None and comparison.state == "regression" and confirm:
        fresh = more_starts(1)
        rows = [f"{r.metric} {r.change:+.1%}" for r in comparison.regressions]
        worse = ", ".join(rows[:2]) + (f" and {len(rows) - 2} more" if len(rows) > 2 else "")
        starts[:] = fresh
        again = decide()
        if again is not None and again.state == "regression":
            starts[:] = [result, *fresh]
            both = decide()
            gate.messages.append(f"regression reproduced on a fresh engine start (first start: {worse})")
            comparison = both if both is not None and both.state == "regression" else again
        else:
            gate.judged = fresh[0]
            gate.messages.append(f"set aside a disturbed engine start: its regression ({worse}) "
                                 "did not reproduce on a fresh start, which is what was judged")
            comparison = again
        confirm -= 1
    if comparison is not None and comparison.state == "inconclusive" and confirm:
        comparison, gate.confirmations = settle(decide, lambda: starts.extend(more_starts(1)), confirm)
    gate.comparison = comparison
    gate.messages.extend(messages)
    return gate
