"""A stand-in ``pynvml`` for tests of the GPU code on machines without a GPU.

Devices are plain objects whose state a test changes while code reads it (memory,
processes, clock-event reasons, temperature, power), so the memory sampler, the
guards, the release check and the visible-device resolver run their real code.
"""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass, field
from typing import Any

GIB = 2**30
THERMAL = 0x20  # nvmlClocksEventReasonSwThermalSlowdown
POWER_CAP = 0x04


class NVMLError(Exception):
    pass


@dataclass(eq=False)
class FakeGpu:
    uuid: str
    pci_bus_id: str
    name: str = "NVIDIA H100 80GB HBM3"
    total_gib: float = 80.0
    used_gib: float = 0.5
    procs: dict[int, float] = field(default_factory=dict)  # pid -> GiB
    reasons: int = 0
    temp_c: int = 40
    power_w: float = 300.0
    parent: FakeGpu | None = None  # set on a MIG slice


class FakeNvml(types.ModuleType):
    """``nvml_order`` lists the devices in NVML's order (PCI order when not given)."""

    NVML_CLOCK_MEM = 2
    NVMLError = NVMLError

    def __init__(self, gpus: list[FakeGpu], nvml_order: list[int] | None = None,
                 migs: list[FakeGpu] | None = None, fail_init: bool = False) -> None:
        super().__init__("pynvml")
        self.gpus = gpus
        self.order = nvml_order if nvml_order is not None else list(range(len(gpus)))
        self.migs = migs or []
        self.fail_init = fail_init
        self.calls: list[str] = []

    def install(self, monkeypatch: Any) -> FakeNvml:
        monkeypatch.setitem(sys.modules, "pynvml", self)
        return self

    def nvmlInit(self) -> None:
        if self.fail_init:
            raise NVMLError("Driver Not Loaded")
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self.gpus[self.order[i]]

    def nvmlDeviceGetHandleByUUID(self, uuid: str | bytes) -> FakeGpu:
        text = uuid.decode() if isinstance(uuid, bytes) else uuid
        for g in [*self.gpus, *self.migs]:
            if g.uuid == text:
                return g
        raise NVMLError("Not Found")

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetName(self, h: FakeGpu) -> bytes:
        return h.name.encode()

    def nvmlDeviceGetPciInfo(self, h: FakeGpu) -> Any:
        return types.SimpleNamespace(busId=h.pci_bus_id.encode())

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        return types.SimpleNamespace(total=int(h.total_gib * GIB), used=int(h.used_gib * GIB))

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list[Any]:
        return [types.SimpleNamespace(pid=p, usedGpuMemory=int(g * GIB)) for p, g in h.procs.items()]

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeGpu) -> int:
        if h.parent is not None:
            raise NVMLError("Not Supported")  # as on a MIG slice
        return h.reasons

    def nvmlDeviceGetTemperature(self, h: FakeGpu, sensor: int) -> int:
        return h.temp_c

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return int(h.power_w * 1000)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h: FakeGpu) -> FakeGpu:
        if h.parent is None:
            raise NVMLError("Invalid Argument")
        return h.parent

    def nvmlDeviceGetMaxClockInfo(self, h: FakeGpu, kind: int) -> int:
        return 2619

    def nvmlDeviceGetMemoryBusWidth(self, h: FakeGpu) -> int:
        return 5120

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.65.06"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000


def h100s(count: int, name: str = "NVIDIA H100 80GB HBM3") -> list[FakeGpu]:
    return [FakeGpu(uuid=f"GPU-{i}aaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
                    pci_bus_id=f"00000000:{0x18 + 0x10 * i:02X}:00.0", name=name)
            for i in range(count)]
