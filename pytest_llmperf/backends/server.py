"""The ``server`` backend: vLLM's OpenAI-compatible server under a client load.

The server runs as ``python -m vllm.entrypoints.openai.api_server`` (the ``vllm`` CLI
of the CPU build does not start) as a guarded process (:mod:`..procs`: its own process
group, ended as one, never outliving the pytest run), bound to 127.0.0.1 on a
free port, its output in a log file whose path is in every failure. It is ready when
``/health`` answers. Cards get a synthetic word-level tokenizer (:mod:`..tokenizer`).

On the CPU build the API server and the engine would fight for the same cores: with
the engine spinning, a starved API server holds a stream back and sends it in one
burst (TTFT == E2EL). So the engine's OpenMP threads are bound to the CPUs after the
first (``VLLM_CPU_OMP_THREADS_BIND``) and the API server process is pinned to the
first CPU once it is up; bursty streams are still detected and reported.

``connect_endpoint`` targets a server that is already running (``--llmperf-endpoint``):
then nothing is started or stopped and the engine config is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ..cards import resolve_model
from ..config import EngineConfig, Workload
from ..engine import DEFAULT_RUN_TIMEOUT_S, DEFAULT_START_TIMEOUT_S, EngineError, log_reason
from ..hw.leases import start_leased
from ..hw.nvml import VisibleGpu
from ..procs import GuardedProcess, start_command
from ..results import MemoryResult, PerfResult, TrialResult

T = TypeVar("T")
DEFAULT_VOCAB = 32000


class ServerError(EngineError):
    """The server could not start, died, or a run could not be measured."""

    def __init__(self, phase: str, reason: str, log_path: str | None = None, detail: str = ""):
        super().__init__(phase, reason, log_path, detail)
        where = f" (server log: {log_path})" if log_path else ""
        self.args = (f"server {phase} failed: {reason}{where}",)

    def __str__(self) -> str:
        return str(self.args[0])


class RequestsFailed(ServerError):
    """More requests failed than the marker allows; the first errors are quoted."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def server_args(config: EngineConfig, model_dir: str, load_format: str, port: int,
                python: str | None = None) -> list[str]:
    """The api_server command line for an engine config (the same knobs as offline)."""
    args = [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", model_dir, "--served-model-name", config.model,
            "--host", "127.0.0.1", "--port", str(port),
            "--load-format", load_format,
            "--tensor-parallel-size", str(config.tp), "--dtype", config.dtype,
            "--gpu-memory-utilization", str(config.gpu_memory_utilization),
            "--kv-cache-dtype", config.kv_cache_dtype, "--seed", str(config.seed)]
    for key in ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "quantization"):
        value = getattr(config, key)
        if value is not None:
            args += [_flag(key), str(value)]
    for key in ("enable_prefix_caching", "enable_chunked_prefill"):
        value = getattr(config, key)
        if value is not None:
            args.append(_flag(key) if value else "--no-" + _flag(key)[2:])
    if config.enforce_eager:
        args.append("--enforce-eager")
    if config.speculative_config:
        args += ["--speculative-config", json.dumps(config.speculative_config)]
    for key, value in (config.extra or {}).items():
        if value is True:
            args.append(_flag(key))
        elif value is False:
            args.append("--no-" + _flag(key)[2:])
        elif value is not None:
            args += [_flag(key), json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return args


def cpu_split() -> tuple[set[int], str | None]:
    """(CPUs for the API server, VLLM_CPU_OMP_THREADS_BIND for the engine) on the CPU build."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return set(cpus), None
    return {cpus[0]}, ",".join(str(c) for c in cpus[1:])


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pin every thread of one process (not its children) to ``cpus``."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(tid, cpus)


def _http_json(url: str, timeout_s: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - loopback/user URL
        return json.loads(response.read().decode("utf-8"))


def _http_text(url: str, timeout_s: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
        return str(response.read().decode("utf-8", errors="replace"))


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh event loop in its own thread (safe inside
    a test that already runs a loop)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, name="llmperf-client", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    value: T = box["value"]
    return value


@dataclass
class ServerHandle:
    """A running OpenAI server (started here, or an endpoint given by URL)."""

    config: EngineConfig
    base_url: str
    model_name: str
    device: str
    log_path: str
    vocab_size: int
    info: dict[str, Any] = field(default_factory=dict)
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    process: GuardedProcess | None = field(default=None, repr=False)
    external: bool = False
    dead: EngineError | None = None
    runs: int = 0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def start_time_s(self) -> float:
        return float(self.info.get("start_time_s", 0.0))

    @property
    def vllm_version(self) -> str:
        return str(self.info.get("vllm_version", ""))

    def alive(self) -> bool:
        if self.dead is not None:
            return False
        if self.process is not None:
            return self.process.alive()
        return True

    def models(self) -> Any:
        """What the server claims to serve (``/v1/models``)."""
        return _http_json(self.base_url + "/v1/models")

    def check_alive(self, phase: str, grace_s: float = 0.0) -> None:
        """Raise a ServerError with vLLM's last words if the server process is gone.

        ``grace_s``: after failed requests, wait that long for a dying server to be
        reaped (its sockets close before its exit status is visible)."""
        if self.dead is not None:
            raise self.dead
        deadline = time.monotonic() + grace_s
        while self.process is not None and self.process.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.process is not None and not self.process.alive():
            self.dead = ServerError(
                phase, f"the server process died ({self.process.describe_exit()}); "
                f"vLLM said:\n{log_reason(_read(self.log_path))}", self.log_path)
            raise self.dead

    def run(self, workload: Workload, timeout_s: float | None = None) -> Any:
        """Measure ``workload`` against this server (see :mod:`..serving_run`): a
        PerfResult, or a :class:`~..loads.sweep.SweepResult` for ``load="sweep"``."""
        if workload.load == "sweep":
            from ..loads.sweep import run_sweep

            return run_sweep(workload, lambda wl: self.run(wl, timeout_s), RequestsFailed)
        return self.run_one(workload, timeout_s)

    def run_one(self, workload: Workload, timeout_s: float | None = None) -> PerfResult:
        from ..serving_run import measure_serving

        self.check_alive("run")
        self.runs += 1
        limit = timeout_s or self.run_timeout_s
        try:
            trials, warnings = run_coroutine(measure_serving(self, workload, limit, self.runs))
        except ServerError:
            raise
        except (TimeoutError, asyncio.TimeoutError):
            self.check_alive("run")
            raise ServerError("run", f"no result after {limit:.0f} s (raise --llmperf-run-timeout "
                              "or timeout_s= if the workload is that long)", self.log_path) from None
        return self._result(workload, trials, warnings)

    def _result(self, workload: Workload, trials: list[TrialResult], warnings: list[str]) -> PerfResult:
        memory = MemoryResult(kind=self.device, kv_cache_tokens=self.info.get("kv_cache_tokens"),
                              max_concurrency=self.info.get("max_concurrency"),
                              kv_cache_gib=self.info.get("kv_cache_gib"),
                              weights_gib=self.info.get("weights_gib"))
        notes = []
        if self.external:
            notes.append(f"endpoint {self.base_url}: engine config unknown; the server says it "
                         f"serves {self.info.get('models_text', '?')}")
        failed = sum(t.failed_requests for t in trials)
        if failed:
            sent = failed + sum(t.num_requests for t in trials)
            errors = sorted({e for t in trials for e in t.errors})[:3]
            notes.append(f"{failed} of {sent} requests failed (within max_error_rate="
                         f"{workload.max_error_rate:g}): " + "; ".join(errors))
        stopped = [t.stopped for t in trials if t.stopped]
        notes.extend(sorted(set(stopped)))
        return PerfResult(engine=self.config, workload=workload, trials=tuple(trials),
                          memory=memory, start_time_s=self.start_time_s, device=self.device,
                          vllm_version=self.vllm_version, notes=tuple(notes),
                          warnings=tuple(warnings))

    def stop(self, timeout_s: float = 30.0) -> None:
        """End the server and everything it started (its whole process group)."""
        proc, self.process = self.process, None
        if proc is not None:
            proc.end(timeout_s=timeout_s)


def start_server(
    config: EngineConfig,
    device: str,
    *,
    log_dir: str | None = None,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S,
    python: str | None = None,
    gpus: Sequence[VisibleGpu] | None = None,
) -> ServerHandle:
    """Start vLLM's OpenAI server for ``config`` and wait until ``/health`` answers
    (``python``: the interpreter to run it with, default this one; ``gpus``: the GPUs
    it is pinned to with CUDA_VISIBLE_DEVICES, as offline engines are)."""
    from ..engine_worker import parse_engine_log
    from ..tokenizer import served_model_dir

    source = resolve_model(config.model)
    model_dir = served_model_dir(source)
    log_dir = log_dir or tempfile.mkdtemp(prefix="llmperf-")
    os.makedirs(log_dir, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in config.model)[-60:]
    log_path = os.path.join(log_dir, f"server-{safe}-{int(time.time() * 1000)}.log")
    port = free_port()
    env = dict(os.environ)
    if gpus:
        from ..hw.nvml import cuda_env

        env.update(cuda_env(gpus))
    api_cpus: set[int] | None = None
    if device == "cpu" and "VLLM_CPU_OMP_THREADS_BIND" not in env:
        api_cpus, bind = cpu_split()
        if bind is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
        else:
            api_cpus = None
    args = server_args(config, model_dir, source.load_format, port, python)
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(args) + "\n").encode())
        log.flush()
        process = start_command(args, title="server", env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    vocab = int((source.config or {}).get("text_config", source.config or {}).get("vocab_size")
                or DEFAULT_VOCAB)
    handle = ServerHandle(config=config, base_url=f"http://127.0.0.1:{port}",
                          model_name=config.model, device=device, log_path=log_path,
                          vocab_size=vocab, run_timeout_s=run_timeout_s, process=process)
    t0 = time.perf_counter()
    try:
        _wait_healthy(handle, start_timeout_s)
    except BaseException:
        handle.stop()
        raise
    handle.info["start_time_s"] = time.perf_counter() - t0
    if gpus:
        handle.info["cuda_visible_devices"] = env["CUDA_VISIBLE_DEVICES"]
    if api_cpus:
        pin_process(process.pid, api_cpus)
        handle.info["api_server_cpus"] = sorted(api_cpus)
        handle.info["engine_cpus"] = env["VLLM_CPU_OMP_THREADS_BIND"]
    handle.info.update(parse_engine_log(_read(log_path)))
    _describe(handle)
    return handle


def _wait_healthy(handle: ServerHandle, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        handle.check_alive("start")
        try:
            with urllib.request.urlopen(handle.base_url + "/health", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise ServerError("start", f"/health not answering after {timeout_s:.0f} s; killed as "
                              "hung (raise --llmperf-start-timeout if start-up is that slow)",
                              handle.log_path)
        time.sleep(0.5)


def _describe(handle: ServerHandle) -> None:
    """Record the vLLM version and what /v1/models claims."""
    with contextlib.suppress(Exception):
        handle.info["vllm_version"] = _http_json(handle.base_url + "/version").get("version", "")
    with contextlib.suppress(Exception):
        models = handle.models()
        handle.info["models"] = models
        handle.info["models_text"] = ", ".join(
            f"{m.get('id')} (max_model_len {m.get('max_model_len', '?')}, root {m.get('root', '?')})"
            for m in models.get("data", []))


def connect_endpoint(url: str, config: EngineConfig, device: str,
                     run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S) -> ServerHandle:
    """A handle on an already running server; raises ServerError if it does not answer."""
    base = url.rstrip("/")
    if base.endswith("/v1"):
        base = base[:-3]
    try:
        models = _http_json(base + "/v1/models", timeout_s=10)
        served = [m["id"] for m in models.get("data", [])]
    except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
        raise ServerError("connect", f"{base}/v1/models did not answer: {exc}") from None
    if not served:
        raise ServerError("connect", f"{base}/v1/models lists no model")
    vocab = DEFAULT_VOCAB
    with contextlib.suppress(Exception):
        cfg = resolve_model(config.model).config or {}
        vocab = int(cfg.get("text_config", cfg).get("vocab_size") or DEFAULT_VOCAB)
    handle = ServerHandle(config=replace(config, model=served[0]) if config.model not in served
                          else config, base_url=base,
                          model_name=config.model if config.model in served else served[0],
                          device=device, log_path=f"(external endpoint {base}: no log here)",
                          vocab_size=vocab, run_timeout_s=run_timeout_s, external=True)
    _describe(handle)
    return handle


@dataclass
class ServerManager:
    """One server alive at a time, reused while tests ask for the same engine config.

    A config that failed to start is remembered, so later tests fail fast with its reason.
    With ``endpoint`` set, every config maps to that already-running server.
    """

    device: str
    log_dir: str | None = None
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S
    run_timeout_s: float = DEFAULT_RUN_TIMEOUT_S
    endpoint: str | None = None
    leases: Any = None  # the GPUs servers may use (hw/leases.py); None: CPU or all visible
    current: ServerHandle | None = None
    current_key: tuple[Any, ...] = ()
    failed: dict[tuple[Any, ...], EngineError] = field(default_factory=dict)
    starts: int = 0

    def get(self, config: EngineConfig, python: str | None = None) -> ServerHandle:
        key = (*config.key(), python) if python else config.key()
        if key in self.failed:
            raise self.failed[key]
        if self.endpoint is not None:
            if self.current is None:
                self.current = connect_endpoint(self.endpoint, config, self.device, self.run_timeout_s)
            return self.current
        if self.current is not None and self.current_key == key and self.current.alive():
            return self.current
        self.close()
        try:
            self.current = start_leased(self.leases, config.tp, lambda gpus: start_server(
                config, self.device, log_dir=self.log_dir, start_timeout_s=self.start_timeout_s,
                run_timeout_s=self.run_timeout_s, python=python, gpus=gpus))
        except EngineError as exc:
            self.failed[key] = exc
            raise
        self.current_key = key
        self.starts += 1
        return self.current

    def close(self, *, kill: bool = False) -> None:
        """Stop the live server (``kill``: a one-second grace, the run was interrupted)."""
        if self.current is not None:
            handle, self.current = self.current, None
            try:
                handle.stop(timeout_s=1.0 if kill else 30.0)
            finally:
                if self.leases is not None:
                    self.leases.release()
