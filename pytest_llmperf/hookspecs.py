"""Hooks users implement in a conftest.py to customise pytest-llmperf without forking it."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.hookspec(firstresult=True)
def pytest_llmperf_hardware_key(config: pytest.Config, fingerprint: Any) -> str | None:
    """Return the directory name under ``baselines/`` for this machine.

    Default: ``fingerprint.hardware_key`` (GPU model and count, or CPU model and
    cores). Return a coarser key to share baselines across identical runners.
    """


@pytest.hookspec(firstresult=True)
def pytest_llmperf_compare(
    config: pytest.Config,
    item: pytest.Item,
    current: dict[str, list[float]],
    baseline: dict[str, list[float]],
    tolerances: dict[str, float],
) -> Any:
    """Return a ``regression.Comparison`` to replace the built-in decision against a stored
    baseline (``current``: the trials of every engine start of this run, pooled). Paired
    A/B runs (``--llmperf-ab``) decide on start pairs and do not call it."""


def pytest_llmperf_result(config: pytest.Config, item: pytest.Item, result: Any, comparison: Any) -> None:
    """Called once per measured test with its ``PerfResult`` and ``Comparison`` (or None)."""
