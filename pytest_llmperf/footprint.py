"""What a stopped engine may have left behind: GPU memory, shared memory, processes.

Taken before an engine starts and after it stops, two footprints say whether stopping
gave everything back (the leak check of suites/test_memory.py): device memory as NVML
sees it on the engine's GPUs, ``/dev/shm`` (vLLM's message queues between processes),
processes still under this one, and this process's own RSS.

Helpers that Python's multiprocessing starts once and keeps for the rest of the session
(the resource tracker, the forkserver) are not counted: the first engine start of a
session starts the resource tracker, and on 2026-12-04 that read as "1 engine process
still running" when suites/test_memory.py::test_restarts_give_memory_back ran alone on
an H200.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

MIB = 2**20
# Command-line marks of multiprocessing's session-long helpers (see the module docstring).
SESSION_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver")


@dataclass(frozen=True)
class Footprint:
    device_gib: float | None  # used memory on the engine's GPUs; None on the CPU build
    shm_mib: float
    processes: tuple[str, ...]  # "pid command line" of each process under this one
    rss_mib: float

    @property
    def child_processes(self) -> int:
        return len(self.processes)


def _children(me: psutil.Process) -> tuple[str, ...]:
    """"pid command" of each live process under ``me``, less the session helpers."""
    out = []
    for proc in me.children(recursive=True):
        try:
            command = " ".join(proc.cmdline()) or proc.name()
        except psutil.Error:  # gone meanwhile: not left behind
            continue
        if not any(mark in command for mark in SESSION_HELPERS):
            out.append(f"{proc.pid} {command}")
    return tuple(out)


def take(device: str, gpu_indices: Sequence[int] = (0,)) -> Footprint:
    """The footprint now, for ``device`` ("gpu" or "cpu")."""
    used = None
    if device == "gpu":
        from .hw.nvml import device_memory_used_gib

        used = sum(device_memory_used_gib(list(gpu_indices)).values())
    try:
        st = os.statvfs("/dev/shm")
        shm = (st.f_blocks - st.f_bfree) * st.f_frsize / MIB
    except OSError:
        shm = 0.0
    me = psutil.Process()
    return Footprint(used, shm, _children(me), me.memory_info().rss / MIB)


def leaks(
    idle: Footprint,
    now: Footprint,
    *,
    device_gib: float = 0.5,
    shm_mib: float = 64.0,
    rss_mib: float = 256.0,
) -> list[str]:
    """What ``now`` holds beyond ``idle`` past the tolerances; empty when all came back."""
    out = []
    if (idle.device_gib is not None and now.device_gib is not None
            and now.device_gib - idle.device_gib > device_gib):
        out.append(f"GPU memory {now.device_gib:.2f} GiB in use, {idle.device_gib:.2f} GiB at idle")
    if now.shm_mib - idle.shm_mib > shm_mib:
        out.append(f"/dev/shm {now.shm_mib:.0f} MiB in use, {idle.shm_mib:.0f} MiB at idle")
    if now.child_processes > idle.child_processes:
        new = [p for p in now.processes if p not in idle.processes]
        named = f": {'; '.join(c[:160] for c in new)}" if new else ""
        out.append(f"{now.child_processes - idle.child_processes} engine process(es) still "
                   f"running{named}")
    if now.rss_mib - idle.rss_mib > rss_mib:
        out.append(f"this process grew from {idle.rss_mib:.0f} to {now.rss_mib:.0f} MiB")
    return out
