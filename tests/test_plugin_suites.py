"""Plugin features the suites use, through pytester and the fake engine: sweeps, notes,
gate_on, the memory budget, cost per token. (Real engines run them in suites/.)"""

from __future__ import annotations

import fake_engine
import pytest
from factories import TINY
from factories import write_suite as _suite


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> fake_engine.FakeEngines:
    return fake_engine.install(monkeypatch)


def test_sweep_starts_each_engine_once_and_notes_reach_the_summary(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, f"""
@perf({TINY}, batch=4)
def test_a(llmperf):
    sweep = llmperf.sweep(engine={{"max_num_seqs": [4, 8]}}, loads=[{{"batch": 1}}, {{"batch": 4}}])
    assert len(sweep.points) == 4
    # The marker's own config last: the next test with this marker reuses its engine.
    assert [p.result.engine.max_num_seqs for p in sweep.points] == [8, 8, 4, 4]
    llmperf.note("the knee is here")
    llmperf.gate_on(sweep.points[2].result)  # seqs4, batch 1
""")
    result = pytester.runpytest("--llmperf-update-baselines")
    result.assert_outcomes(passed=1)
    assert fake.started == ["tiny-llama-2l", "tiny-llama-2l"]
    result.stdout.fnmatch_lines(["*test_a*seqs4*b1 128/128*", "*test_a: the knee is here*"])


def test_sweep_misuse_is_a_clear_error(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.sweep(engine={{'batch': [1, 2]}})\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*llmperf.sweep(): 'batch' is not an engine parameter*"])


def test_cost_per_million_tokens_is_reported(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest("--llmperf-gpu-cost-per-hour=3.6")
    result.assert_outcomes(passed=1)
    # The fake engine runs at 1,000 tok/s: $0.001 per second = $1 per million tokens.
    result.stdout.fnmatch_lines(["*test_a: $1.000 per M output tokens; $0.* per request*"])


@pytest.mark.parametrize("value", ["0", "-2"])
def test_bad_cost_is_a_usage_error(pytester: pytest.Pytester, value: str) -> None:
    result = pytester.runpytest(f"--llmperf-gpu-cost-per-hour={value}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmperf-gpu-cost-per-hour=*must be a positive price*"])


def test_bad_budget_is_a_usage_error(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--llmperf-memory-budget=lots")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmperf-memory-budget: 'lots' is not a memory size*"])


def test_config_that_cannot_fit_the_budget_fails_before_any_engine(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, """
@perf(model="llama-3.1-8b", max_model_len=65536, batch=1)
def test_too_big(llmperf):
    llmperf.run()

@perf(model="llama-3.1-8b", max_model_len=1024, batch=1)
def test_fits(llmperf):
    llmperf.run()
""")
    result = pytester.runpytest("--llmperf-memory-budget=24GiB")
    result.assert_outcomes(errors=1, passed=1)  # fails at setup, before any engine
    result.stdout.fnmatch_lines([
        "*test_too_big: --llmperf-memory-budget 24GiB: llama-3.1-8b tp1 seqs1 len65536 does not fit "
        "the memory budget: weights 14.96 GiB + one 65536-token request's KV cache 8.00 GiB*",
    ])
    assert fake.started == ["tiny-llama-2l"]  # only the config that fits ran (its CPU stand-in)


def test_preemption_under_a_budget_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_engine.install(monkeypatch)
    original = fake_engine.FakeHandle.run

    def preempting(self, workload, timeout_s=None):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(original(self, workload, timeout_s), counters={"vllm:num_preemptions": 5.0})

    monkeypatch.setattr(fake_engine.FakeHandle, "run", preempting)
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n")
    assert pytester.runpytest().ret == 0  # without a budget, preemption is only reported
    result = pytester.runpytest("--llmperf-memory-budget=24GiB")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*5 request(s) preempted under --llmperf-memory-budget 24GiB*"])
    assert fake.started


def test_cpu_tolerances_replace_the_markers_on_the_cpu_build(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, f"""
@perf({TINY}, trials=5)
def test_default(llmperf):
    llmperf.run()

@perf({TINY}, trials=5, tolerance=0.01, cpu={{"tolerance": 0.10}})
def test_cpu_tolerant(llmperf):
    llmperf.run()
""")
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=2)
    result = pytester.runpytest("--llmperf-slowdown=0.05")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*FAILED test_suite.py::test_default*"])


@pytest.mark.parametrize(("tolerances", "message"), [
    ("{'output_tok_s': 1.5}", "*'output_tok_s'?=1.5: must be a fraction in (0, 1)*"),
    ("{'ttft_p50_ms': 12}", "*'ttft_p50_ms'?=12: must be a fraction in (0, 10)*3 allows 4x*"),
])
def test_tolerance_beyond_its_metric_limit_is_a_collection_error(
    pytester: pytest.Pytester, tolerances: str, message: str
) -> None:
    _suite(pytester, f"@perf({TINY}, cpu={{'tolerances': {tolerances}}})\ndef test_a(llmperf):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([message])


def test_a_latency_tolerance_past_one_lets_a_doubled_median_pass(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, f"""
@perf({TINY}, trials=5, cpu={{"tolerances": {{"ttft_p50_ms": 4.0, "ttft_p99_ms": 4.0}}}})
def test_loose(llmperf):
    llmperf.run()

@perf({TINY}, trials=5, batch=4)
def test_strict(llmperf):
    llmperf.run()
""")
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=2)
    fake.ttft_scale = 3.0  # every TTFT 3x (+200%): beyond the default, within 400%
    result = pytester.runpytest()
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["ttft_p50_ms *+200.0%*REGRESSION", "*FAILED test_suite.py::test_strict*"])


def test_bad_cpu_tolerance_is_a_collection_error(pytester: pytest.Pytester) -> None:
    _suite(pytester, f"@perf({TINY}, cpu={{'tolerances': {{'tok_s': 0.1}}}})\ndef test_a(llmperf):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*cpu: tolerances: unknown metric 'tok_s'*"])
