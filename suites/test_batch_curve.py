"""How do throughput and latency grow with the batch, and where does batching stop paying?

One engine (max_num_seqs 256) serves batches of 1 to 256 requests and then a fixed batch
at growing context lengths. The tests assert the curves' shape, not one number:
throughput rises to a knee (the batch after which doubling buys under 15% more tok/s,
reported in the summary), per-token latency grows with the batch, and prefill time
(TTFT) grows with the context. The gate watches the largest point of each curve.
"""

import itertools

from tiny import TINY_ENGINE

from pytest_llmperf import perf
from pytest_llmperf.sweep import knee

BASE = dict(model="llama-3.1-8b", max_model_len=4352, max_num_seqs=256, trials=2)

BATCHES = {"gpu": [1, 2, 4, 8, 16, 32, 64, 128, 256], "cpu": [1, 2, 4, 8, 16, 32]}
CONTEXTS = {"gpu": [128, 512, 1024, 2048, 4096], "cpu": [32, 64, 128, 256, 448]}


@perf(**BASE, batch=1, input_len=128, output_len=128,
      cpu={**TINY_ENGINE, "input_len": 32, "output_len": 32})
def test_throughput_rises_to_a_knee(llmperf):
    sweep = llmperf.sweep(loads=[{"batch": b} for b in BATCHES[llmperf.device]])
    curve = sweep.curve("batch")
    at = knee(curve)
    peak = dict(curve)[at]
    llmperf.note(f"knee at batch {at:g}: {peak:,.0f} tok/s, {peak / curve[0][1]:.1f}x batch 1")
    for line in sweep.table():
        llmperf.note(line)
    assert peak >= 2 * curve[0][1], "batching does not pay: the knee is not above batch 1"
    rising = [y for x, y in curve if x <= at]
    assert all(b >= 0.9 * a for a, b in itertools.pairwise(rising)), f"throughput dips before the knee: {curve}"
    tpot = sweep.curve("batch", "tpot_p50_ms")
    assert tpot[-1][1] >= tpot[0][1], f"per-token latency falls as the batch grows: {tpot}"


@perf(**BASE, batch=8, input_len=128, output_len=128,
      cpu={**TINY_ENGINE, "batch": 4, "input_len": 32, "output_len": 32})
def test_context_length_costs_prefill(llmperf):
    sweep = llmperf.sweep(loads=[{"input_len": n} for n in CONTEXTS[llmperf.device]])
    for line in sweep.table():
        llmperf.note(line)
    ttft = sweep.curve("input_len", "ttft_p50_ms")
    tok_s = sweep.curve("input_len")
    assert ttft[-1][1] > ttft[0][1], f"TTFT does not grow with the context: {ttft}"
    assert tok_s[-1][1] < tok_s[0][1], f"longer contexts are not slower: {tok_s}"
