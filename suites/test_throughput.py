"""What does each published single-GPU config of Llama-3.1-8B give in tok/s and mean latency?

The table people post for one card: tensor parallelism, max_model_len, max new tokens,
batch (= max_num_seqs, every request in flight at once) and gpu_memory_utilization.
Each row is its own engine and its own baseline. On the CPU build the rows run, shrunk,
on one tiny engine shared with the other suites: the path is checked end to end and
the CPU baselines gate it, but the numbers are not the GPU's.
"""

import pytest
from tiny import TINY_ENGINE

from pytest_llmperf import perf

# tp, max_model_len, max new tokens, batch, gpu_memory_utilization, prompt tokens,
# and for the CPU run (batch, prompt, new).
ROWS = [
    (1, 1024, 256, 24, 0.93, 256, (24, 64, 32)),
    (1, 1536, 256, 6, 0.95, 1024, (6, 256, 32)),
    (1, 768, 192, 12, 0.88, 512, (12, 128, 24)),
    (1, 2048, 1024, 4, 0.95, 1024, (4, 256, 64)),
    (2, 1536, 192, 4, 0.88, 1024, (4, 256, 24)),
]


def row(tp, length, new, batch, util, prompt, cpu):
    cpu_batch, cpu_prompt, cpu_new = cpu
    mark = perf(model="llama-3.1-8b", tp=tp, max_model_len=length, batch=batch,
                gpu_memory_utilization=util, input_len=prompt, output_len=new, trials=3,
                cpu={**TINY_ENGINE, "batch": cpu_batch, "input_len": cpu_prompt, "output_len": cpu_new})
    label = f"tp{tp}-len{length}-new{new}-batch{batch}-util{util}"
    return pytest.param(label, marks=mark, id=label)


@pytest.mark.parametrize("config", [row(*r) for r in ROWS])
def test_config_table(llmperf, config):
    result = llmperf.run()
    batch = result.workload.batch
    # Every request ran at once, not in waves: by Little's law, completions per second
    # times mean latency (the requests in flight on average) equals the batch.
    # (A planted --llmperf-slowdown idles between requests and breaks the law: skip it.)
    in_flight = result.requests_s * result.e2e.mean / 1e3
    if not result.workload.slowdown:
        assert in_flight == pytest.approx(batch, rel=0.2), (
            f"{in_flight:.1f} requests in flight on average for a batch of {batch}: the engine ran waves"
        )
    assert result.preemptions == 0, f"{result.preemptions} preemptions: the KV cache is too small"
    llmperf.note(f"{result.output_tok_s:,.1f} tok/s, mean latency {result.e2e.mean:,.0f} ms")
