"""Paired A/B against a base commit: the base's plans, and interleaved engine starts.

``--llmperf-ab REF`` measures every perf test twice on the same runner: as it is in
the working tree (the head) and as it is at REF (the base). This module holds all of
it, without pytest:

* ``BaseCheckout``: a temporary ``git worktree`` of REF, always removed (close(),
  atexit, and a context manager), so the base's markers and model directories or
  cards are read exactly as they are at REF;
* ``collect_base_plans``: runs ``pytest --collect-only`` in that checkout with the
  head's plugin and a hidden option (``--llmperf-dump-plans``) that writes each
  test's plan as JSON, so the base side is planned by pytest itself (parametrize,
  class markers, conftest.py) but never run;
* ``run_paired``: base and head engine starts interleaved and counterbalanced (head,
  base, base, head, ...), then ``startgate.compare_paired`` on start pairs, with
  confirmation pairs while the verdict is inconclusive.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cards import CARDS_DIR, resolve_model
from .config import EngineConfig, Workload
from .regression import Comparison
from .results import PerfResult

DUMP_OPTION = "--llmperf-dump-plans"
_WORKTREE_PREFIX = "llmperf-base-"


class ABError(RuntimeError):
    """The base commit or its plans could not be had; the message says why."""


def _git(repo: Path, *args: str, timeout: float = 120.0) -> str:
    try:
        proc = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise ABError("--llmperf-ab needs git on PATH") from None
    except subprocess.TimeoutExpired:
        raise ABError(f"git {' '.join(args)} took more than {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise ABError(f"git {' '.join(args)}: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout.strip()


def repo_root(path: Path) -> Path:
    """The top of the git work tree holding ``path``."""
    try:
        return Path(_git(path, "rev-parse", "--show-toplevel")).resolve()
    except ABError as exc:
        raise ABError(f"--llmperf-ab needs the tests in a git repository ({path}): {exc}") from None


def resolve_ref(repo: Path, ref: str) -> str:
    """The commit id ``ref`` names; ABError naming the ref when it names none."""
    try:
        return _git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except ABError:
        raise ABError(f"--llmperf-ab={ref!r}: not a commit in {repo} "
                      "(fetch it first, e.g. git fetch origin main)") from None


class BaseCheckout:
    """A detached ``git worktree`` of one commit in a temporary directory.

    Removed by ``close()`` (idempotent), at interpreter exit, and on leaving a
    ``with`` block, also on KeyboardInterrupt; ``git worktree prune`` then forgets it.
    """

    def __init__(self, repo: Path, commit: str) -> None:
        self.repo = repo
        self.commit = commit
        self._tmp = Path(tempfile.mkdtemp(prefix=_WORKTREE_PREFIX))
        self.path = self._tmp / "base"
        atexit.register(self.close)
        try:
            _git(repo, "worktree", "prune")  # forget checkouts of runs that were killed
            _git(repo, "worktree", "add", "--detach", "--quiet", str(self.path), commit,
                 timeout=600.0)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> BaseCheckout:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def open(self) -> bool:
        return self._tmp.exists()

    def close(self) -> None:
        if not self._tmp.exists():
            return
        with contextlib.suppress(ABError):
            _git(self.repo, "worktree", "remove", "--force", str(self.path))
        shutil.rmtree(self._tmp, ignore_errors=True)
        with contextlib.suppress(ABError):
            _git(self.repo, "worktree", "prune")
        atexit.unregister(self.close)


# ------------------------------------------------------------------------------ plans


@dataclass(frozen=True)
class SidePlan:
    """What one side of a pair runs: the engine, the workload, the interpreter."""

    engine: EngineConfig
    workload: Workload
    python: str | None = None  # None: this interpreter

    def identity(self) -> str:
        """Equal for two sides that would measure the same thing: the model by its
        content (a card at REF and in the head may have the same name but another
        config.json), every engine and workload key, and the interpreter."""
        engine = self.engine.to_json()
        engine["model"] = model_digest(self.engine.model)
        return json.dumps({"engine": engine, "workload": self.workload.to_json(),
                           "python": self.python}, sort_keys=True, default=str)


def model_digest(model: str) -> str:
    """A digest of what the engine loads: config.json's bytes and the names and sizes of
    the other files of a local model directory; a hub id stands for itself."""
    try:
        source = resolve_model(model)
    except ValueError:
        return f"unresolved:{model}"
    directory = Path(source.path)
    if not directory.is_dir():
        return f"hub:{model}"
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory).as_posix()
        digest.update(rel.encode())
        if path.name.endswith(".json") and path.stat().st_size < 1 << 20:
            digest.update(path.read_bytes())
        else:
            digest.update(str(path.stat().st_size).encode())
    return "sha256:" + digest.hexdigest()


def localise_model(model: str, root: Path, cwd: Path) -> str:
    """The model as an absolute path inside checkout ``root`` when the checkout holds it:
    a relative model directory (resolved against ``cwd``), or a card the repository
    ships (``<root>/pytest_llmperf/cards/<name>``, as in pytest-llmperf itself)."""
    card = root / CARDS_DIR.parent.name / CARDS_DIR.name / model
    if "/" not in model and (card / "config.json").is_file():
        return str(card.resolve())
    local = Path(os.path.expanduser(model))
    if not local.is_absolute():
        candidate = (cwd / local).resolve()
        if candidate.is_dir():
            return str(candidate)
    return model


def plan_json(engine: EngineConfig, workload: Workload, root: Path, cwd: Path) -> dict[str, Any]:
    data = engine.to_json()
    data["model"] = localise_model(engine.model, root, cwd)
    return {"engine": data, "workload": workload.to_json()}


@dataclass
class BasePlans:
    """The base commit's plans by test id, and why the others have none."""

    commit: str
    plans: dict[str, SidePlan] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def lookup(self, nodeid: str) -> tuple[SidePlan | None, str]:
        """(plan, "") or (None, why there is no base plan)."""
        if nodeid in self.plans:
            return self.plans[nodeid], ""
        if nodeid in self.skipped:
            return None, f"not run at the base commit: {self.skipped[nodeid]}"
        path = nodeid.split("::", 1)[0]
        if path in self.errors:
            return None, f"the base commit's {path} does not collect: {self.errors[path]}"
        return None, "new in this change (no such perf test at the base commit)"


def collect_base_plans(
    checkout: Path,
    repo: Path,
    rootdir: Path,
    invocation_dir: Path,
    args: Sequence[str],
    options: Sequence[str],
    commit: str,
    python: str | None = None,
    timeout_s: float = 600.0,
) -> BasePlans:
    """Plan every perf test at the base commit without running it.

    pytest runs ``--collect-only`` in the checkout, at the place of this session's
    rootdir and invocation directory, with the head's plugin (imported first, so the
    base's copy of the plugin, if the repository is pytest-llmperf itself, is not used),
    ``options`` (the session's planning options, e.g. ``--gpu``) and the test paths of
    ``args`` that exist at the base.
    """
    base_root = checkout / rootdir.relative_to(repo)
    base_cwd = checkout / invocation_dir.relative_to(repo)
    paths = []
    for arg in args:
        path_part = arg.split("::", 1)[0]
        target = Path(path_part) if Path(path_part).is_absolute() else invocation_dir / path_part
        try:
            rel = target.resolve().relative_to(repo)
        except ValueError:
            raise ABError(f"--llmperf-ab: test path {arg!r} is outside the repository {repo}") from None
        if (checkout / rel).exists():
            paths.append(str(checkout / rel) + arg[len(path_part):])
    if not paths and args:
        return BasePlans(commit)
    head_pkg = str(Path(__file__).resolve().parent.parent)
    with tempfile.TemporaryDirectory(prefix="llmperf-plans-") as tmp:
        out = Path(tmp) / "plans.json"
        bootstrap = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import pytest; "
                     "sys.exit(pytest.main(sys.argv[1:]))")
        cmd = [python or sys.executable, "-c", bootstrap, head_pkg,
               "--collect-only", "-q", "-p", "pytest_llmperf", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", "--rootdir", str(base_root),
               f"{DUMP_OPTION}={out}", *options, *paths]
        env = dict(os.environ)
        env.pop("PYTEST_ADDOPTS", None)
        try:
            proc = subprocess.run(cmd, cwd=base_cwd if base_cwd.is_dir() else base_root,
                                  capture_output=True, text=True, timeout=timeout_s, env=env,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise ABError(f"planning the base commit took more than {timeout_s:.0f} s") from None
        if not out.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise ABError(f"could not plan the tests at the base commit {commit[:12]} "
                          f"(pytest exit code {proc.returncode}):\n{tail}")
        doc = json.loads(out.read_text(encoding="utf-8"))
    return parse_plans(doc, commit)


def parse_plans(doc: Mapping[str, Any], commit: str) -> BasePlans:
    plans = BasePlans(commit)
    for nodeid, data in doc.get("tests", {}).items():
        if "skip" in data:
            plans.skipped[nodeid] = str(data["skip"])
        else:
            plans.plans[nodeid] = SidePlan(EngineConfig.from_json(data["engine"]),
                                           Workload.from_json(data["workload"]))
    plans.errors.update({str(k): str(v) for k, v in doc.get("errors", {}).items()})
    return plans


# ------------------------------------------------------------------------ paired runs


def counterbalanced_side(i: int) -> str:
    """The side of the ``i``-th engine start (from 0): head, base, base, head, head, base, ...

    Pair k is starts 2k and 2k + 1, with the head first in even pairs and the base first
    in odd ones. Alternating head, base, head, base would put the head first in every
    pair, so a machine that drifts steadily (a base TPOT p50 rose 3.8% over 7 minutes of
    back-to-back starts on an H100) would bias every pair the same way: the one A/A false
    alarm in 224 H100 comparisons with 2 pairs was such a drift, output tok/s -1.6% in both
    pairs. Reversed every other pair, a linear drift cancels over two pairs.
    """
    head_first = (i // 2) % 2 == 0
    return "head" if (i % 2 == 0) == head_first else "base"


@dataclass
class PairedRun:
    """The engine starts of both sides, in the order they ran, and the verdict."""

    base: list[PerfResult]
    head: list[PerfResult]
    order: list[str]
    comparison: Comparison
    confirmations: int = 0


def run_paired(
    head: SidePlan,
    base: SidePlan,
    *,
    measure: Callable[[SidePlan], PerfResult],
    values: Callable[[PerfResult], dict[str, list[float]]],
    starts: int,
    confirm: int,
    tolerances: Mapping[str, float],
    noise: Mapping[str, Any] | None = None,
    first_head: PerfResult | None = None,
) -> PairedRun:
    """Interleave engine starts of both sides until each has ``starts``, then decide on
    the start pairs (base i, head i); while inconclusive, add a pair, up to ``confirm``.

    ``measure(side)`` is one fresh engine start of that side's engine running its
    workload; ``first_head`` (the test body's run, measured just before) counts as the
    head's first start. Starts run head, base, base, head, head, base, ...
    (``counterbalanced_side``), so a drift over time hits both sides alike.
    """
    from .gate import settle
    from .startgate import compare_paired

    run = PairedRun(base=[], head=[], order=[], comparison=Comparison(()))
    if first_head is not None:
        run.head.append(first_head)
        run.order.append("head")

    def step() -> None:
        side = counterbalanced_side(len(run.order))
        result = measure(base if side == "base" else head)
        (run.base if side == "base" else run.head).append(result)
        run.order.append(side)

    while len(run.base) < starts or len(run.head) < starts:
        step()

    def decide() -> Comparison:
        n = min(len(run.base), len(run.head))
        return compare_paired([values(r) for r in run.base[:n]],
                              [values(r) for r in run.head[:n]],
                              tolerances=tolerances, noise=noise)

    def another_pair() -> None:
        target = min(len(run.base), len(run.head)) + 1
        while len(run.base) < target or len(run.head) < target:
            step()

    run.comparison, run.confirmations = settle(decide, another_pair, confirm)
    return run
