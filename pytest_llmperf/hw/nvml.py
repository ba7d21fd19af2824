"""The one NVML front-end: which GPUs CUDA will use, their facts, and what runs on them.

NVML numbers devices its own way and ignores ``CUDA_VISIBLE_DEVICES``; CUDA numbers
them by ``CUDA_DEVICE_ORDER`` (``FASTEST_FIRST`` by default, or ``PCI_BUS_ID``) among
the devices ``CUDA_VISIBLE_DEVICES`` leaves visible. :func:`visible_gpus` resolves that
once, into :class:`VisibleGpu` records that carry the device's UUID, PCI bus id and
NVML index, and every other part of the package (the memory sampler, the guards, the
memory-release check, the fingerprint, the xdist worker pinning) goes through them.

``pynvml`` comes from the ``nvidia-ml-py`` package and is imported only when a GPU is
asked about. Queries a driver does not support yield ``None``: a missing temperature
must never fail a performance test.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

GIB = 2**30

# Test-only: pretend these GPUs are visible without touching NVML, so the xdist worker
# pinning and GPU leases can be exercised on the CPU build. A count ("2") or
# comma-separated UUIDs ("GPU-fake-a,GPU-fake-b"). Engines still run on the CPU.
FAKE_GPUS_ENV = "LLMPERF_FAKE_GPUS"


class NvmlUnavailable(RuntimeError):
    """NVML cannot be loaded or sees no GPU; the message says which."""


class DeviceOrderError(ValueError):
    """``CUDA_VISIBLE_DEVICES`` uses indices whose meaning NVML cannot pin down."""


@dataclass(frozen=True)
class VisibleGpu:
    """One device CUDA will use, identified the ways NVML and CUDA both understand."""

    uuid: str  # "GPU-..." or, for a MIG slice, "MIG-..."
    nvml_index: int  # NVML's index (of the parent GPU for a MIG slice)
    pci_bus_id: str
    name: str
    memory_total_mib: int
    order: int  # index among all GPUs in PCI bus order: CUDA's index with CUDA_DEVICE_ORDER=PCI_BUS_ID
    mig: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> VisibleGpu:
        return cls(**data)

    def label(self) -> str:
        return f"GPU {self.order} ({self.uuid})"


def cuda_env(gpus: Sequence[VisibleGpu]) -> dict[str, str]:
    """Environment that makes a process see exactly ``gpus``, in this order.

    Numeric indices in PCI bus order, because vLLM reads ``CUDA_VISIBLE_DEVICES`` as
    integers (``Platform.device_id_to_physical_device_id``) and UUIDs would break it.
    MIG slices have no such index: they are passed by UUID.
    """
    return {
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "CUDA_VISIBLE_DEVICES": ",".join(g.uuid if g.mig else str(g.order) for g in gpus),
    }


def parse_visible(
    spec: str | None,
    gpus: Sequence[VisibleGpu],
    *,
    device_order: str | None = None,
    find_mig: Callable[[str], VisibleGpu | None] = lambda _uuid: None,
) -> list[VisibleGpu]:
    """The devices CUDA will use, in CUDA's order, as ``CUDA_VISIBLE_DEVICES=spec`` says.

    ``gpus`` are all physical GPUs in PCI bus order. Follows CUDA: entries are indices,
    unique ``GPU-`` UUID prefixes or ``MIG-`` UUIDs, and the list ends at the first
    entry that names no device (or names one twice). Indices count in
    ``CUDA_DEVICE_ORDER``; under the default ``FASTEST_FIRST`` they equal PCI order
    only when all GPUs are the same model, so on a mixed host an index is ambiguous.
    """
    pci_order = (device_order or "").strip().upper() == "PCI_BUS_ID"
    if spec is None:
        return list(gpus)
    out: list[VisibleGpu] = []
    for raw in spec.split(","):
        entry = raw.strip()
        found: VisibleGpu | None = None
        if re.fullmatch(r"\d+", entry):
            if not pci_order and len({g.name for g in gpus}) > 1:
                raise DeviceOrderError(
                    f"CUDA_VISIBLE_DEVICES={spec!r} uses indices, but this host has different "
                    f"GPU models ({', '.join(sorted({g.name for g in gpus}))}) and "
                    "CUDA_DEVICE_ORDER is not PCI_BUS_ID, so CUDA's order is unknown to NVML: "
                    "set CUDA_DEVICE_ORDER=PCI_BUS_ID or name GPUs by UUID"
                )
            if int(entry) < len(gpus):
                found = gpus[int(entry)]
        elif entry.upper().startswith("GPU-"):
            match = [g for g in gpus if g.uuid.upper().startswith(entry.upper())]
            found = match[0] if len(match) == 1 else None
        elif entry.upper().startswith("MIG-"):
            found = find_mig(entry)
        if found is None or found in out:
            break
        out.append(found)
    return out


# -- NVML access --------------------------------------------------------------------


def load() -> Any:
    """The initialised ``pynvml`` module; raises NvmlUnavailable saying why not."""
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


def shutdown() -> None:
    with contextlib.suppress(Exception):
        import pynvml  # type: ignore[import-not-found, import-untyped, unused-ignore]

        pynvml.nvmlShutdown()


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception:
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pci_bus_id(nv: Any, handle: Any) -> str:
    info = _safe(nv.nvmlDeviceGetPciInfo, handle)
    bus = getattr(info, "busId", None) if info is not None else None
    return _text(bus).upper() if bus is not None else ""


def _physical_gpus(nv: Any) -> list[VisibleGpu]:
    """Every GPU NVML sees, in PCI bus order (CUDA's order under PCI_BUS_ID)."""
    found = []
    for i in range(nv.nvmlDeviceGetCount()):
        h = nv.nvmlDeviceGetHandleByIndex(i)
        found.append((_pci_bus_id(nv, h), i, h))
    found.sort(key=lambda t: (t[0], t[1]))
    return [
        VisibleGpu(
            uuid=_text(nv.nvmlDeviceGetUUID(h)),
            nvml_index=i,
            pci_bus_id=bus,
            name=_text(nv.nvmlDeviceGetName(h)),
            memory_total_mib=int(nv.nvmlDeviceGetMemoryInfo(h).total) // 2**20,
            order=order,
        )
        for order, (bus, i, h) in enumerate(found)
    ]


def _mig_finder(nv: Any, gpus: Sequence[VisibleGpu]) -> Callable[[str], VisibleGpu | None]:
    def find(uuid: str) -> VisibleGpu | None:
        try:
            h = nv.nvmlDeviceGetHandleByUUID(uuid)
        except Exception:  # unknown to NVML: CUDA stops the list here too
            return None
        parent = _safe(nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle, h)
        bus = _pci_bus_id(nv, parent) if parent is not None else ""
        owner = next((g for g in gpus if bus and g.pci_bus_id == bus), None)
        return VisibleGpu(
            uuid=uuid,
            nvml_index=owner.nvml_index if owner else -1,
            pci_bus_id=bus,
            name=_text(nv.nvmlDeviceGetName(h)),
            memory_total_mib=int(nv.nvmlDeviceGetMemoryInfo(h).total) // 2**20,
            order=owner.order if owner else -1,
            mig=True,
        )

    return find


def _fake_gpus(value: str) -> list[VisibleGpu]:
    value = value.strip()
    uuids = ([f"GPU-fake-{i}" for i in range(int(value))] if value.isdigit()
             else [u.strip() for u in value.split(",") if u.strip()])
    return [
        VisibleGpu(uuid=u, nvml_index=i, pci_bus_id=f"00000000:{i + 1:02X}:00.0",
                   name=f"Fake GPU ({FAKE_GPUS_ENV})", memory_total_mib=81920, order=i)
        for i, u in enumerate(uuids)
    ]


def fake_gpus_requested(environ: Mapping[str, str] | None = None) -> bool:
    return bool((os.environ if environ is None else environ).get(FAKE_GPUS_ENV, "").strip())


def visible_gpus(environ: Mapping[str, str] | None = None, nv: Any = None) -> list[VisibleGpu]:
    """The GPUs this process's CUDA will use, in CUDA's order.

    ``nv``: an initialised pynvml (else loaded here). Raises NvmlUnavailable without
    NVML, DeviceOrderError when indices are ambiguous.
    """
    env = os.environ if environ is None else environ
    spec = env.get("CUDA_VISIBLE_DEVICES")
    order = env.get("CUDA_DEVICE_ORDER")
    if fake_gpus_requested(env):
        return parse_visible(spec, _fake_gpus(env[FAKE_GPUS_ENV]), device_order=order)
    nv = nv or load()
    gpus = _physical_gpus(nv)
    return parse_visible(spec, gpus, device_order=order, find_mig=_mig_finder(nv, gpus))


def handle(nv: Any, gpu: VisibleGpu) -> Any:
    return nv.nvmlDeviceGetHandleByUUID(gpu.uuid)


def _board_handle(nv: Any, gpu: VisibleGpu, h: Any) -> Any:
    """Clocks, temperature and power belong to the whole board, not a MIG slice."""
    if gpu.mig:
        return _safe(nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle, h) or h
    return h


# -- facts for the fingerprint and the gpu_info fixture ------------------------------


@dataclass(frozen=True)
class GpuDevice:
    index: int  # CUDA's index in this process
    name: str
    uuid: str
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
    """What the ``gpu_info`` fixture returns: the GPUs visible to this process."""

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


def system_versions(nv: Any) -> tuple[str | None, str | None]:
    """(driver, CUDA driver API version such as "13.0")."""
    driver = _safe(nv.nvmlSystemGetDriverVersion)
    cuda_raw = _safe(nv.nvmlSystemGetCudaDriverVersion)
    cuda = f"{cuda_raw // 1000}.{(cuda_raw % 1000) // 10}" if cuda_raw else None
    return (_text(driver) if driver is not None else None), cuda


def gpu_info() -> GpuInfo:
    """Facts about the visible GPUs; raises NvmlUnavailable when there is none."""
    nv = load()
    try:
        gpus = visible_gpus(nv=nv)
    except DeviceOrderError as exc:
        raise NvmlUnavailable(str(exc)) from exc
    if not gpus:
        raise NvmlUnavailable(_none_visible())
    devices = []
    for cuda_index, g in enumerate(gpus):
        h = handle(nv, g)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        board = _board_handle(nv, g, h)
        devices.append(GpuDevice(
            index=cuda_index,
            name=g.name,
            uuid=g.uuid,
            memory_total_gib=mem.total / GIB,
            memory_used_gib=mem.used / GIB,
            max_memory_clock_mhz=_safe(nv.nvmlDeviceGetMaxClockInfo, board, nv.NVML_CLOCK_MEM),
            memory_bus_width_bits=_safe(nv.nvmlDeviceGetMemoryBusWidth, board),
        ))
    driver, cuda = system_versions(nv)
    return GpuInfo(driver=driver, cuda=cuda, devices=tuple(devices))


def _none_visible() -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return ("no GPU is visible (NVML reports none"
            + (f", or CUDA_VISIBLE_DEVICES={visible!r} hides them all)" if visible is not None else ")"))


def usable_gpu_reason() -> str | None:
    """None when a GPU can run engines here, else why not (for ``--gpu`` usage errors)."""
    try:
        gpus = visible_gpus()
    except (NvmlUnavailable, DeviceOrderError) as exc:
        return str(exc)
    return None if gpus else _none_visible()


# -- what runs on a GPU, and what holds it back --------------------------------------


def memory_used_gib(nv: Any, gpu: VisibleGpu) -> float:
    return float(nv.nvmlDeviceGetMemoryInfo(handle(nv, gpu)).used) / GIB


def compute_pids(gpu: VisibleGpu, nv: Any = None) -> dict[int, float]:
    """PIDs using a device and their memory in GiB (0 where the driver hides it)."""
    nv = nv or load()
    procs = _safe(nv.nvmlDeviceGetComputeRunningProcesses, handle(nv, gpu)) or []
    return {p.pid: (p.usedGpuMemory or 0) / GIB for p in procs}


# nvmlClocksEventReason* bits (formerly "throttle reasons"), stable across drivers.
REASON_BITS = {
    0x0000000000000004: "power cap",
    0x0000000000000008: "hardware slowdown",
    0x0000000000000020: "thermal slowdown (software)",
    0x0000000000000040: "thermal slowdown (hardware)",
    0x0000000000000080: "power brake slowdown",
}


@dataclass(frozen=True)
class GpuReading:
    """One look at one GPU: its memory, who runs on it, and what holds its clocks."""

    gpu: VisibleGpu
    used_gib: float
    processes: dict[int, float]  # pid -> GiB
    reasons: tuple[str, ...]
    temp_c: int | None
    power_w: float | None


def _temperature(nv: Any, h: Any) -> int | None:
    """GPU temperature; the versioned call first, as newer drivers retire the old one."""
    for name in ("nvmlDeviceGetTemperatureV", "nvmlDeviceGetTemperature"):
        fn = getattr(nv, name, None)
        if fn is None:
            continue
        try:
            return int(fn(h, 0))  # 0 = NVML_TEMPERATURE_GPU
        except Exception:
            continue
    return None


def _clock_event_bits(nv: Any, h: Any) -> int:
    for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        fn = getattr(nv, name, None)
        if fn is None:
            continue
        try:
            return int(fn(h))
        except Exception:
            continue
    return 0


def read_gpu(nv: Any, gpu: VisibleGpu) -> GpuReading:
    """Memory, processes, clock-event reasons, temperature and power of one GPU."""
    h = handle(nv, gpu)
    board = _board_handle(nv, gpu, h)
    procs = _safe(nv.nvmlDeviceGetComputeRunningProcesses, h) or []
    bits = _clock_event_bits(nv, board)
    milliwatts = _safe(nv.nvmlDeviceGetPowerUsage, board)
    return GpuReading(
        gpu=gpu,
        used_gib=float(nv.nvmlDeviceGetMemoryInfo(h).used) / GIB,
        processes={p.pid: (p.usedGpuMemory or 0) / GIB for p in procs},
        reasons=tuple(name for bit, name in REASON_BITS.items() if bits & bit),
        temp_c=_temperature(nv, board),
        power_w=milliwatts / 1000.0 if milliwatts is not None else None,
    )


def device_memory_used_gib(indices: Sequence[int] | None = None) -> dict[int, float]:
    """Used memory per visible GPU (keys: CUDA indices in this process), all when None."""
    nv = load()
    gpus = visible_gpus(nv=nv)
    chosen = range(len(gpus)) if indices is None else [i for i in indices if i < len(gpus)]
    return {i: memory_used_gib(nv, gpus[i]) for i in chosen}


def compute_capability(index: int = 0) -> tuple[int, int] | None:
    """CUDA compute capability of visible GPU ``index``, e.g. (9, 0) for an H100; None if unknown."""
    try:
        nv = load()
        gpu = visible_gpus(nv=nv)[index]
        h = _board_handle(nv, gpu, handle(nv, gpu))
        cc = nv.nvmlDeviceGetCudaComputeCapability(h)
    except Exception:
        return None
    return int(cc[0]), int(cc[1])
