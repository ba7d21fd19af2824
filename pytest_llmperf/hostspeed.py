"""How fast this machine's cores are right now: a fixed reference workload, timed.

A stored baseline was measured in another session, often on another machine of the
same type. On a GPU that hardly matters; on a CPU runner it does: a CI machine that
passes for the same hardware (vLLM's CPU build on "AMD EPYC", 2 cores) ran every engine
16-31% slower for the whole job, engine starts (single-threaded imports) 35-50% slower,
and a gate that compares with the baseline alone called that a regression of every test.
The probe is what tells the two apart. It times single-threaded work that does not
depend on the code under test (no vLLM, no torch): the interpreter, and a NumPy ufunc on
a cache-resident array, the two things a small model on vLLM's CPU build spends its
time on. The baseline stores the probe's score from its recording session; the gate
scales the baseline's speed figures by the ratio of the two scores
(``gate.compare_entry``), and says so; beyond ``MAX_RATIO`` it compares them unscaled.

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

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Bumped whenever the workload changes: scores of two versions are not comparable.
PROBE_VERSION = 2
# Within this ratio the runner counts as the recording one: scaling would only add the
# probe's own noise (five quiet runs here: 68.2-69.3, within 1.6%).
DEAD_BAND = 0.05
# Beyond this ratio (either way) the figures are compared unscaled: how the engine
# follows the probe there is unmeasured (with both cores busy the probe lost 3-27%, the
# suites 24-65%), and the probe has misread by more than this on quiet runners.
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


@dataclass(frozen=True)
class SpeedAdjustment:
    """How a baseline's speed figures are brought to this runner.

    ``ratio``: this runner's score over the baseline's (0.75: 25% slower). ``factor``:
    what the gate multiplies the baseline's rates by (and divides its times by); 1.0
    inside the dead band and beyond MAX_RATIO. ``message``: one line for the report, or
    "" when nothing happened.
    """

    ratio: float
    factor: float
    message: str


def adjustment(now: HostSpeed | None, recorded: HostSpeed | None) -> SpeedAdjustment | None:
    """The adjustment between two probe results; None when either is missing or they
    come from different probe versions (nothing to say).

    Beyond MAX_RATIO the probe is not trusted to scale by, and the entry is compared as
    it is. That case used to skip the comparison, and on the 2-core CPU runners it
    disabled the CPU gate: on 2026-12-03 the probe read 34.6 and 40.8 in two unchanged
    runs of the main job, against 64.5 when the baselines were recorded that morning on
    the same machine, while the engines ran at the baselines' speed (median throughput
    change -0.2% and +3.1% over 20 tests); earlier that day, on a faster machine of the
    same key, 2.0-2.3x against engines 3.6-5.8x faster. A runner that far off, if it is
    one, is better shown as failures and improvements than hidden behind a warning.
    """
    if now is None or recorded is None or now.version != recorded.version:
        return None
    if not (now.score > 0 and recorded.score > 0):
        return None
    ratio = now.score / recorded.score
    what = (f"{1 - ratio:.0%} slower" if ratio < 1 else f"{ratio - 1:.0%} faster")
    probe = f"speed probe {now.score:.4g} now, {recorded.score:.4g} when the baseline was recorded"
    if abs(math.log(ratio)) <= math.log1p(DEAD_BAND):
        return SpeedAdjustment(ratio, 1.0, "")
    if not (1 / MAX_RATIO <= ratio <= MAX_RATIO):
        return SpeedAdjustment(ratio, 1.0,
                               f"compared unscaled: the probe reads this runner {what} than "
                               f"the one that recorded the baseline ({probe}), too far apart "
                               "to scale by (the probe has read 37-46% slow beside engines "
                               "at full speed); if the runner really differs that much, "
                               "re-record the baseline on it")
    return SpeedAdjustment(ratio, ratio,
                           f"runner {what} than when the baseline was recorded ({probe}): "
                           f"baseline throughput scaled by {ratio:.2f}, latencies by {1 / ratio:.2f}")
