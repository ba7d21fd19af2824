"""What do fp8 weights and an fp8 KV cache change against bf16, on this hardware?

Llama-3.1-8B at batch 24: bf16 (the reference), fp8 weights (vLLM quantizes the bf16
weights online: half the bytes per decode step, so decode should speed up where fp8
kernels exist) and an fp8 KV cache (twice the tokens in the same memory). Each variant
skips with the reason where the hardware has no fp8 kernels (GPUs before compute
capability 8.9; CPUs without AVX-512/AMX). Run the module whole: each variant is
compared with the bf16 reference measured first.
"""

import pytest
from tiny import TINY_ENGINE

from pytest_llmperf import perf
from pytest_llmperf.capabilities import fp8_unsupported

CPU = {**TINY_ENGINE,
       "input_len": 64, "output_len": 32}
VARIANTS = {
    "bf16": ({}, None),
    "fp8-weights": ({"quantization": "fp8"}, "weights"),
    "fp8-kv-cache": ({"kv_cache_dtype": "fp8"}, "kv_cache"),
}
reference: dict[str, object] = {}  # the bf16 result, by device


def variant(name):
    engine, _ = VARIANTS[name]
    mark = perf(model="llama-3.1-8b", max_model_len=1024, batch=24, gpu_memory_utilization=0.93,
                input_len=256, output_len=256, trials=3, **engine, cpu={**CPU, **engine})
    return pytest.param(name, marks=mark, id=name)


@pytest.mark.parametrize("name", [variant(n) for n in VARIANTS])
def test_precision(llmperf, name):
    _, needs = VARIANTS[name]
    why = needs and fp8_unsupported(llmperf.device, needs)
    if why:
        pytest.skip(why)
    result = llmperf.run()
    if name == "bf16":
        reference[llmperf.device] = result
        return
    base = reference.get(llmperf.device)
    if base is None:
        llmperf.note(f"{name}: {result.output_tok_s:,.1f} tok/s (bf16 reference not run)")
        return
    speed = result.output_tok_s / base.output_tok_s
    kv = result.memory.kv_cache_tokens / base.memory.kv_cache_tokens
    llmperf.note(f"{name}: {speed:.2f}x bf16 throughput, {kv:.2f}x its KV-cache tokens")
    if name == "fp8-kv-cache" and llmperf.device == "gpu":
        # Same memory, half the bytes per token: close to twice the tokens.
        assert kv == pytest.approx(2.0, rel=0.1)
