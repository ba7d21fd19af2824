"""The config table's tensor-parallel row (suites/test_throughput.py) beside its one-GPU twin (issue 16).

Llama-3.1-8B shape, max_model_len 1536, 192 new tokens, batch 4,
gpu_memory_utilization 0.88 (prompts of 1,024 tokens): once on one GPU, once split
over two (tp=2). GPU-only; the tp=2 test skips with a reason where fewer than two
GPUs are visible. Run by benchmarks/multi_gpu.sh; not part of `pytest suites/`.
"""

import pytest

from pytest_llmperf import perf

ROW = dict(model="llama-3.1-8b", max_model_len=1536, batch=4, max_num_seqs=4, input_len=1024,
           output_len=192, gpu_memory_utilization=0.88, trials=5, device="gpu")


@pytest.mark.parametrize("tp", [pytest.param(tp, marks=perf(**ROW, tp=tp), id=f"tp{tp}")
                                for tp in (1, 2)])
def test_tp_row(llmperf, tp):
    result = llmperf.run()
    assert result.engine.tp == tp
    assert result.output_tok_s > 0
