"""Replay a trace: every request starts at its traced arrival time (open loop)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..client.records import RequestRecord
from .base import Job, Send, StopRule, open_loop


@dataclass(frozen=True)
class Replay:
    max_concurrency: int | None = None
    name: str = "replay"

    async def drive(self, jobs: Sequence[Job], send: Send, stop: StopRule) -> list[RequestRecord]:
        arrivals = [float(getattr(getattr(j, "request", None), "arrival_s", 0.0)) for j in jobs]
        return await open_loop(jobs, arrivals, send, stop, self.max_concurrency)

    def label(self) -> str:
        return "replay"
