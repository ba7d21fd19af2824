"""One request at a time: each starts when the previous one finished (latency floor)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..client.records import RequestRecord
from .base import Job, Send, StopRule, closed_loop


@dataclass(frozen=True)
class Synchronous:
    name: str = "synchronous"

    async def drive(self, jobs: Sequence[Job], send: Send, stop: StopRule) -> list[RequestRecord]:
        return await closed_loop(jobs, send, stop, workers=1)

    def label(self) -> str:
        return "sync"
