"""On a 24 GB card, how many sequences can run at once before vLLM preempts, and what
does the prefill token budget trade?

The consumer-GPU tuning story: Llama-3.1-8B's 15 GiB of weights leave an RTX 4090 a few
GiB of KV cache. The KV cache is pinned to 2 GiB (16,384 tokens) so that any GPU
replays that scheduler. A 48-request load is run at several ``max_num_seqs`` with vLLM's
preemption counter read after each; the largest setting without preemption is reported
and must be the one the marker ships. Then ``max_num_batched_tokens`` (the per-step
token budget that chunks prefill) is swept: a larger budget prefills in fewer steps, so
TTFT p99 falls; the table and Pareto front show what it costs. Engines run in eager mode:
the question is admission and preemption, and each setting is its own engine start.
"""

from tiny import PREEMPTING_GATE

from pytest_llmperf import perf

KV_PIN = {"kv_cache_memory_bytes": 2 * 2**30}  # 16,384 tokens of Llama-3.1-8B
# vLLM admits a request when its prompt's blocks are free and preempts only when the
# admitted requests outgrow the cache as they generate, so the loads are sized for that.
# GPU: 48 x (256 + 128) tokens need 1,152 blocks of 16, 32 need 768, the cache holds 1,024.
# CPU (blocks of 128 tokens): 5 MiB = 40 blocks; 16 x (64 + 192) need 32, 24 need 48.
CPU = {**PREEMPTING_GATE, "model": "tiny-llama-2l", "max_model_len": 256, "batch": 24, "input_len": 64,
       "output_len": 192, "trials": 2, "warmup": 0, "extra": {"kv_cache_memory_bytes": 5 * 2**20}}
SEQS = {"gpu": [16, 32, 48], "cpu": [16, 24]}  # each value is an engine start
TOKENS = {"gpu": [None, 512, 2048], "cpu": [None, 64]}  # None: vLLM's default (8192 or more)
SLO = {"gpu": {"ttft_p99_ms": 500.0}, "cpu": {"ttft_p99_ms": 3000.0}}


# On CPU the gated setting (16 sequences for 24 requests) has a TTFT median of ~43 ms from a
# first wave whose prefill is one step; when the engine core starts that step before all 24
# requests arrived (the likely cause), the median request waits one more step: 77-196 ms. In 27 stored
# runs TTFT p50 moved +69%, +110% (a false alarm, s39 aa-1) and +271% (s35's planted run,
# whose planted loss touches throughput only) while TTFT p99 stayed within +34%. So this
# median gates only against a 5x change; the p99 and the throughput keep the CPU gate.
CPU_SEQS_GATE = {"tolerances": {**PREEMPTING_GATE["tolerances"], "ttft_p50_ms": 4.0}}


@perf(model="llama-3.1-8b", max_model_len=1024, max_num_seqs=32, batch=48, input_len=256,
      output_len=128, trials=2, enforce_eager=True, extra=KV_PIN,
      cpu={**CPU, **CPU_SEQS_GATE, "max_num_seqs": 16})
def test_largest_max_num_seqs_without_preemption(llmperf):
    sweep = llmperf.sweep(engine={"max_num_seqs": SEQS[llmperf.device]})
    for line in sweep.table():
        llmperf.note(line)
    best = sweep.largest_without_preemption("max_num_seqs")
    assert best is not None, "every max_num_seqs setting preempted"
    largest = max(sweep.points, key=lambda p: p.engine_params["max_num_seqs"])
    assert (largest.result.preemptions or 0) > 0, "the largest setting should overrun the KV cache"
    llmperf.note(f"largest max_num_seqs without preemption: {best.engine_params['max_num_seqs']}")
    assert best.engine_params["max_num_seqs"] == llmperf.engine_config.max_num_seqs
    llmperf.gate_on(best.result)


@perf(model="llama-3.1-8b", max_model_len=1024, max_num_seqs=32, batch=32, input_len=256,
      output_len=64, trials=2, enforce_eager=True, extra=KV_PIN,
      cpu={**CPU, "max_num_seqs": 16, "batch": 16, "output_len": 32, "warmup": 1})
def test_prefill_token_budget_trades_ttft(llmperf):
    sweep = llmperf.sweep(engine={"max_num_batched_tokens": TOKENS[llmperf.device]})
    for line in sweep.table():
        llmperf.note(line)
    front = sweep.pareto(latency="ttft_p99_ms")
    llmperf.note("Pareto front (tok/s vs TTFT p99): " + ", ".join(p.label() for p in front))
    slo = SLO[llmperf.device]
    best = sweep.best(slo)
    llmperf.note(f"best tok/s under {slo}: {best.label() if best else 'no setting meets it'}")
    default = next(p for p in sweep.points if p.engine_params["max_num_batched_tokens"] is None)
    smallest = min((p for p in sweep.points if p.engine_params["max_num_batched_tokens"]),
                   key=lambda p: p.engine_params["max_num_batched_tokens"])
    # The last prompt's first token waits for every prefill chunk before it: the tail
    # (p99), not the median, is what the budget moves (CPU runs: 451 vs 730 ms).
    assert default.value("ttft_p99_ms") < smallest.value("ttft_p99_ms"), (
        f"the default prefill budget does not cut TTFT p99 against {smallest.label()}")
    assert all((p.result.preemptions or 0) == 0 for p in sweep.points)
