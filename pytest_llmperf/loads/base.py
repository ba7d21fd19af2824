"""What every load shape shares: jobs to run, a way to send, and when to give up.

A *job* is one unit of client work: a single request, or a whole multi-turn chat
whose next turn waits on the previous reply. A load shape only decides *when* jobs
start (all at once behind a concurrency limit, one by one, on an arrival schedule);
it never looks inside them. The :class:`StopRule` ends a run early with a verdict
when the server is over-saturated (errors above a limit, a queue that keeps growing)
instead of letting it run into a timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..client.records import RequestRecord, ServeRequest

Send = Callable[[ServeRequest], Awaitable[RequestRecord]]


class Job(Protocol):
    """One unit of client work (one request, or a whole chat)."""

    async def __call__(self, send: Send) -> list[RequestRecord]: ...


@dataclass
class SingleRequest:
    """The common job: send one request."""

    request: ServeRequest

    async def __call__(self, send: Send) -> list[RequestRecord]:
        return [await send(self.request)]


class Overloaded(Exception):
    """The run was stopped early; the message is the verdict."""


@dataclass
class StopRule:
    """Ends a run when it can no longer measure anything useful.

    ``max_error_rate``: stop once more than this fraction of at least ``min_requests``
    finished requests failed. ``max_backlog``: open-loop loads stop when more than this
    many requests are in flight (the arrival rate exceeds what the server completes, so
    the queue grows without bound). ``deadline_s``: a wall-clock budget for the run.
    """

    max_error_rate: float = 0.5
    min_requests: int = 8
    max_backlog: int | None = None
    deadline_s: float | None = None
    verdict: str | None = None
    started: float = field(default_factory=time.perf_counter)

    def check(self, records: Sequence[RequestRecord], in_flight: int = 0) -> str | None:
        if self.verdict is not None:
            return self.verdict
        done = len(records)
        failed = sum(1 for r in records if not r.ok)
        if done >= self.min_requests and failed / done > self.max_error_rate:
            self.verdict = (f"stopped early: {failed} of {done} requests failed "
                            f"(more than the allowed {self.max_error_rate:.0%})")
        elif self.max_backlog is not None and in_flight > self.max_backlog:
            self.verdict = (f"stopped early: over-saturated, {in_flight} requests in flight "
                            f"(more than {self.max_backlog}); the arrival rate exceeds what the "
                            "server completes and its queue grows without bound")
        elif self.deadline_s is not None and time.perf_counter() - self.started > self.deadline_s:
            self.verdict = f"stopped early: the run took longer than {self.deadline_s:g} s"
        return self.verdict


class LoadShape(Protocol):
    """A load shape: when each job starts. ``name`` is the marker's ``load=`` value."""

    @property
    def name(self) -> str: ...

    async def drive(self, jobs: Sequence[Job], send: Send, stop: StopRule) -> list[RequestRecord]:
        """Run every job (unless ``stop`` says otherwise) and return all records."""
        ...


async def closed_loop(jobs: Sequence[Job], send: Send, stop: StopRule, workers: int) -> list[RequestRecord]:
    """``workers`` clients, each starting the next job as soon as its last one finished."""
    records: list[RequestRecord] = []
    queue = list(reversed(jobs))

    async def worker() -> None:
        while queue and stop.check(records) is None:
            job = queue.pop()
            records.extend(await job(send))

    await asyncio.gather(*(worker() for _ in range(max(1, min(workers, len(jobs))))))
    return records


async def open_loop(jobs: Sequence[Job], arrivals: Sequence[float], send: Send, stop: StopRule,
                    max_concurrency: int | None = None) -> list[RequestRecord]:
    """Start each job at its arrival offset (seconds), whether or not earlier ones finished."""
    records: list[RequestRecord] = []
    in_flight = 0
    limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    start = time.perf_counter()

    async def run(job: Job) -> None:
        nonlocal in_flight
        in_flight += 1
        try:
            if limit is not None:
                async with limit:
                    records.extend(await job(send))
            else:
                records.extend(await job(send))
        finally:
            in_flight -= 1

    tasks: list[asyncio.Task[None]] = []
    for offset, job in sorted(zip(arrivals, jobs, strict=True), key=lambda p: p[0]):
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if stop.check(records, in_flight) is not None:
            break
        tasks.append(asyncio.create_task(run(job)))
    while tasks:
        done, pending = await asyncio.wait(tasks, timeout=0.5)
        tasks = list(pending)
        if stop.check(records, in_flight) is not None and stop.verdict and "over-saturated" in stop.verdict:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            break
    return records
