"""A stand-in engine for fast tests of the plugin's wiring (never of the numbers).

Patches ``pytest_llmperf.engine.start_engine`` so the plugin's EngineManager gets
handles that answer instantly with synthetic results from ``factories.make_result``.
Real engines are exercised in test_engine_cpu.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from factories import make_result

from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.engine import EngineError
from pytest_llmperf.progress import ProgressEvent
from pytest_llmperf.results import PerfResult


@dataclass
class FakeEngines:
    """Records starts and serves results; ``fail_models`` never start."""

    tok_s: float = 1000.0
    fail_models: set[str] = field(default_factory=set)
    # Optional speed of a config relative to tok_s (e.g. slower with more layers).
    speed: Callable[[EngineConfig], float] | None = None
    ttft_scale: float = 1.0  # every TTFT times this (a latency-only change)
    started: list[str] = field(default_factory=list)
    gpus: list[list[str]] = field(default_factory=list)  # UUIDs each engine was given
    stopped: int = 0

    def start(self, config: EngineConfig, device: str, progress: Any = None, **kwargs: Any) -> FakeHandle:
        if progress is not None:
            progress(ProgressEvent("starting", f"starting engine {config.label()} [{device}]"))
        if config.model in self.fail_models:
            raise EngineError("start", f"ValueError: fake refusal of {config.model}")
        self.started.append(config.model)
        self.gpus.append([g.uuid for g in kwargs.get("gpus") or []])
        return FakeHandle(self, config, device)


@dataclass
class FakeHandle:
    owner: FakeEngines
    config: EngineConfig
    device: str
    start_time_s: float = 1.0
    # No GPUs to watch: the release check has nothing to wait for.
    gpus: tuple[Any, ...] = ()
    gpu_pids_before: frozenset[int] = frozenset()

    def alive(self) -> bool:
        return True

    def run(self, workload: Workload, timeout_s: float | None = None) -> PerfResult:
        speed = self.owner.speed(self.config) if self.owner.speed else 1.0
        return make_result(
            output_tok_s=self.owner.tok_s * speed * (1.0 - workload.slowdown),
            tpot_ms=7.0 / speed,
            trials=workload.trials,
            engine=self.config,
            workload=workload,
            device=self.device,
            ttft_scale=self.owner.ttft_scale,
        )

    def stop(self) -> None:
        self.owner.stopped += 1

    def kill(self) -> None:
        self.owner.stopped += 1


def install(monkeypatch: Any, **kwargs: Any) -> FakeEngines:
    import pytest_llmperf.engine as engine
    import pytest_llmperf.hostspeed as hostspeed
    import pytest_llmperf.plugin as plugin

    fake = FakeEngines(**kwargs)
    monkeypatch.setattr(engine, "start_engine", fake.start)
    monkeypatch.setattr(plugin, "_cpu_build_reason", lambda: None)
    # A fake engine's speed does not follow the machine's, so neither may its baselines:
    # the real probe here flips between two speeds 2x apart from one second to the next.
    monkeypatch.setattr(hostspeed, "measure_host_speed",
                        lambda: hostspeed.HostSpeed(score=100.0, spread=0.0, parts={"python": 100.0}))
    return fake
