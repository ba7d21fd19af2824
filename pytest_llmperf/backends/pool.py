"""One live backend at a time, shared by tests with the same backend and engine config.

The offline engine and the OpenAI server compete for the same device, so asking for
one stops the other. Each kind keeps its own manager (reuse, remembered start
failures); this only routes ``get(config, backend)`` and closes what is not asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import EngineConfig
from ..engine import DEFAULT_RUN_TIMEOUT_S, DEFAULT_START_TIMEOUT_S, EngineManager
from .server import ServerManager


@dataclass
class BackendPool:
    device: str
    log_dir: str | None = None
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    endpoint: str | None = None
    progress: Any = None  # start-up progress lines (offline engines)
    leases: Any = None  # the GPUs engines and servers may use (hw/leases.py)
    offline: EngineManager = field(init=False)
    server: ServerManager = field(init=False)

    def __post_init__(self) -> None:
        self.offline = EngineManager(device=self.device, log_dir=self.log_dir,
                                     start_timeout_s=self.start_timeout_s,
                                     run_timeout_s=self.run_timeout_s,
                                     progress=self.progress, leases=self.leases)
        self.server = ServerManager(device=self.device, log_dir=self.log_dir,
                                    start_timeout_s=self.start_timeout_s,
                                    run_timeout_s=self.run_timeout_s, endpoint=self.endpoint,
                                    leases=self.leases)

    @property
    def starts(self) -> int:
        return self.offline.starts + self.server.starts

    @property
    def current(self) -> Any:
        return self.server.current or self.offline.current

    def get(self, config: EngineConfig, backend: str = "offline", python: str | None = None) -> Any:
        """The live handle for ``config`` on ``backend``; ``python`` picks another
        interpreter (the base commit's environment of a paired A/B run)."""
        if backend == "server":
            self.offline.close()
            return self.server.get(config, python=python)
        self.server.close()
        return self.offline.get(config, python=python)

    def close(self, *, kill: bool = False) -> None:
        """Stop whichever backend is live (``kill``: at once, the run was interrupted)."""
        try:
            self.offline.close(kill=kill)
        finally:
            self.server.close(kill=kill)
