"""What a stopped engine may have left behind: GPU memory, shared memory, processes.

Taken before an engine starts and after it stops, two footprints say whether stopping
gave everything back (the leak check of suites/test_memory.py): device memory as NVML
sees it on the engine's GPUs, ``/dev/shm`` (vLLM's message queues between processes),
processes still under this one, and this process's own RSS.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

MIB = 2**20


@dataclass(frozen=True)
class Footprint:
    device_gib: float | None  # used memory on the engine's GPUs; None on the CPU build
    shm_mib: float
    child_processes: int
    rss_mib: float


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
    return Footprint(used, shm, len(me.children(recursive=True)), me.memory_info().rss / MIB)


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
        out.append(f"{now.child_processes - idle.child_processes} engine process(es) still running")
    if now.rss_mib - idle.rss_mib > rss_mib:
        out.append(f"this process grew from {idle.rss_mib:.0f} to {now.rss_mib:.0f} MiB")
    return out
