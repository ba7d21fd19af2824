"""Prompts that share prefixes: ``num_prefixes`` groups, each prompt its group's
``prefix_len`` tokens plus a tail of its own (``input_len`` in all).

What the prefix cache can save shows in the server's Prometheus counters: the run
reports the prefix-cache hit rate. Prefixes are fresh every round, so the first
request of each group misses and the rest hit.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from ..client.records import ServeRequest
from ..loads.base import Job, SingleRequest
from ..tokenizer import text_of


def shared_prefix_jobs(workload: Any, n: int, vocab_size: int, round_key: str) -> list[Job]:
    digest = hashlib.sha256(f"{workload.seed}:{round_key}".encode()).hexdigest()
    rng = np.random.default_rng(int(digest[:16], 16))
    low = min(100, max(vocab_size // 2, 1))
    prefix_len = int(workload.prefix_len)
    prefixes = [rng.integers(low, vocab_size, size=prefix_len).tolist()
                for _ in range(workload.num_prefixes)]
    jobs: list[Job] = []
    for i in range(n):
        ids = prefixes[i % len(prefixes)] + rng.integers(
            low, vocab_size, size=workload.input_len - prefix_len).tolist()
        if workload.api == "chat":
            req = ServeRequest(output_len=workload.output_len, input_len=len(ids),
                               messages=[{"role": "user", "content": text_of(ids)}])
        else:
            req = ServeRequest(output_len=workload.output_len, input_len=len(ids), prompt=ids)
        jobs.append(SingleRequest(req))
    return jobs
