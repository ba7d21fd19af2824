"""What does speculative decoding (n-gram lookup, a draft model) change against the same
target without it?

With the shipped cards the weights are random (``load_format="dummy"``): a draft model's
guesses are then almost never accepted and random prompts hold no n-grams to look up,
so acceptance is meaningless and these tests measure the **mechanism's cost** (the
proposer's work and the verification of rejected drafts per token), which is what a
workload that speculates badly pays. Point ``LLMPERF_SPEC_TARGET`` and
``LLMPERF_SPEC_DRAFT`` at real model directories to measure the **gain** instead; the
acceptance rate is then asserted. Run the module whole: each method is compared with
the plain target measured first.
"""

import os

import pytest
from tiny import TINY_ENGINE

from pytest_llmperf import perf
from pytest_llmperf.cards import resolve_model

TARGET = os.environ.get("LLMPERF_SPEC_TARGET", "llama-3.1-8b")
DRAFT = os.environ.get("LLMPERF_SPEC_DRAFT", "llama-3.2-1b")
REAL = resolve_model(TARGET).load_format != "dummy"
METHODS = {
    "none": None,
    "ngram": {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4,
              "prompt_lookup_min": 2},
    "draft": {"method": "draft_model", "model": DRAFT, "num_speculative_tokens": 4},
}
CPU_DRAFT = {"method": "draft_model", "model": "tiny-llama-1l", "num_speculative_tokens": 4}
CPU = {**TINY_ENGINE,
       "batch": 4, "input_len": 64, "output_len": 64}
plain: dict[str, float] = {}  # tok/s of the target without speculation, by device


def method(name):
    spec = METHODS[name]
    cpu_spec = CPU_DRAFT if name == "draft" else spec
    # The plain target is the throughput table's tp1-len2048-new1024-batch4 engine.
    mark = perf(model=TARGET, max_model_len=2048, batch=4, gpu_memory_utilization=0.95,
                input_len=256, output_len=256, trials=3, speculative_config=spec,
                cpu={**CPU, "speculative_config": cpu_spec})
    return pytest.param(name, marks=mark, id=name)


@pytest.mark.parametrize("name", [method(n) for n in METHODS])
def test_speculative_decoding(llmperf, name):
    result = llmperf.run()
    if name == "none":
        assert result.spec_acceptance_rate is None, "speculation counted without a speculative_config"
        plain[llmperf.device] = result.output_tok_s
        return
    # The counter exists only while vLLM speculates; a draft model proposes every step.
    assert "vllm:spec_decode_num_drafts" in result.counters, "vLLM is not speculating"
    if name == "draft":
        assert result.counters["vllm:spec_decode_num_drafts"] > 0, "the draft model proposed nothing"
    rate = result.spec_acceptance_rate or 0.0
    base = plain.get(llmperf.device)
    speedup = f"{result.output_tok_s / base:.2f}x the plain target" if base else "plain target not run"
    kind = "gain" if REAL else "mechanism cost (random weights: acceptance is meaningless)"
    llmperf.note(f"{name}: {result.output_tok_s:,.1f} tok/s, {speedup}, acceptance {rate:.0%} - {kind}")
    if REAL and name == "draft":
        assert rate > 0.2, f"a real draft model had {rate:.0%} of its tokens accepted"
