"""Which GPUs an engine may start on, and locks that keep two engines off one GPU.

A session (or one pytest-xdist worker) *owns* some GPUs and may *borrow* others of the
run's pool when a tensor-parallel engine needs more than it owns. Every engine's GPUs
are locked for its lifetime with one lock file per GPU UUID, taken in PCI order, so
workers that borrow from each other wait for each other instead of sharing a GPU, and
cannot deadlock: each holds at most one lease, and all take locks in the same order.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from filelock import FileLock

from .nvml import VisibleGpu

T = TypeVar("T")


class NotEnoughGpus(RuntimeError):
    """An engine needs more GPUs than the run has."""


def default_lock_dir() -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"llmperf-gpu-locks-{uid}"


class GpuLeases:
    """Hands out GPUs to one engine at a time: owned ones first, then borrowed ones."""

    def __init__(self, owned: Sequence[VisibleGpu], pool: Sequence[VisibleGpu] | None = None,
                 lock_dir: Path | None = None) -> None:
        self.owned = list(owned)
        self.pool = list(pool) if pool is not None else list(owned)
        self.pool += [g for g in self.owned if g not in self.pool]
        self.lock_dir = lock_dir or default_lock_dir()
        self._held: list[FileLock] = []
        self.current: list[VisibleGpu] = []

    def choose(self, count: int) -> list[VisibleGpu]:
        """The GPUs an engine of ``count`` GPUs gets: owned first, then the pool's next."""
        if count > len(self.pool):
            raise NotEnoughGpus(
                f"tp={count} needs {count} GPUs, but this run has {len(self.pool)} "
                f"({', '.join(g.label() for g in self.pool) or 'none'})"
            )
        chosen = self.owned[:count]
        chosen += [g for g in self.pool if g not in chosen][: count - len(chosen)]
        return chosen

    def acquire(self, count: int) -> list[VisibleGpu]:
        """Lock ``count`` GPUs for one engine; blocks while another engine holds one."""
        self.release()
        chosen = self.choose(count)
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        try:
            for gpu in sorted(chosen, key=lambda g: (g.order, g.uuid)):
                lock = FileLock(str(self.lock_dir / f"{gpu.uuid}.lock"))
                lock.acquire()
                self._held.append(lock)
        except BaseException:
            self.release()
            raise
        self.current = chosen
        return chosen

    def release(self) -> None:
        for lock in reversed(self._held):
            lock.release()
        self._held = []
        self.current = []


def start_leased(leases: GpuLeases | None, count: int,
                 start: Callable[[list[VisibleGpu] | None], T]) -> T:
    """``start(gpus)`` on ``count`` GPUs locked for it (None without leases: the CPU
    build, or the first visible GPUs); the GPUs go back at once if the start fails.
    The caller releases them when what it started stops."""
    gpus = leases.acquire(count) if leases is not None else None
    try:
        return start(gpus)
    except BaseException:
        if leases is not None:
            leases.release()
        raise


def assign(gpus: Sequence[VisibleGpu], worker_index: int, worker_count: int) -> list[VisibleGpu]:
    """The GPUs worker ``worker_index`` of ``worker_count`` owns: an equal, disjoint block.

    GPUs left over when the count does not divide go unowned (still borrowable).
    """
    if worker_count < 1 or not 0 <= worker_index < worker_count:
        raise ValueError(f"worker {worker_index} of {worker_count}")
    per = len(gpus) // worker_count
    if per < 1:
        raise NotEnoughGpus(
            f"{worker_count} workers but only {len(gpus)} GPU(s): each worker needs its own GPU"
        )
    return list(gpus[worker_index * per:(worker_index + 1) * per])
