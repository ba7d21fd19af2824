"""Load shapes: one file each behind one protocol (:class:`~.base.LoadShape`), chosen by name."""

from __future__ import annotations

from typing import Any

from .base import Job, LoadShape, Overloaded, SingleRequest, StopRule
from .concurrency import Concurrency
from .rate import Rate
from .replay import Replay
from .spec import resolved_concurrency, resolved_load
from .synchronous import Synchronous

__all__ = ["Concurrency", "Job", "LoadShape", "Overloaded", "Rate", "Replay", "SingleRequest",
           "StopRule", "Synchronous", "make_load"]


def make_load(workload: Any) -> LoadShape:
    """The load shape a (validated) workload names."""
    name = resolved_load(workload)
    if name == "synchronous":
        return Synchronous()
    if name == "concurrency":
        return Concurrency(resolved_concurrency(workload))
    if name == "rate":
        return Rate(float(workload.rate), float(workload.burstiness),
                    max_concurrency=workload.concurrency, seed=workload.seed)
    if name == "replay":
        return Replay(max_concurrency=workload.concurrency)
    raise ValueError(f"load={name!r} has no single load shape (a sweep runs one per point)")
