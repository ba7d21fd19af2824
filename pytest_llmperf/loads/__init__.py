"""Load shapes: one file each behind one protocol (:class:`~.base.LoadShape`), chosen by name."""

from __future__ import annotations

from typing import Any

from .base import Job, LoadShape, Overloaded, SingleRequest, StopRule
from .concurrency import Concurrency
from .rate import Rate
from .spec import resolved_concurrency, resolved_load
from .synchronous import Synchronous

__all__ = ["Concurrency", "Job", "LoadShape", "Overloaded", "Rate", "SingleRequest",
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
    raise NotImplementedError(f"load={name!r} is not available yet")
