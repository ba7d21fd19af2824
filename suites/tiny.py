"""What every suite's CPU variant shares: the tiny engine and the CPU gate's tolerances.

On vLLM's CPU build a GPU-sized model would take minutes per token, so each suite runs
shrunk on the 2-layer tiny card. Markers that pass ``cpu={**TINY_ENGINE, ...}`` with
the same engine keys share one engine start. The KV cache is pinned (256 MiB) so its
capacity does not follow the machine's free RAM, and vLLM then skips its warm-up.
"""

# The CPU gate. A shared 2-core runner drifts far more than a GPU between sessions. In
# five unchanged runs against baselines recorded (three engine starts each) 10-60 minutes
# earlier, the steady tests lost at most 5% throughput, while per-token latencies moved
# up to 47% (benchmarks/RESULTS.md, "The CPU gate"). So throughput-type figures gate at
# 15% (a planted 20% slowdown fails the job) and every latency figure at 75%, where it
# only catches gross breakage. Tests whose loads preempt get PREEMPTING_GATE.
CPU_TOLERANCES = {"output_tok_s": 0.15, "total_tok_s": 0.15, "requests_s": 0.15,
                  "goodput_req_s": 0.15}
CPU_GATE = {"tolerance": 0.75, "tolerances": CPU_TOLERANCES}
# Preempting loads: their throughput follows the timing of preemptions (up to 28% lower
# in unchanged runs than in the recorded starts), so it gates at 40%.
PREEMPTING_GATE = {**CPU_GATE, "tolerances": {k: 0.40 for k in CPU_TOLERANCES}}

TINY_ENGINE = {
    **CPU_GATE,
    "model": "tiny-llama-2l", "tp": 1, "max_model_len": 512, "max_num_seqs": 32,
    "gpu_memory_utilization": 0.25, "extra": {"kv_cache_memory_bytes": 256 * 2**20},
}
