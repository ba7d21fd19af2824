"""How fast this machine's cores are right now: a fixed reference workload, timed.

A stored baseline was measured in another session, often on another machine of the
same type. On a GPU that hardly matters; on a CPU runner it does: a CI machine that
passes for the same hardware (vLLM's CPU build on "AMD EPYC", 2 cores) ran every engine
16-31% slower for the whole job, engine starts (single-threaded imports) 35-50% slower,
and a gate that compares with the baseline alone called that a regression of every test.
The probe was meant to tell the two apart by scaling the baseline by the ratio of two
scores, and it did not track the engines well enough for that: on 2026-12-03 it read
0.54-0.63x of the recording beside engines at 1.0x, and on 2026-12-04 it read 0.95-1.49x
beside engines at 0.97-1.22x, so one unchanged run failed on the scaling alone
(benchmarks/RESULTS.md, "CPU speed states"). What it does tell apart is the 2-core VMs'
discrete speed states (probe 33-69 in one, 127-200 in another). So a baseline keeps one
recording per speed state (``baselines.BaselineEntry.keeping_states_of``), and the gate
compares with the recording of the state nearest this session's probe, unscaled
(``gate.speed_state``); ``state_note`` says when no recorded state is near.

What it sees: the speed of one core (clock, CPU generation, time stolen by the
hypervisor), which is what differs between runners of one type. What it does not see: a
neighbour busy on the *other* core while one stays free; measured here, one busy loop
beside the engine cost the suites 19-32% throughput and this probe nothing. A first
design timed BLAS on both cores and a memory sweep too: it lost 51% there, and moved 17%
between two quiet runs (fresh allocations), so it tracked neither. That case stays the
gate's: a fresh engine start rechecks a regression (benchmarks/RESULTS.md, "The
runner-speed probe"). Nor can one probe follow a machine whose speed changes during the
session: the 2-core VMs here were seen flipping between two speeds 2x apart within
seconds (probe 33-38 or 61-69, nothing between), so the CPU suites' tolerances stay
wide whatever the probe says.

Pure Python and NumPy; the plugin measures once per session, before the first engine
starts, since an engine's own threads would slow the probe down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Bumped whenever the workload changes: scores of two versions are not comparable.
PROBE_VERSION = 2
# Two probes within this ratio (either way) read one speed state: a baseline keeps one
# recording per state, and a run whose probe is further than this from every recorded
# state is told to record its own (``state_note``).
MAX_RATIO = 1.5


def _python_part(n: int = 60_000) -> int:
    """Interpreter work: dict and int traffic as in a scheduler's loop."""
    table: dict[int, int] = {}
    acc = 0
    for i in range(n):
        table[i & 1023] = table.get(i & 1023, 0) + i
        acc ^= (i * 2654435761) & 0xFFFF
    return acc + len(table)


_X = np.random.default_rng(0).random(32768)  # 256 KiB: stays in cache, no allocation
_Y = np.empty_like(_X)


def _compute_part(n: int = 100) -> float:
    """One core's arithmetic: a transcendental ufunc over a cache-resident array."""
    for _ in range(n):
        np.exp(_X, out=_Y)
    return float(_Y[0])


PARTS: dict[str, Callable[[], Any]] = {
    "python": _python_part,
    "compute": _compute_part,
}


@dataclass(frozen=True)
class HostSpeed:
    """The probe's result: ``score`` (higher is faster, comparable only within one
    ``version``), the relative spread of its repeats, and each part's rate."""

    score: float
    spread: float
    parts: dict[str, float] = field(default_factory=dict)
    version: int = PROBE_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "spread": self.spread, "parts": dict(self.parts),
                "version": self.version}

    def describe(self) -> str:
        """``"67.45 (python 74.5/s, compute 61.1/s)"``: the score and each part's rate."""
        parts = ", ".join(f"{k} {v:.3g}/s" for k, v in self.parts.items())
        return f"{self.score:.4g} ({parts})"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostSpeed:
        return cls(score=float(data["score"]), spread=float(data.get("spread", 0.0)),
                   parts={k: float(v) for k, v in dict(data.get("parts", {})).items()},
                   version=int(data.get("version", 1)))


def measure_host_speed(repeats: int = 9, *, clock: Callable[[], float] = time.perf_counter) -> HostSpeed:
    """Time each part ``repeats`` times (interleaved, after one untimed round) and
    combine: a part's rate is runs per second at its median time, the score their
    geometric mean. About half a second on a 2-core runner."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: need at least 1")
    for part in PARTS.values():  # warm the caches
        part()
    times: dict[str, list[float]] = {name: [] for name in PARTS}
    for _ in range(repeats):
        for name, part in PARTS.items():
            t0 = clock()
            part()
            times[name].append(max(clock() - t0, 1e-9))
    rates = {name: 1.0 / float(np.median(t)) for name, t in times.items()}
    score = float(np.exp(np.mean(np.log(list(rates.values())))))
    per_repeat = np.exp(np.mean([np.log(1.0 / np.asarray(t)) for t in times.values()], axis=0))
    spread = float(np.std(np.log(per_repeat), ddof=1)) if repeats > 1 else 0.0
    return HostSpeed(score=score, spread=spread, parts=rates)


def state_note(now: HostSpeed | None, recorded: HostSpeed | None) -> str:
    """One line when ``now`` reads another speed state than ``recorded`` (probes more
    than MAX_RATIO apart), else "" (also when either is missing or their probe versions
    differ). The comparison itself is never scaled by the probe (see the module
    docstring)."""
    if now is None or recorded is None or now.version != recorded.version:
        return ""
    if not (now.score > 0 and recorded.score > 0):
        return ""
    ratio = now.score / recorded.score
    if 1 / MAX_RATIO <= ratio <= MAX_RATIO:
        return ""
    what = f"{1 - ratio:.0%} slower" if ratio < 1 else f"{ratio - 1:.0%} faster"
    return (f"the speed probe reads this runner {what} than the recording compared with "
            f"(probe {now.score:.4g} now, {recorded.score:.4g} then): it may be in a speed "
            "state the baseline has not recorded; compared unscaled. If it is, record "
            "that state with --llmperf-update-baselines (an entry keeps up to 3)")
