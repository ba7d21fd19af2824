"""Parent side of an engine process: start, run workloads, stop, and clean up.

One engine lives at a time (they compete for the same GPU). A failure to start,
a crash or a hang becomes an :class:`EngineError` carrying vLLM's own reason,
taken from the exception the child reported or from the tail of its log.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .cards import ModelSource, resolve_model
from .config import EngineConfig, Workload
from .hw.leases import GpuLeases
from .hw.nvml import VisibleGpu
from .progress import Progress, ProgressEvent, watcher
from .results import MemoryResult, PerfResult, TrialResult

DEFAULT_START_TIMEOUT_S = 900.0
DEFAULT_RUN_TIMEOUT_S = 900.0
_REASON_LINE = re.compile(r"(Error|error:|Exception|CUDA out of memory|OOM|Killed|ValueError|RuntimeError)")


class EngineError(RuntimeError):
    """The engine could not start, died, or hung. ``reason`` is vLLM's own account."""

    def __init__(self, phase: str, reason: str, log_path: str | None = None, detail: str = ""):
        self.phase = phase
        self.reason = reason
        self.log_path = log_path
        self.detail = detail
        where = f" (engine log: {log_path})" if log_path else ""
        super().__init__(f"engine {phase} failed: {reason}{where}")


def log_reason(log_text: str, max_lines: int = 6) -> str:
    """The lines of an engine log most likely to say why it failed."""
    lines = [ln.rstrip() for ln in log_text.splitlines() if ln.strip()]
    hits = [ln for ln in lines if _REASON_LINE.search(ln)]
    chosen = (hits or lines)[-max_lines:]
    return "\n".join(chosen) if chosen else "(the engine printed nothing)"


@dataclass
class EngineHandle:
    """A started engine, as the ``llm_engine`` fixture shows it to a test."""

    config: EngineConfig
    source: ModelSource
    device: str
    info: dict[str, Any]
    log_path: str
    _process: Any = field(repr=False, default=None)
    _conn: Any = field(repr=False, default=None)
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    dead: EngineError | None = None
    gpu_pids_before: frozenset[int] = frozenset()
    progress: Progress | None = field(repr=False, default=None)
    gpus: tuple[VisibleGpu, ...] = ()  # exactly the GPUs this engine uses

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    @property
    def start_time_s(self) -> float:
        return float(self.info["start_time_s"])

    @property
    def vllm_version(self) -> str:
        return str(self.info.get("vllm_version", ""))

    @property
    def kv_cache_tokens(self) -> int | None:
        return self.info.get("kv_cache_tokens")

    def alive(self) -> bool:
        return self.dead is None and self._process is not None and self._process.is_alive()

    def run(self, workload: Workload, timeout_s: float | None = None) -> PerfResult:
        """Run one workload in the engine process and return its measured result."""
        if self.dead is not None:
            raise self.dead
        limit = timeout_s or self.run_timeout_s
        tick = watcher(self.log_path, self.progress, from_end=True)
        try:
            self._conn.send({"kind": "run", "workload": workload.to_json()})
        except (BrokenPipeError, OSError) as exc:
            raise self._died("run", f"the engine process is gone ({exc})") from None
        reply = _receive(self._conn, self._process, limit, tick)
        if reply is None:
            if self._process.is_alive():
                _kill_tree(self._process)
                self.dead = EngineError(
                    "run", f"no result after {limit:.0f} s; the engine was killed as hung "
                    f"(raise --llmperf-run-timeout or timeout_s= if the workload is that long)",
                    self.log_path,
                )
                raise self.dead
            raise self._died("run", "the engine process died")
        if reply["kind"] == "error":
            raise EngineError("run", f"{reply['type']}: {reply['message']}", self.log_path,
                              reply.get("traceback", ""))
        return self._result(workload, reply)

    def _died(self, phase: str, what: str) -> EngineError:
        code = self._process.exitcode if self._process is not None else None
        tail = log_reason(_read(self.log_path))
        self.dead = EngineError(phase, f"{what} (exit code {code}); vLLM said:\n{tail}", self.log_path)
        return self.dead

    def _result(self, workload: Workload, reply: dict[str, Any]) -> PerfResult:
        trials = tuple(TrialResult.from_json(t) for t in reply["trials"])
        memory = MemoryResult(
            kind=self.device,
            peak_device_gib=reply.get("peak_device_gib"),
            peak_process_gib=reply.get("peak_process_gib"),
            weights_gib=self.info.get("weights_gib"),
            kv_cache_tokens=self.info.get("kv_cache_tokens"),
            max_concurrency=self.info.get("max_concurrency"),
            kv_cache_gib=self.info.get("kv_cache_gib"),
            predicted_kv_bytes_per_token=self.source.kv_bytes_per_token(
                self.config.kv_cache_dtype, self.info.get("dtype", self.config.dtype)
            ),
        )
        notes = []
        remeasured = sum(t.remeasured for t in trials)
        if remeasured:
            notes.append(f"{remeasured} trial(s) disturbed and re-measured")
        cond = reply.get("conditions") or {}
        facts = []
        if cond.get("max_temp_c") is not None:
            facts.append(f"max GPU temperature {cond['max_temp_c']:.0f} C")
        if cond.get("mean_power_w") is not None:
            facts.append(f"mean power {cond['mean_power_w']:.0f} W")
        if facts:
            notes.append(", ".join(facts))
        return PerfResult(
            engine=self.config,
            workload=workload,
            trials=trials,
            memory=memory,
            start_time_s=self.start_time_s,
            device=self.device,
            vllm_version=self.vllm_version,
            notes=tuple(notes),
            counters={k: float(v) for k, v in (reply.get("counters") or {}).items()},
        )

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ask the engine to exit; kill its whole process group if it does not."""
        if self._process is None:
            return
        with contextlib.suppress(Exception):
            self._conn.send({"kind": "stop"})
        self._process.join(timeout_s)
        _kill_tree(self._process)
        with contextlib.suppress(Exception):
            self._conn.close()
        self._process = None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _receive(conn: Any, process: Any, timeout_s: float,
             tick: Callable[[], None] | None = None) -> dict[str, Any] | None:
    """Wait for one message; None on timeout or when the child died without one.

    ``tick`` runs about once a second while waiting (progress from the engine's log).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        if tick is not None:
            tick()
        if conn.poll(min(left, 1.0)):
            try:
                msg: dict[str, Any] = conn.recv()
            except (EOFError, OSError):
                return None
            if tick is not None:
                tick()
            return msg
        if not process.is_alive() and not conn.poll(0):
            return None


def _kill_tree(process: Any) -> None:
    """End the engine process and every process vLLM started under it."""
    pid = process.pid
    if pid is None:
        return
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        kids = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    for p in kids:
        with contextlib.suppress(psutil.Error):
            p.kill()
    process.join(10)
    psutil.wait_procs(kids, timeout=10)


def start_engine(
    config: EngineConfig,
    device: str,
    *,
    log_dir: str | None = None,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S,
    python: str | None = None,
    progress: Progress | None = None,
    gpus: list[VisibleGpu] | None = None,
) -> EngineHandle:
    """Start a vLLM engine for ``config`` in a child process and wait until it is ready.

    ``python``: another interpreter (e.g. a virtualenv with another vLLM) to run the
    engine process with; it imports this package from here and everything else from
    its own ``sys.path``. ``progress`` hears which engine starts, its start-up phases
    and, later, its trials. ``gpus``: the GPUs it runs on (pinned with
    CUDA_VISIBLE_DEVICES) and that are watched; on a GPU the first ``config.tp``
    visible ones when not given.
    """
    source = resolve_model(config.model)
    log_dir = log_dir or tempfile.mkdtemp(prefix="llmperf-")
    os.makedirs(log_dir, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", config.model)[-60:]
    log_path = os.path.join(log_dir, f"engine-{safe}-{int(time.time() * 1000)}.log")
    before: frozenset[int] = frozenset()
    if device == "gpu":
        from .hw import nvml

        if gpus is None:
            gpus = nvml.visible_gpus()[: config.tp]
        before = frozenset(p for g in gpus for p in nvml.compute_pids(g))
    gpus = list(gpus or [])
    ctx = multiprocessing.get_context("spawn")
    parent_conn, child_conn = ctx.Pipe()
    from .engine_worker import worker_main

    request = {
        "engine": config.to_json(),
        "path": source.path,
        "load_format": source.load_format,
        "device": device,
        "log_path": log_path,
        "gpus": [g.to_json() for g in gpus],
    }
    if python is not None:
        request["sys_path"] = interpreter_sys_path(python)
    process = ctx.Process(target=worker_main, args=(child_conn, request), name="llmperf-engine",
                          daemon=False)
    with _spawn_executable(python):
        process.start()
    child_conn.close()
    handle = EngineHandle(config, source, device, {}, log_path, process, parent_conn,
                          run_timeout_s=run_timeout_s, gpu_pids_before=before, gpus=tuple(gpus),
                          progress=progress)
    if progress is not None:
        progress(ProgressEvent("starting", f"starting engine {config.label()} [{device}] "
                                           f"(log: {log_path})"))
    reply = _receive(parent_conn, process, start_timeout_s, watcher(log_path, progress))
    if reply is None:
        hung = process.is_alive()
        _kill_tree(process)
        if hung:
            raise EngineError("start", f"not ready after {start_timeout_s:.0f} s; killed as hung "
                              "(raise --llmperf-start-timeout if start-up is that slow)", log_path)
        raise handle._died("start", "the engine process died while starting")
    if reply["kind"] == "error":
        _kill_tree(process)
        tail = log_reason(_read(log_path))
        raise EngineError("start", f"{reply['type']}: {reply['message']}\nvLLM log:\n{tail}",
                          log_path, reply.get("traceback", ""))
    handle.info = reply
    if progress is not None:
        progress(ProgressEvent("ready", f"engine ready in {handle.start_time_s:.1f} s"))
    return handle


def interpreter_sys_path(python: str) -> list[str]:
    """``sys.path`` of another interpreter, plus the directory this package lives in.

    A spawned child starts with its parent's ``sys.path``; the engine worker replaces
    it with this one before importing vLLM, so the other environment's packages load.
    """
    import json
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "PYTHONHOME"}
    try:
        out = subprocess.run([python, "-c", "import sys, json; print(json.dumps(sys.path))"],
                             capture_output=True, text=True, timeout=60, env=env, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineError("start", f"cannot run the interpreter {python!r}: {exc}") from None
    paths: list[str] = json.loads(out.stdout)
    here = str(Path(__file__).resolve().parent.parent)
    return [*paths, here]


@contextlib.contextmanager
def _spawn_executable(python: str | None) -> Any:
    """Spawn children with ``python`` instead of this interpreter, for one start."""
    if python is None:
        yield
        return
    from multiprocessing import spawn

    before = spawn.get_executable()
    spawn.set_executable(python)
    try:
        yield
    finally:
        spawn.set_executable(before)


@dataclass
class EngineManager:
    """Keeps at most one engine alive and reuses it while tests ask for the same config.

    A config that failed to start is remembered, so the tests after the first one
    fail fast with the same reason instead of paying for another doomed start.
    """

    device: str
    log_dir: str | None = None
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    release_timeout_s: float = 60.0
    current: EngineHandle | None = None
    current_key: tuple[Any, ...] | None = None
    failed: dict[tuple[Any, ...], EngineError] = field(default_factory=dict)
    starts: int = 0
    progress: Progress | None = None
    leases: GpuLeases | None = None  # where engines may run; None: CPU, or the first tp GPUs

    def get(self, config: EngineConfig, python: str | None = None) -> EngineHandle:
        """The live engine of ``config`` (and interpreter ``python``), started if needed."""
        key = (*config.key(), python) if python else config.key()
        if key in self.failed:
            raise self.failed[key]
        if (self.current is not None and self.current.alive()
                and self.current_key == key):
            return self.current
        self.close()
        gpus = self.leases.acquire(config.tp) if self.leases is not None else None
        try:
            self.current = start_engine(config, self.device, log_dir=self.log_dir,
                                        start_timeout_s=self.start_timeout_s,
                                        run_timeout_s=self.run_timeout_s, python=python,
                                        progress=self.progress, gpus=gpus)
            self.current_key = key
            self.starts += 1
        except EngineError as exc:
            self.failed[key] = exc
            raise
        finally:
            if self.current is None and self.leases is not None:
                self.leases.release()
        return self.current

    def close(self) -> None:
        """Stop the current engine and make sure its GPU memory came back."""
        if self.current is None:
            return
        handle, self.current = self.current, None
        try:
            handle.stop()
            if self.device == "gpu":
                wait_for_gpu_release(handle, self.release_timeout_s)
        finally:
            if self.leases is not None:
                self.leases.release()


def wait_for_gpu_release(handle: EngineHandle, timeout_s: float) -> None:
    """Block until the engine's memory is back, or raise naming what still holds it."""
    from .hw import nvml

    deadline = time.monotonic() + timeout_s
    held: dict[int, float] = {}
    while time.monotonic() < deadline:
        leftover: dict[int, float] = {}
        for g in handle.gpus:
            procs = nvml.compute_pids(g)
            leftover.update({p: g for p, g in procs.items() if p not in handle.gpu_pids_before})
        if not leftover:
            return
        held = leftover
        time.sleep(0.5)
    raise EngineError(
        "stop",
        f"GPU memory not released {timeout_s:.0f} s after the engine stopped: "
        + ", ".join(f"pid {p} holds {g:.1f} GiB" for p, g in held.items()),
        handle.log_path,
    )
