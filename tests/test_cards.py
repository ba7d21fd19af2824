"""KV bytes per token of a whole engine: a draft model's KV shares the target's blocks."""

import json

import pytest

from pytest_llmperf.budget import BudgetError, under_budget
from pytest_llmperf.cards import resolve_model
from pytest_llmperf.config import EngineConfig

TARGET = resolve_model("llama-3.1-8b")


def test_the_target_alone_costs_its_own_layers():
    # 32 layers x 8 KV heads x 128 dims x K and V x 2 bytes
    assert TARGET.engine_kv_bytes_per_token() == TARGET.kv_bytes_per_token() == 131_072


def test_a_draft_model_adds_its_layers():
    # what vLLM 0.25 reserved on the H100 (2026-12-06): 370,016 tokens where the target
    # alone would hold 462,520: 80% = 131,072 / (131,072 + 16 x 8 x 64 x 2 x 2)
    spec = {"method": "draft_model", "model": "llama-3.2-1b", "num_speculative_tokens": 4}
    assert TARGET.engine_kv_bytes_per_token(spec) == 131_072 + 32_768
    assert TARGET.engine_kv_bytes_per_token(spec, kv_cache_dtype="fp8") == (131_072 + 32_768) // 2


def test_ngram_lookup_keeps_no_kv_of_its_own():
    spec = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4}
    assert TARGET.engine_kv_bytes_per_token(spec) == 131_072


def test_a_draft_of_unknown_shape_predicts_nothing(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert TARGET.engine_kv_bytes_per_token({"method": "draft_model", "model": str(tmp_path)}) is None
    assert TARGET.engine_kv_bytes_per_token({"method": "draft_model", "model": "org/draft"}) is None
    assert TARGET.engine_kv_bytes_per_token({"method": "draft_model", "model": "no-such-card"}) is None


def test_the_memory_budget_counts_the_drafts_kv():
    gib = 2**30
    spec = {"method": "draft_model", "model": "llama-3.2-1b", "num_speculative_tokens": 4}
    plain = EngineConfig(model="llama-3.1-8b", max_model_len=131_072, gpu_memory_utilization=0.9)
    drafted = EngineConfig(model="llama-3.1-8b", max_model_len=131_072, gpu_memory_utilization=0.9,
                           speculative_config=spec)
    # weights 14.96 GiB + 16 GiB of KV fit 0.9 x 35 GiB = 31.5 GiB; with the draft's 4 GiB more they do not
    under_budget(plain, TARGET, 35 * gib, 80 * gib)
    with pytest.raises(BudgetError, match="20.00 GiB"):
        under_budget(drafted, TARGET, 35 * gib, 80 * gib)
