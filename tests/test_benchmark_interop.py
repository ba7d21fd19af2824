"""pytest-benchmark sees every perf test's trials (fake engine; real one in test_reports_cpu)."""

from __future__ import annotations

import json

import fake_engine
import pytest
from factories import TINY

SUITE = f"""
from pytest_llmperf import perf

@perf({TINY}, batch=2, trials=4)
def test_a(llmperf):
    llmperf.run()

@perf({TINY}, batch=4)
def test_b(llmperf, benchmark):
    llmperf.run()
    benchmark(lambda: None)  # the test's own use of the fixture wins
"""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> fake_engine.FakeEngines:
    return fake_engine.install(monkeypatch)


def test_benchmark_json_holds_one_round_per_trial_and_the_llm_metrics(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--benchmark-json=bench.json")
    result.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "bench.json").read_text())
    by_name = {b["name"]: b for b in data["benchmarks"]}
    a = by_name["test_a"]
    assert a["stats"]["rounds"] == 4
    assert a["stats"]["iterations"] == 1
    info = a["extra_info"]
    assert info["output_tok_s"] == pytest.approx(1000.0)
    assert info["ttft_p50_ms"] > 0 and info["tpot_p50_ms"] > 0
    assert len(info["llmperf"]["trials"]["output_tok_s"]) == 4
    assert info["llmperf"]["workload"]["batch"] == 2
    assert info["llmperf"]["outcome"] == "missing"
    # Trial wall time = tokens / speed: 2 prompts x 128 tokens at 1000 tok/s.
    assert a["stats"]["median"] == pytest.approx(2 * 128 / 1000.0)
    assert "output_tok_s" not in by_name["test_b"]["extra_info"]


def test_autosave_and_compare_work_on_perf_tests(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.runpytest("--benchmark-autosave").assert_outcomes(passed=2)
    saved = list((pytester.path / ".benchmarks").rglob("0001_*.json"))
    assert len(saved) == 1
    # No --benchmark-compare-fail: the rounds here are a fake engine's wall-clock times,
    # and a timing threshold on them failed intermittently on a loaded machine.
    result = pytester.runpytest("--benchmark-compare=0001")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_a*(0001*"])


def test_benchmark_disable_leaves_perf_tests_alone(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest("--benchmark-disable", "--benchmark-json=bench.json")
    result.assert_outcomes(passed=2)
