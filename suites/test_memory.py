"""Does the KV cache hold what the model card predicts, is vLLM's "maximum concurrency"
real, and does a stopped engine give all its memory back?

- Capacity: vLLM's KV-cache tokens against the card's formula (KV bytes vLLM set aside
  / 2 x layers x KV heads x head dim x dtype bytes), within 10%; the weights it loaded
  against the card's parameter count, likewise (GPU-sized models only).
- Concurrency: with the KV cache pinned (768 MiB: 16 requests of 384 tokens), vLLM's
  reported maximum concurrency for a full-length request matches capacity /
  max_model_len; 90% of that many full-length requests run without preemption, twice
  as many do not (short prompts, long outputs: vLLM admits a request by its prompt
  and preempts as outputs grow).
- Leaks: the same engine started and stopped 5 times (2 on the CPU build, where a start
  costs half a minute); after each stop, GPU memory, /dev/shm, child processes and this
  process's RSS are back to their idle level.
"""

import math

import pytest
from tiny import PREEMPTING_GATE, TINY_ENGINE

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


@perf(model="llama-3.1-8b", max_model_len=384, max_num_seqs=32, batch=14, input_len=128,
      output_len=256, trials=1, enforce_eager=True, extra={"kv_cache_memory_bytes": 768 * 2**20},
      cpu={**PREEMPTING_GATE, "model": "tiny-llama-2l", "max_model_len": 256, "max_num_seqs": 16, "batch": 7,
           "input_len": 64, "output_len": 192, "warmup": 0,
           "extra": {"kv_cache_memory_bytes": 2 * 2**20}})
def test_reported_max_concurrency_is_real(llmperf, llm_engine):
    length = llmperf.engine_config.max_model_len
    concurrency = llm_engine.info["max_concurrency"]
    assert concurrency == pytest.approx(llm_engine.kv_cache_tokens / length, rel=0.10)
    fits = llmperf.run(batch=max(1, math.floor(0.9 * concurrency)))
    assert fits.preemptions == 0, f"{fits.preemptions} preemptions below the reported concurrency"
    overload = llmperf.run(batch=llmperf.engine_config.max_num_seqs)
    assert overload.preemptions > 0, f"{overload.workload.batch} full-length requests ran without preemption"
    llmperf.note(f"max concurrency {concurrency:.1f}x at {length} tokens: "
                 f"{fits.workload.batch} requests ran clean, {overload.workload.batch} preempted "
                 f"{overload.preemptions} times")
    llmperf.gate_on(fits)


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
