"""NVML facts about the GPUs, loaded lazily so nothing here costs a CPU-only run.

``pynvml`` comes from the ``nvidia-ml-py`` package. Every call is defensive: an NVML
query a driver does not support yields ``None`` rather than an exception, since a
missing temperature must never fail a performance test.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any

GIB = 2**30


class NvmlUnavailable(RuntimeError):
    """NVML cannot be loaded or sees no GPU; the message says which."""


def _nvml() -> Any:
    try:
        import pynvml  # type: ignore[import-not-found, import-untyped, unused-ignore]
    except ImportError as exc:
        raise NvmlUnavailable(
            "the nvidia-ml-py package is not installed (pip install 'pytest-llmperf[gpu]')"
        ) from exc
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # pynvml.NVMLError and friends
        raise NvmlUnavailable(f"NVML did not initialise: {exc}") from exc
    return pynvml


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class GpuDevice:
    index: int
    name: str
    memory_total_gib: float
    memory_used_gib: float
    max_memory_clock_mhz: int | None
    memory_bus_width_bits: int | None

    @property
    def peak_bandwidth_tb_s(self) -> float | None:
        """Peak DRAM bandwidth: 2 transfers per clock x clock x bus width."""
        if not self.max_memory_clock_mhz or not self.memory_bus_width_bits:
            return None
        return 2 * self.max_memory_clock_mhz * 1e6 * self.memory_bus_width_bits / 8 / 1e12


@dataclass(frozen=True)
class GpuInfo:
    """What the ``gpu_info`` fixture returns."""

    driver: str | None
    cuda: str | None
    devices: tuple[GpuDevice, ...]

    @property
    def count(self) -> int:
        return len(self.devices)

    @property
    def name(self) -> str | None:
        return self.devices[0].name if self.devices else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gpu_info() -> GpuInfo:
    """Collect device facts; raises NvmlUnavailable when there is no usable GPU."""
    nv = _nvml()
    count = nv.nvmlDeviceGetCount()
    if count < 1:
        raise NvmlUnavailable("NVML found no GPU")
    devices = []
    for i in range(count):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        devices.append(
            GpuDevice(
                index=i,
                name=_text(nv.nvmlDeviceGetName(h)) or "unknown",
                memory_total_gib=mem.total / GIB,
                memory_used_gib=mem.used / GIB,
                max_memory_clock_mhz=_safe(nv.nvmlDeviceGetMaxClockInfo, h, nv.NVML_CLOCK_MEM),
                memory_bus_width_bits=_safe(nv.nvmlDeviceGetMemoryBusWidth, h),
            )
        )
    cuda_raw = _safe(nv.nvmlSystemGetCudaDriverVersion)
    cuda = f"{cuda_raw // 1000}.{(cuda_raw % 1000) // 10}" if cuda_raw else None
    return GpuInfo(driver=_text(_safe(nv.nvmlSystemGetDriverVersion)), cuda=cuda, devices=tuple(devices))


def usable_gpu_reason() -> str | None:
    """None when a GPU can run engines here, else why not (for ``--gpu`` usage errors)."""
    try:
        info = gpu_info()
    except NvmlUnavailable as exc:
        return str(exc)
    if not info.devices:
        return "no GPU visible"
    return None


def device_memory_used_gib(indices: list[int] | None = None) -> dict[int, float]:
    """Used memory per device, for checking an engine gave its memory back."""
    nv = _nvml()
    out: dict[int, float] = {}
    for i in range(nv.nvmlDeviceGetCount()):
        if indices is not None and i not in indices:
            continue
        out[i] = nv.nvmlDeviceGetMemoryInfo(nv.nvmlDeviceGetHandleByIndex(i)).used / GIB
    return out


def compute_pids(index: int) -> dict[int, float]:
    """PIDs using a device and their memory in GiB (0 where the driver hides it)."""
    nv = _nvml()
    h = nv.nvmlDeviceGetHandleByIndex(index)
    procs = _safe(nv.nvmlDeviceGetComputeRunningProcesses, h) or []
    return {p.pid: (p.usedGpuMemory or 0) / GIB for p in procs}


def shutdown() -> None:
    with contextlib.suppress(Exception):
        import pynvml  # type: ignore[import-not-found, import-untyped, unused-ignore]

        pynvml.nvmlShutdown()


def compute_capability(index: int = 0) -> tuple[int, int] | None:
    """CUDA compute capability of a device, e.g. (9, 0) for an H100; None if unknown."""
    try:
        nv = _nvml()
        cc = nv.nvmlDeviceGetCudaComputeCapability(nv.nvmlDeviceGetHandleByIndex(index))
    except Exception:
        return None
    return int(cc[0]), int(cc[1])
