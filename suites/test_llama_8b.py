"""Llama-3.1-8B serving on one GPU: the shapes most users tune first.

With ``--gpu`` these run the real 8B shape (dummy weights) and the floors apply;
without it they run on vLLM's CPU build with the tiny stand-in card, which checks
the whole path end to end but gates nothing absolute.
"""

from pytest_llmperf import perf

LLAMA = dict(model="llama-3.1-8b", tp=1, max_model_len=1024)


@perf(**LLAMA, batch=24, input_len=256, output_len=256, trials=5, min_tok_s=2500,
      max_tpot_p50_ms=9.0, cpu={"batch": 12, "output_len": 128})
def test_decode_heavy(llmperf):
    result = llmperf.run()
    assert result.output_tok_s > 0
    assert result.ttft.p99_ms < result.e2e.p50_ms


@perf(**LLAMA, batch=1, max_num_seqs=24, input_len=128, output_len=128, trials=5,
      max_tpot_p50_ms=8.0, max_ttft_p99_ms=100, cpu={"output_len": 64})
def test_single_stream_latency(llmperf):
    result = llmperf.run()
    # One request alone: every token is the decode speed of the whole model.
    assert result.tpot.p50_ms <= result.itl.p99_ms


@perf(model="llama-3.1-8b", tp=1, max_model_len=2048, batch=4, input_len=1024,
      output_len=512, trials=3, min_tok_s=400, cpu={"output_len": 64})
def test_long_prompt(llmperf):
    result = llmperf.run()
    assert result.memory.kv_cache_tokens is None or result.memory.kv_cache_tokens >= 4 * 1536
