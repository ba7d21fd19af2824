"""Background sampling of memory and of what could disturb a measurement.

Runs as a thread inside the engine's own process while a workload runs: peak memory
of the engine's process tree (GPU memory via NVML, or RSS on the CPU build), and
guards that say whether a trial's numbers can be trusted - another process on the
GPU, clocks held down by heat, power or a hardware slowdown.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

from .hw.nvml import GIB, VisibleGpu

# Power capping under full load is normal on some boards; flag it only when it holds
# the clocks for a good share of the trial, other reasons on any sample.
_SHARE_TO_FLAG = {"power cap": 0.25}
HOT_C = 87


@dataclass
class Sample:
    t: float
    process_gib: float
    device_gib: float | None = None
    reasons: tuple[str, ...] = ()  # "thermal slowdown (software) on GPU 1"
    foreign: tuple[int, ...] = ()
    temp_c: int | None = None
    power_w: float | None = None


@dataclass
class ResourceSampler:
    """Samples every ``interval_s`` until stopped; call :meth:`window` for a trial.

    ``gpus`` are exactly the GPUs the engine uses (see hw/nvml.py); each is read on
    every sample, so a throttled or shared GPU of a tensor-parallel engine is seen.
    """

    device: str  # "gpu" or "cpu"
    gpus: list[VisibleGpu] = field(default_factory=list)
    interval_s: float = 0.05
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _nv: Any = None
    _idle_device_gib: float = 0.0

    def __post_init__(self) -> None:
        if self.device == "gpu" and self.gpus:
            from .hw import nvml

            try:
                self._nv = nvml.load()
                # Taken before the engine starts: in a container NVML may report host
                # PIDs that match nothing here, and then the engine's share is the
                # devices' growth since this moment.
                self._idle_device_gib = sum(nvml.memory_used_gib(self._nv, g) for g in self.gpus)
            except Exception:
                self._nv = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="llmperf-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            # A vanished PID mid-sample is not worth a crash.
            with contextlib.suppress(Exception):
                self.samples.append(self.sample())
            self._stop.wait(self.interval_s)

    def _tree(self) -> list[psutil.Process]:
        me = psutil.Process(os.getpid())
        return [me, *me.children(recursive=True)]

    def sample(self) -> Sample:
        tree = self._tree()
        now = time.perf_counter()
        if self._nv is None:
            rss = 0
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            return Sample(now, rss / GIB)
        from .hw.nvml import read_gpu

        pids = {p.pid for p in tree}
        own = 0.0
        device = 0.0
        reasons: set[str] = set()
        foreign: set[int] = set()
        temps: list[int] = []
        power: list[float] = []
        matched = False
        for gpu in self.gpus:
            r = read_gpu(self._nv, gpu)
            device += r.used_gib
            mine = {pid: gib for pid, gib in r.processes.items() if pid in pids}
            matched = matched or bool(mine)
            own += sum(mine.values())
            if mine:
                foreign.update(pid for pid in r.processes if pid not in pids)
            elif len(r.processes) > 1:
                # PIDs from another namespace: one engine process per GPU is expected.
                foreign.update(r.processes)
            # Guards on every GPU the engine uses, whether or not its PIDs are seen.
            reasons.update(f"{name} on GPU {gpu.order}" for name in r.reasons)
            if r.temp_c is not None:
                temps.append(r.temp_c)
            if r.power_w is not None:
                power.append(r.power_w)
        if not matched:
            own = max(device - self._idle_device_gib, 0.0)
        return Sample(now, own, device, tuple(sorted(reasons)), tuple(sorted(foreign)),
                      max(temps) if temps else None, sum(power) if power else None)

    def window(self, t0: float, t1: float) -> list[Sample]:
        return [s for s in self.samples if t0 <= s.t <= t1]

    def peak(self, t0: float = 0.0, t1: float = float("inf")) -> tuple[float | None, float | None]:
        """(peak device GiB, peak engine-process GiB) over a window."""
        win = self.window(t0, t1) or self.samples[-1:]
        if not win:
            return None, None
        dev = [s.device_gib for s in win if s.device_gib is not None]
        return (max(dev) if dev else None), max(s.process_gib for s in win)

    def disturbances(self, t0: float, t1: float) -> list[str]:
        """Why a trial in [t0, t1] may not be trustworthy; empty when it was quiet."""
        win = self.window(t0, t1)
        if not win:
            return []
        out: list[str] = []
        foreign = sorted({pid for s in win for pid in s.foreign})
        if foreign:
            out.append(f"other processes on the GPU: pids {', '.join(map(str, foreign))}")
        for name in sorted({r for s in win for r in s.reasons}):
            share = sum(name in s.reasons for s in win) / len(win)
            kind = name.split(" on GPU ")[0]
            if share >= _SHARE_TO_FLAG.get(kind, 0.0):
                out.append(f"clocks held down: {name} in {share:.0%} of samples")
        temps = [s.temp_c for s in win if s.temp_c is not None]
        if temps and max(temps) >= HOT_C:
            out.append(f"GPU temperature reached {max(temps)} C")
        return out

    def conditions(self, t0: float, t1: float) -> dict[str, float | None]:
        """Max temperature and mean power over a window, for the report."""
        win = self.window(t0, t1)
        temps = [s.temp_c for s in win if s.temp_c is not None]
        power = [s.power_w for s in win if s.power_w is not None]
        return {
            "max_temp_c": float(max(temps)) if temps else None,
            "mean_power_w": sum(power) / len(power) if power else None,
        }
