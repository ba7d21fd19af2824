"""benchmarks/live_reports.py: what a device run cut off mid-way still brings back."""

from __future__ import annotations

import importlib

import fake_engine
import pytest
from factories import TINY, write_suite

live_reports = importlib.import_module("benchmarks.live_reports")


def test_each_test_leaves_its_figures_and_outcome_as_it_ends(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_engine.install(monkeypatch)
    live = pytester.path / "live.txt"
    monkeypatch.setenv("LLMPERF_LIVE", str(live))
    write_suite(pytester, f"""@perf({TINY}, batch=2)
def test_fast(llmperf):
    llmperf.run()

@perf({TINY}, batch=4)
def test_broken(llmperf):
    llmperf.run()
    assert False, "the planted failure"

def test_plain():
    pass
""")
    result = pytester.runpytest("-p", "no:randomly", plugins=[live_reports])
    result.assert_outcomes(passed=2, failed=1)
    lines = live.read_text().splitlines()
    figures = [line for line in lines if " figures: " in line]
    # the gated test's; a test whose own body failed is not gated, the plain one not measured
    assert len(figures) == 1 and "test_fast figures" in figures[0]
    fast = figures[0]
    values = dict(part.split("=") for part in fast.split(" figures: ")[1].split())
    assert float(values["output_tok_s"]) > 0 and float(values["ttft_p50_ms"]) > 0
    assert any("test_fast call passed" in line for line in lines)
    assert any("test_broken call failed" in line for line in lines)
    assert "the planted failure" in live.read_text()  # a failure's report in full


def test_nothing_is_written_without_the_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_engine.install(monkeypatch)
    monkeypatch.delenv("LLMPERF_LIVE", raising=False)
    write_suite(pytester, f"""@perf({TINY}, batch=2)
def test_fast(llmperf):
    llmperf.run()
""")
    pytester.runpytest("-p", "no:randomly", plugins=[live_reports]).assert_outcomes(passed=1)
    assert list(pytester.path.glob("*.txt")) == []
