"""Fixed concurrency (closed loop): N clients, each sends its next request when one ends.

The same load as ``vllm bench serve --max-concurrency N`` with an infinite request rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..client.records import RequestRecord
from .base import Job, Send, StopRule, closed_loop


@dataclass(frozen=True)
class Concurrency:
    concurrency: int
    name: str = "concurrency"

    async def drive(self, jobs: Sequence[Job], send: Send, stop: StopRule) -> list[RequestRecord]:
        return await closed_loop(jobs, send, stop, workers=self.concurrency)

    def label(self) -> str:
        return f"c{self.concurrency}"
