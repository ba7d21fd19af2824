"""What the client sends: one module per dataset, each turning a workload into jobs."""

from __future__ import annotations

from typing import Any

from ..loads.base import Job


def make_jobs(workload: Any, n: int, vocab_size: int, round_key: str) -> list[Job]:
    """``n`` jobs of the workload's dataset; ``round_key`` makes every round's prompts fresh."""
    if workload.dataset == "random":
        from .random import random_jobs

        return random_jobs(workload, n, vocab_size, round_key)
    raise NotImplementedError(f"dataset={workload.dataset!r} is not available yet")
