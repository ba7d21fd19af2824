"""pytest-llmperf: LLM-serving performance as pytest tests on real vLLM engines.

The package root stays light: core modules (``pytest_llmperf.engine``,
``.baselines``, ``.regression`` ...) import without pytest, vLLM or torch. The
pytest hooks and fixtures live in :mod:`pytest_llmperf.plugin`; they are exposed
here lazily so ``pytest -p pytest_llmperf`` works from a checkout that is not
installed, without making ``import pytest_llmperf.stats`` import pytest.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# What pytest looks up on this module when it is loaded with ``-p pytest_llmperf``.
_PLUGIN_ATTRS = (
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_configure",
    "pytest_unconfigure",
    "pytest_keyboard_interrupt",
    "pytest_pycollect_makeitem",
    "pytest_collection_modifyitems",
    "pytest_collection_finish",
    "pytest_runtest_setup",
    "pytest_runtest_call",
    "pytest_runtest_makereport",
    "pytest_runtest_teardown",
    "pytest_runtestloop",
    "pytest_terminal_summary",
    "pytest_xdist_auto_num_workers",
    "llmperf",
    "llm_engine",
    "gpu_info",
)
_LAZY = {
    "perf": "pytest_llmperf.plugin",
    "EngineConfig": "pytest_llmperf.config",
    "Workload": "pytest_llmperf.config",
    "PerfResult": "pytest_llmperf.results",
    "start_engine": "pytest_llmperf.engine",
    "compare_to_baseline": "pytest_llmperf.regression",
    "BaselineStore": "pytest_llmperf.baselines",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    import importlib

    if name in _PLUGIN_ATTRS:
        return getattr(importlib.import_module("pytest_llmperf.plugin"), name)
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pytest_llmperf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_PLUGIN_ATTRS, *_LAZY})
