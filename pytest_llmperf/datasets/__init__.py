"""What the client sends: one module per dataset, each turning a workload into jobs."""

from __future__ import annotations

from typing import Any

from ..loads.base import Job


def make_jobs(workload: Any, n: int, vocab_size: int, round_key: str, *,
              round_index: int = 0, max_len: int | None = None) -> list[Job]:
    """``n`` requests' worth of jobs; ``round_key`` makes every round's prompts fresh."""
    if workload.load == "replay":
        from .replay import replay_jobs

        return replay_jobs(workload, vocab_size, round_key, n or None)
    if workload.dataset == "random":
        from .random import random_jobs

        return random_jobs(workload, n, vocab_size, round_key)
    if workload.dataset == "shared_prefix":
        from .shared_prefix import shared_prefix_jobs

        return shared_prefix_jobs(workload, n, vocab_size, round_key)
    if workload.dataset == "sharegpt":
        from .sharegpt import sharegpt_jobs

        return sharegpt_jobs(workload, n, round_index, max_len)
    if workload.dataset == "multiturn":
        from .multiturn import multiturn_jobs

        return multiturn_jobs(workload, n, vocab_size, round_key)
    raise ValueError(f"unknown dataset {workload.dataset!r}")
