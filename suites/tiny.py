"""What every suite's CPU variant shares: the tiny engine and the CPU gate's tolerances.

On vLLM's CPU build a GPU-sized model would take minutes per token, so each suite runs
shrunk on the 2-layer tiny card. Markers that pass ``cpu={**TINY_ENGINE, ...}`` with
the same engine keys share one engine start. The KV cache is pinned (256 MiB) so its
capacity does not follow the machine's free RAM, and vLLM then skips its warm-up.
"""

TINY_ENGINE = {
    "model": "tiny-llama-2l", "tp": 1, "max_model_len": 512, "max_num_seqs": 32,
    "gpu_memory_utilization": 0.25, "extra": {"kv_cache_memory_bytes": 256 * 2**20},
}
