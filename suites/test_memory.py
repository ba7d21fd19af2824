"""Does the KV cache hold what the model card predicts, and does a stopped engine give
all its memory back?

- Capacity: vLLM's KV-cache tokens against the card's formula (KV bytes vLLM set aside
  / 2 x layers x KV heads x head dim x dtype bytes), within 10%; the weights it loaded
  against the card's parameter count, likewise (GPU-sized models only).
- Leaks: the same engine started and stopped 5 times (2 on the CPU build, where a start
  costs half a minute); after each stop, GPU memory, /dev/shm, child processes and this
  process's RSS are back to their idle level.
"""

import pytest
from tiny import TINY_ENGINE

from pytest_llmperf import perf
from pytest_llmperf.cards import predicted_weight_bytes, resolve_model
from pytest_llmperf.footprint import leaks, take


# The throughput table's first row: the engine is shared with it.
@perf(model="llama-3.1-8b", tp=1, max_model_len=1024, batch=24, gpu_memory_utilization=0.93,
      input_len=256, output_len=32, trials=2, cpu={**TINY_ENGINE, "input_len": 64})
def test_kv_capacity_matches_the_card(llmperf):
    mem = llmperf.run().memory
    assert mem.kv_cache_tokens and mem.predicted_kv_cache_tokens, "vLLM did not report its KV cache"
    assert mem.kv_cache_tokens == pytest.approx(mem.predicted_kv_cache_tokens, rel=0.10)
    llmperf.note(f"KV cache {mem.kv_cache_tokens:,} tokens, card formula "
                 f"{mem.predicted_kv_cache_tokens:,} ({mem.predicted_kv_bytes_per_token:,} B/token)")
    source = resolve_model(llmperf.engine_config.model)
    predicted = predicted_weight_bytes(source.config) / 2**30
    if predicted >= 1 and mem.weights_gib:  # vLLM logs GiB to two decimals
        assert mem.weights_gib * llmperf.engine_config.tp == pytest.approx(predicted, rel=0.10)


@perf(model="llama-3.1-8b", max_model_len=1024, batch=8, input_len=128, output_len=32,
      trials=1, warmup=0, enforce_eager=True, gpu_memory_utilization=0.5,
      cpu={**TINY_ENGINE, "max_num_seqs": 8, "extra": {"kv_cache_memory_bytes": 64 * 2**20}})
def test_restarts_give_memory_back(llmperf):
    cycles = 5 if llmperf.device == "gpu" else 2
    gpus = range(llmperf.engine_config.tp)
    llmperf.stop_engine()
    idle = take(llmperf.device, gpus)
    for cycle in range(1, cycles + 1):
        llmperf.run()
        llmperf.stop_engine()
        left = leaks(idle, take(llmperf.device, gpus))
        assert not left, f"after start/stop {cycle} of {cycles}: " + "; ".join(left)
    llmperf.note(f"{cycles} starts and stops, memory back to idle each time")
