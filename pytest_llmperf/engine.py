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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .cards import ModelSource, resolve_model
from .config import EngineConfig, Workload
from .hw.leases import GpuLeases, start_leased
from .hw.nvml import VisibleGpu
from .procs import GuardedProcess, leftovers_holding, start_process
from .progress import Progress, ProgressEvent, watcher
from .results import MemoryResult, PerfResult, TrialResult

DEFAULT_START_TIMEOUT_S = 900.0
DEFAULT_RUN_TIMEOUT_S = 900.0
DEFAULT_START_RETRIES = 1
POLL_S = 0.5  # how often a waiting parent checks that every engine process still lives
STOP_TIMEOUT_S = 30.0  # a clean stop; then the group is killed

# What a vLLM log line looks like: "(EngineCore_DP0 pid=12) ERROR 11-25 01:02:03 [core.py:9] msg"
_PREFIX = re.compile(r"^\((?:[\w.-]+ )?pid=\d+\)\s+")
_LEVEL = re.compile(r"^(DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)\s+[\d-]+ [\d:.]+(?:\s+\[[^\]]*\])?\s?(.*)$")
_EXCEPTION = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b(?::.*)?$"
)
_FATAL = re.compile(r"CUDA out of memory|out of memory|Segmentation fault|core dumped|^Killed$|"
                    r"Fatal Python error|died unexpectedly|terminated unexpectedly")
_WARNING = re.compile(r"\b\w*Warning\b|warnings\.warn\(")
NO_ERROR_LOGGED = "(vLLM logged no error)"
# What a silent log means depends on how the process ended: a signal leaves no error...
_SILENT_KILL = ("(vLLM logged no error: a process killed by a signal, e.g. SIGKILL or the "
                "kernel's out-of-memory killer, leaves none)")
# ... and a worker that exits before its log is open has written its error to stderr.
_SILENT_EXIT = ("(the engine log holds no error: the worker ended before writing one; its "
                "interpreter's own error, if any, went to pytest's stderr)")
# Lines vLLM adds around the real cause; kept only when nothing better was logged.
_WRAPPER = re.compile(r"See (?:the )?(?:root cause|stack trace)|Engine core initialization failed|"
                      r"EngineCore encountered an issue|^Traceback \(most recent|"
                      r"^The above exception|^During handling of the above")


class EngineError(RuntimeError):
    """The engine could not start, died, or hung. ``reason`` is vLLM's own account.

    ``retryable`` is true when a process of the engine was lost rather than vLLM
    refusing the config: such a start is worth one more try.
    """

    def __init__(self, phase: str, reason: str, log_path: str | None = None, detail: str = "",
                 *, retryable: bool = False, interrupted: bool = False):
        self.phase = phase
        self.reason = reason
        self.log_path = log_path
        self.detail = detail
        self.retryable = retryable
        self.interrupted = interrupted  # ended by Ctrl-C, SIGTERM or a timeout plugin
        where = f" (engine log: {log_path})" if log_path else ""
        super().__init__(f"engine {phase} failed: {reason}{where}")


def _log_lines(log_text: str) -> list[tuple[str | None, str]]:
    """(level or None, message) for each non-empty line, vLLM's process prefix removed."""
    out: list[tuple[str | None, str]] = []
    for raw in log_text.splitlines():
        line = _PREFIX.sub("", raw.rstrip())
        if not line.strip():
            continue
        m = _LEVEL.match(line)
        out.append((m.group(1), m.group(2)) if m else (None, line))
    return out


def log_reason(log_text: str, max_lines: int = 4) -> str:
    """The lines of an engine log that say why it failed, in vLLM's words.

    Errors are ERROR/CRITICAL records and the last line of every traceback (the
    exception itself); warnings (a tokenizer's, a deprecation) and INFO lines never
    count. vLLM's wrappers ("Engine core initialization failed. See root cause
    above") are dropped when the root cause is also there.
    """
    errors: list[str] = []
    for level, msg in _log_lines(log_text):
        text = msg.strip()
        if level in ("DEBUG", "INFO", "WARNING", "WARN"):
            continue
        if level is None and _WARNING.search(text) and not _EXCEPTION.match(text):
            continue
        if level in ("ERROR", "CRITICAL"):
            if msg[:1].isspace() or text.startswith(("File ", "^", "~")):
                continue  # a traceback frame, source line or caret line
            if text:
                errors.append(text)
            continue
        if msg[:1].isspace():
            continue  # a traceback frame or source line
        if _EXCEPTION.match(text) or _FATAL.search(text):
            errors.append(text)
    useful = [e for e in errors if not _WRAPPER.search(e)]
    chosen = list(dict.fromkeys(useful or errors))[-max_lines:]
    if chosen:
        return "\n".join(chosen)
    return NO_ERROR_LOGGED


def _explain_silence(tail: str, *, exited: bool) -> str:
    """``log_reason``'s answer, or for a log with no error what that silence means:
    ``exited``, the worker ended with an exit code; otherwise a process was killed."""
    if tail != NO_ERROR_LOGGED:
        return tail
    return _SILENT_EXIT if exited else _SILENT_KILL


def _is_vllm_process(p: psutil.Process) -> bool:
    """vLLM's own processes (EngineCore, its workers): they title themselves ``VLLM::...``."""
    try:
        cmd = " ".join(p.cmdline())
    except psutil.Error:
        return False
    return cmd.startswith("VLLM::") or "EngineCore" in cmd


def _label(name: str) -> str:
    """'EngineCore' for a process titled 'VLLM::EngineCore'."""
    first = name.split()[0] if name.split() else "process"
    return first.removeprefix("VLLM::")


@dataclass
class EngineHandle:
    """A started engine, as the ``llm_engine`` fixture shows it to a test."""

    config: EngineConfig
    source: ModelSource
    device: str
    info: dict[str, Any]
    log_path: str
    _process: GuardedProcess | None = field(repr=False, default=None)
    _conn: Any = field(repr=False, default=None)
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    dead: EngineError | None = None
    gpu_pids_before: frozenset[int] = frozenset()
    progress: Progress | None = field(repr=False, default=None)
    gpus: tuple[VisibleGpu, ...] = ()  # exactly the GPUs this engine uses

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

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
        return (self.dead is None and self._process is not None and self._process.alive()
                and not self._process.lost())

    def run(self, workload: Workload, timeout_s: float | None = None) -> PerfResult:
        """Run one workload in the engine process and return its measured result."""
        if self.dead is not None:
            raise self.dead
        if self._process is None:
            raise EngineError("run", "the engine was stopped", self.log_path)
        limit = timeout_s or self.run_timeout_s
        tick = watcher(self.log_path, self.progress, from_end=True)
        try:
            try:
                self._conn.send({"kind": "run", "workload": workload.to_json()})
            except (BrokenPipeError, OSError) as exc:
                raise self._fail("run", self._what_died(self._process.lost() if self._process
                                                        else [], pipe_closed=True)
                                 + f" (sending the workload: {exc})") from None
            reply = self._wait("run", limit, tick)
        except BaseException as exc:
            # Ctrl-C, SIGTERM or a timeout plugin's exception: end the engine now.
            if not isinstance(exc, EngineError):
                self._end(grace_s=0.0)
                self.dead = EngineError("run", f"interrupted ({type(exc).__name__}) during a "
                                        "workload; the engine was ended", self.log_path,
                                        interrupted=True)
            raise
        if reply["kind"] == "error":
            lost = self._process.lost() if self._process is not None else []
            if lost or (self._process is not None and not self._process.alive()):
                raise self._fail("run", self._what_died(lost))
            raise EngineError("run", f"{reply['type']}: {reply['message']}", self.log_path,
                              reply.get("traceback", ""))
        return self._result(workload, reply)

    # -- watching -------------------------------------------------------------------
    def _wait(self, phase: str, timeout_s: float,
              tick: Callable[[], None] | None = None) -> dict[str, Any]:
        """The next message from the worker, watching every engine process meanwhile.

        Raises EngineError within about POLL_S of the worker dying, vLLM's EngineCore
        (or a worker of it) dying, or the pipe closing; after ``timeout_s`` it ends
        the engine as hung. ``tick`` runs on every turn (progress from the engine's log).
        """
        proc = self._process
        assert proc is not None
        deadline = time.monotonic() + timeout_s
        while True:
            if phase == "start":
                proc.watch(_is_vllm_process)  # EngineCore appears during start
            if tick is not None:
                tick()
            if self._conn.poll(min(POLL_S, max(0.0, deadline - time.monotonic()))):
                try:
                    msg: dict[str, Any] = self._conn.recv()
                except (EOFError, OSError):
                    raise self._fail(phase, self._what_died(proc.lost(), pipe_closed=True)) from None
                if tick is not None:
                    tick()
                return msg
            lost = proc.lost()
            if lost or not proc.alive():
                if self._conn.poll(0):  # its last words arrived just before the end
                    continue
                raise self._fail(phase, self._what_died(lost))
            if time.monotonic() >= deadline:
                if phase == "start":
                    what = (f"not ready after {timeout_s:.0f} s; killed as hung "
                            "(raise --llmperf-start-timeout if start-up is that slow)")
                else:
                    what = (f"no result after {timeout_s:.0f} s; the engine was killed as hung "
                            "(raise --llmperf-run-timeout or timeout_s= if the workload is that long)")
                self._end(grace_s=0.0)
                self.dead = EngineError(phase, what, self.log_path)
                raise self.dead

    def _what_died(self, lost: list[tuple[int, str]], pipe_closed: bool = False) -> str:
        proc = self._process
        assert proc is not None
        if proc.alive() and pipe_closed:
            proc.process.join(2.0)  # the pipe closes a moment before the exit is reapable
        parts = []
        if not proc.alive():
            parts.append(f"the engine worker (pid {proc.pid}) {proc.describe_exit()}")
        parts += [f"vLLM's {_label(name)} (pid {pid}) died" for pid, name in lost]
        if not parts:
            parts.append(f"the engine worker (pid {proc.pid}) closed its pipe")
        return "; ".join(parts)

    def _fail(self, phase: str, what: str) -> EngineError:
        """End the engine's whole group and explain its death from vLLM's log."""
        self._end(grace_s=0.0)
        exited = self._process is not None and self._process.describe_exit().startswith("exited")
        tail = _explain_silence(log_reason(_read(self.log_path)), exited=exited)
        when = " while the engine started" if phase == "start" else ""
        self.dead = EngineError(phase, f"{what}{when}; vLLM said:\n{tail}", self.log_path,
                                retryable=True)
        return self.dead

    def _end(self, grace_s: float | None = None) -> None:
        if self._process is not None:
            self._process.end(grace_s=grace_s)
        with contextlib.suppress(Exception):
            self._conn.close()

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
            predicted_kv_bytes_per_token=self.source.engine_kv_bytes_per_token(
                self.config.speculative_config, self.config.kv_cache_dtype,
                self.info.get("dtype", self.config.dtype),
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

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask the engine to exit; end its whole process group if it does not in time."""
        if self._process is None:
            return
        proc = self._process
        try:
            if proc.alive():
                with contextlib.suppress(Exception):
                    self._conn.send({"kind": "stop"})
                proc.wait_group(timeout_s)
        finally:
            self._end()
            self._process = None

    def kill(self) -> None:
        """End the engine's group at once (Ctrl-C, SIGTERM)."""
        try:
            self._end(grace_s=0.0)
        finally:
            self._process = None
            if self.dead is None:
                self.dead = EngineError("run", "the engine was ended: the run was interrupted",
                                        self.log_path, interrupted=True)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def check_gpu_leftovers(holders: dict[int, float]) -> None:
    """Raise naming any process of an earlier run of this plugin among ``holders``
    (pid -> GiB on the GPUs an engine is about to use, as NVML lists them).

    Without this, the engine about to start would fail with an out-of-memory error
    that says nothing about the ghost holding the memory.
    """
    found = leftovers_holding(holders)
    if found:
        raise EngineError(
            "start",
            "the GPU is held by a process of another pytest-llmperf run:\n"
            + "\n".join(f"  {f.describe()}" for f in found),
        )


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
    retries: int = DEFAULT_START_RETRIES,
) -> EngineHandle:
    """Start a vLLM engine for ``config`` in a child process and wait until it is ready.

    ``python``: another interpreter (e.g. a virtualenv with another vLLM) to run the
    engine process with; it imports this package from here and everything else from
    its own ``sys.path``. ``progress`` hears which engine starts, its start-up phases
    and, later, its trials. ``gpus``: the GPUs it runs on (pinned with
    CUDA_VISIBLE_DEVICES) and that are watched; on a GPU the first ``config.tp``
    visible ones when not given.

    A start during which an engine process died (a crash, an OOM kill, a stray
    signal) is tried ``retries`` more times; a refusal by vLLM (a bad config) or a
    start that hung is not, since it would only fail again.
    """
    attempt = 0
    while True:
        try:
            return _start_once(config, device, log_dir=log_dir, start_timeout_s=start_timeout_s,
                               run_timeout_s=run_timeout_s, python=python, progress=progress,
                               gpus=gpus)
        except EngineError as exc:
            if not exc.retryable or attempt >= retries:
                if attempt:
                    exc.reason += f" (after {attempt + 1} attempts)"
                    exc.args = (f"engine {exc.phase} failed: {exc.reason}"
                                + (f" (engine log: {exc.log_path})" if exc.log_path else ""),)
                raise
            attempt += 1


def _start_once(config: EngineConfig, device: str, *, log_dir: str | None,
                start_timeout_s: float, run_timeout_s: float, python: str | None,
                progress: Progress | None, gpus: list[VisibleGpu] | None) -> EngineHandle:
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
        holders: dict[int, float] = {}
        for g in gpus:
            for pid, gib in nvml.compute_pids(g).items():
                holders[pid] = holders.get(pid, 0.0) + gib
        check_gpu_leftovers(holders)
        before = frozenset(holders)
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
        "owner_pid": os.getpid(),
        "gpus": [g.to_json() for g in gpus],
    }
    if python is not None:
        request["sys_path"] = interpreter_sys_path(python)
    t_spawn = time.perf_counter()
    with _spawn_executable(python):
        process = start_process(ctx, worker_main, (child_conn, request), title="engine")
    child_conn.close()
    handle = EngineHandle(config, source, device, {}, log_path, process, parent_conn,
                          run_timeout_s=run_timeout_s, gpu_pids_before=before, gpus=tuple(gpus),
                          progress=progress)
    if progress is not None:
        progress(ProgressEvent("starting", f"starting engine {config.label()} [{device}] "
                                           f"(log: {log_path})"))
    try:
        reply = handle._wait("start", start_timeout_s, watcher(log_path, progress))
    except BaseException as exc:
        if not isinstance(exc, EngineError):
            handle.kill()  # Ctrl-C or SIGTERM during start: nothing may stay behind
        raise
    if reply["kind"] == "error":
        lost = process.lost()
        handle._end(grace_s=0.0)
        tail = log_reason(_read(log_path))
        # "Engine core initialization failed ... Failed core proc(s): {}" with no other
        # cause in the log: a vLLM process was killed, not a refusal of the config.
        killed = "Engine core initialization failed" in reply["message"] and (
            tail == NO_ERROR_LOGGED or all(_WRAPPER.search(line) for line in tail.splitlines())
        )
        if killed:
            died = "; ".join(f"vLLM's {_label(name)} (pid {pid})" for pid, name in lost)
            reason = (f"{died or 'a vLLM process'} died while the engine started "
                      f"(vLLM: {reply['message'].split('. ')[0]}); vLLM said:\n"
                      f"{_explain_silence(tail, exited=False)}")
        else:
            # The worker reported the exception itself; a log with no error line adds
            # nothing, and its "killed by a signal" hint would mislead here.
            reason = f"{reply['type']}: {reply['message']}"
            if tail != NO_ERROR_LOGGED:
                reason += f"\nvLLM log:\n{tail}"
        raise EngineError("start", reason, log_path, reply.get("traceback", ""), retryable=killed)
    handle.info = reply
    # The whole launch as the test waits for it: spawning, imports, vLLM's start.
    handle.info["launch_s"] = time.perf_counter() - t_spawn
    process.watch(_is_vllm_process)
    if progress is not None:
        progress(ProgressEvent("ready", f"engine ready in {handle.start_time_s:.1f} s"
                                        f"{launch_note(handle.info)}"))
    return handle


def launch_note(info: dict[str, Any]) -> str:
    """`` (21.3 s from spawn, 14.9 s of it importing vLLM)`` when the worker said so."""
    if "launch_s" not in info:
        return ""
    note = f" ({info['launch_s']:.1f} s from spawn"
    if info.get("import_s") is not None:
        note += f", {float(info['import_s']):.1f} s of it importing vLLM"
    return note + ")"


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

    A config whose engine failed to start (after its retry), died or hung is
    remembered, so the tests after the first one fail fast with the same reason
    instead of paying for another doomed start; the next config starts afresh.
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
        current = self.current
        if current is not None and self.current_key == key:
            if current.alive():
                return current
            if current.dead is not None and not current.dead.interrupted:
                # It died or hung under an earlier test: the config's other tests fail
                # with that reason rather than each paying for a new engine.
                self.failed[key] = current.dead
                self.close()
                raise current.dead
        self.close()
        try:
            self.current = start_leased(self.leases, config.tp, lambda gpus: start_engine(
                config, self.device, log_dir=self.log_dir, start_timeout_s=self.start_timeout_s,
                run_timeout_s=self.run_timeout_s, python=python, progress=self.progress,
                gpus=gpus))
        except EngineError as exc:
            self.failed[key] = exc
            raise
        self.current_key = key
        self.starts += 1
        return self.current

    def close(self, *, kill: bool = False) -> None:
        """Stop the current engine and make sure its GPU memory came back.

        ``kill``: end it at once (the run was interrupted), no clean shutdown.
        """
        if self.current is None:
            return
        handle, self.current = self.current, None
        try:
            if kill:
                handle.kill()
                return
            t0 = time.perf_counter()
            handle.stop()
            if self.device == "gpu":
                wait_for_gpu_release(handle, self.release_timeout_s)
            if self.progress is not None:
                self.progress(ProgressEvent("stopped", f"engine stopped in "
                                                       f"{time.perf_counter() - t0:.1f} s"))
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
