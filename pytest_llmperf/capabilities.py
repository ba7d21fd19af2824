"""Whether this machine can run a feature at all, asked before an engine is started.

A test of fp8 on hardware without fp8 kernels should skip with the reason, not spend
an engine start on vLLM's refusal. The answers follow vLLM's own checks: fp8 weights
and fp8 KV cache need compute capability 8.9 (Ada, Hopper) on NVIDIA GPUs; on the CPU
build the fp8 KV cache needs AVX-512 or AMX and fp8 weight kernels need AMX.
"""

from __future__ import annotations

from pathlib import Path


def cpu_flags() -> set[str]:
    """The flags of the first CPU in /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def fp8_unsupported(device: str, what: str) -> str | None:
    """Why ``what`` ("weights" or "kv_cache") cannot run in fp8 here; None when it can."""
    if device == "gpu":
        from .hw.nvml import compute_capability

        cc = compute_capability(0)
        if cc is None:
            return "the GPU's compute capability is unknown (NVML did not say)"
        if cc < (8, 9):
            return f"fp8 needs compute capability 8.9 or newer (Ada, Hopper); this GPU has {cc[0]}.{cc[1]}"
        return None
    flags = cpu_flags()
    if what == "kv_cache" and not flags & {"avx512f", "amx_tile"}:
        return "vLLM's CPU build keeps an fp8 KV cache only with AVX-512 or AMX; this CPU has neither"
    if what == "weights" and "amx_tile" not in flags:
        return "vLLM's CPU build has fp8 weight kernels only for AMX (Sapphire Rapids or newer); this CPU has none"
    return None
