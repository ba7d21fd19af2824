"""Run a config under a smaller card's memory budget (e.g. an RTX 4090's 24 GiB).

``gpu_memory_utilization`` in a marker means a share of the card the config is meant
for. Under a budget of B bytes on a GPU of T bytes, vLLM gets that share of B, i.e.
``utilization x B / T`` of the big GPU, so a host with an H100 checks that configs
meant for 24 GiB runners fit (and, with the preemption counter, do not preempt).
A config whose weights plus one full-length request's KV cache cannot fit is
refused before any engine starts, with the sizes that decide it.
"""

from __future__ import annotations

import re
from dataclasses import replace

from .cards import ModelSource, predicted_weight_bytes
from .config import EngineConfig

GIB = 2**30
_UNITS = {"": GIB, "g": GIB, "gib": GIB, "gb": 10**9, "m": 2**20, "mib": 2**20, "mb": 10**6,
          "t": 2**40, "tib": 2**40, "tb": 10**12}
_SIZE = re.compile(r"^\s*([\d.]+)\s*([a-zA-Z]*)\s*$")


class BudgetError(ValueError):
    """A memory budget is malformed, or a config does not fit in it."""


def parse_size(text: str) -> int:
    """``"24GiB"``, ``"24 GB"``, ``"24"`` (GiB) -> bytes."""
    m = _SIZE.match(text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS:
        raise BudgetError(f"{text!r} is not a memory size: write e.g. 24GiB, 24GB or 16384MiB")
    value = float(m.group(1)) * _UNITS[unit]
    if value <= 0:
        raise BudgetError(f"{text!r}: a memory budget must be positive")
    return int(value)


def fmt_gib(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def under_budget(
    engine: EngineConfig, source: ModelSource, budget_bytes: int, device_bytes: int
) -> EngineConfig:
    """The engine config that uses only ``budget_bytes`` of a ``device_bytes`` GPU.

    Raises BudgetError when the budget exceeds the GPU or the config cannot fit.
    """
    if budget_bytes > device_bytes:
        raise BudgetError(
            f"memory budget {fmt_gib(budget_bytes)} is larger than this GPU's {fmt_gib(device_bytes)}"
        )
    usable = engine.gpu_memory_utilization * budget_bytes
    weights = predicted_weight_bytes(source.config, engine.dtype) if source.config else None
    kv_per_token = source.engine_kv_bytes_per_token(engine.speculative_config, engine.kv_cache_dtype,
                                                    engine.dtype)
    if weights is not None and engine.quantization is None:
        need = weights / engine.tp
        what = f"weights {fmt_gib(need)}"
        if kv_per_token and engine.max_model_len:
            kv = kv_per_token * engine.max_model_len / engine.tp
            need += kv
            what += f" + one {engine.max_model_len}-token request's KV cache {fmt_gib(kv)}"
        if need > usable:
            raise BudgetError(
                f"{engine.label()} does not fit the memory budget: {what} = {fmt_gib(need)} per GPU, "
                f"but gpu_memory_utilization {engine.gpu_memory_utilization} x budget "
                f"{fmt_gib(budget_bytes)} = {fmt_gib(usable)}"
            )
    share = round(engine.gpu_memory_utilization * budget_bytes / device_bytes, 4)
    return replace(engine, gpu_memory_utilization=share)
