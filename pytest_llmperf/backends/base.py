"""The backend protocol: something that runs a workload for an engine config and measures it.

Two members, chosen by the marker's ``backend=`` key: ``offline`` (a ``vllm.LLM`` in a
child process, :mod:`.offline`) and ``server`` (vLLM's OpenAI server under a client
load, :mod:`.server`). A handle is shared by every test with the same engine config;
the pool (:mod:`.pool`) keeps at most one alive, since they compete for one device.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..config import EngineConfig, Workload
from ..results import PerfResult


class BackendHandle(Protocol):
    """A started backend for one engine config."""

    config: EngineConfig
    log_path: str

    def alive(self) -> bool: ...

    def run(self, workload: Workload, timeout_s: float | None = None) -> PerfResult:
        """Measure ``workload``; raises EngineError (with the log path) when it cannot."""
        ...

    def stop(self) -> None: ...


class Backend(Protocol):
    """Starts handles of one kind; ``name`` is the marker's ``backend=`` value."""

    name: str

    def start(self, config: EngineConfig, device: str, **options: Any) -> BackendHandle: ...
