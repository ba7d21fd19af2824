import os
import sys
from pathlib import Path

# Imported before pytester snapshots sys.modules, so inline runs reuse it
# instead of reloading NumPy (which warns).
import numpy  # noqa: F401
import pytest

sys.path.insert(0, str(Path(__file__).parent))

# CI has a 40-minute budget on a runner that starts engines 35-70% slower than a quiet
# 2-core machine. Real-engine tests whose path another real-engine test already takes
# in CI, and whose own logic the fake-engine tests cover, are marked ``full``: they run
# with LLMPERF_FULL_TESTS=1, which also turns on the slow lifecycle cases
# (LLMPERF_SLOW_LIFECYCLE, LLMPERF_ALL_SIGNALS, LLMPERF_TIMEOUT_METHODS; README, "The two
# commands").
FULL_TESTS = bool(os.environ.get("LLMPERF_FULL_TESTS"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full: a real-engine test CI skips for time; "
                                       "LLMPERF_FULL_TESTS=1 runs it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FULL_TESTS:
        return
    skip = pytest.mark.skip(reason="real-engine duplicate skipped for CI's time budget; "
                                   "run with LLMPERF_FULL_TESTS=1")
    for item in items:
        if item.get_closest_marker("full") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _inner_runs_are_not_xdist_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``-n``, pytester's inner runs would inherit PYTEST_XDIST_WORKER, and
    pytest-benchmark disables itself whenever that is set (no --benchmark-json, no
    autosave): tests/test_benchmark_interop.py failed only under xdist. An inner run that
    uses xdist itself sets its own."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
