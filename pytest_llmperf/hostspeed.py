"""How fast this machine is right now: a fixed reference workload, timed.

A stored baseline was measured in another session, often on another machine of the
same type. On a GPU that hardly matters; on a shared CPU runner it does: a CI machine
whose neighbours take its cores runs every engine 20-40% slower for the whole job
(benchmarks/RESULTS.md), and a gate that compares with the baseline alone calls that a
regression of every test. The probe is what tells the two apart. It times work that
does not depend on the code under test (no vLLM, no torch): the interpreter, a BLAS
matrix product on every core, and a memory sweep, the three things a small model on
vLLM's CPU build spends its time on. The baseline stores the probe's score from its
recording session; the gate scales the baseline's speed figures by the ratio of the
two scores (``gate.compare_entry``), and says so.

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
PROBE_VERSION = 1
# Within this ratio the runner counts as the recording one: scaling would only add the
# probe's own noise (its repeats agree within ~1-2% on a quiet machine).
DEAD_BAND = 0.05
# Beyond this ratio (either way) the figures are not scaled but not compared either:
# the engine no longer slows in proportion to the probe.
MAX_RATIO = 2.0


def _python_part(n: int = 60_000) -> int:
    """Interpreter work: dict and list traffic as in a scheduler's loop."""
    table: dict[int, int] = {}
    acc = 0
    for i in range(n):
        table[i & 1023] = table.get(i & 1023, 0) + i
        acc ^= (i * 2654435761) & 0xFFFF
    return acc + len(table)


_A = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)
_B = np.random.default_rng(1).standard_normal((256, 256), dtype=np.float32)


def _blas_part(n: int = 40) -> float:
    """Matrix products on every core (NumPy's BLAS threads), as a decode step's GEMMs."""
    out = _A
    for _ in range(n):
        out = _A @ _B
    return float(out[0, 0])


_BIG = np.ones(8 * 1024 * 1024 // 4, dtype=np.float32)  # 8 MiB: past the caches


def _memory_part(n: int = 8) -> float:
    """Streams 8 MiB arrays through memory, as weights and KV reads do."""
    total = 0.0
    for _ in range(n):
        total += float(np.add(_BIG, 1.0, out=np.empty_like(_BIG))[-1])
    return total


PARTS: dict[str, Callable[[], Any]] = {
    "python": _python_part,
    "blas": _blas_part,
    "memory": _memory_part,
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

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostSpeed:
        return cls(score=float(data["score"]), spread=float(data.get("spread", 0.0)),
                   parts={k: float(v) for k, v in dict(data.get("parts", {})).items()},
                   version=int(data.get("version", 1)))


def measure_host_speed(repeats: int = 7, *, clock: Callable[[], float] = time.perf_counter) -> HostSpeed:
    """Time each part ``repeats`` times (interleaved, after one untimed round) and
    combine: a part's rate is runs per second at its median time, the score their
    geometric mean. About a second on a 2-core runner."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}: need at least 1")
    for part in PARTS.values():  # warm caches, BLAS threads and allocator
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
    inside the dead band. ``comparable``: False beyond MAX_RATIO, where nothing is
    compared. ``message``: one line for the report, or "" when nothing happened.
    """

    ratio: float
    factor: float
    comparable: bool
    message: str


def adjustment(now: HostSpeed | None, recorded: HostSpeed | None) -> SpeedAdjustment | None:
    """The adjustment between two probe results; None when either is missing or they
    come from different probe versions (nothing to say)."""
    if now is None or recorded is None or now.version != recorded.version:
        return None
    if not (now.score > 0 and recorded.score > 0):
        return None
    ratio = now.score / recorded.score
    what = (f"{1 - ratio:.0%} slower" if ratio < 1 else f"{ratio - 1:.0%} faster")
    probe = f"speed probe {now.score:.4g} now, {recorded.score:.4g} when the baseline was recorded"
    if abs(math.log(ratio)) <= math.log1p(DEAD_BAND):
        return SpeedAdjustment(ratio, 1.0, True, "")
    if not (1 / MAX_RATIO <= ratio <= MAX_RATIO):
        return SpeedAdjustment(ratio, 1.0, False,
                               f"not compared: this runner is {what} than the one that recorded "
                               f"the baseline ({probe}), too far apart to scale; re-record "
                               "the baseline on this runner")
    return SpeedAdjustment(ratio, ratio, True,
                           f"runner {what} than when the baseline was recorded ({probe}): "
                           f"baseline throughput scaled by {ratio:.2f}, latencies by {1 / ratio:.2f}")
