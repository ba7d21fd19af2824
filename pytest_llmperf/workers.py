"""pytest-xdist support: one worker per GPU, one engine start per config, one report.

- The controller gives each worker an equal, disjoint block of the visible GPUs
  (from its worker id: ``gw0`` gets the first block) and refuses, as a usage error,
  more workers than GPUs rather than putting two engines on one GPU.
- Each worker pins itself with ``CUDA_VISIBLE_DEVICES``; its engines lease GPUs
  through hw/leases.py, so a tp=N engine on a worker that owns fewer borrows the
  others' GPUs (waiting until their engines stopped) instead of sharing them.
- Tests are grouped by engine config, so each config's engine starts on one worker,
  once: each worker writes which engine config every test needs to a file, and the
  controller's scheduler (xdist's loadgroup, with these groups) sends each group whole
  to one worker. (xdist's own ``xdist_group`` marks work by renaming node ids, which
  pytest 9 no longer allows.)
- Each worker sends its verdicts back in ``workeroutput``; the controller prints the
  summary and writes ``--llmperf-json`` from all of them.

Workers and controller run the same code from the same installation, so verdicts
travel pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from .atomic import write_atomic
from .hw.leases import NotEnoughGpus, assign
from .hw.nvml import VisibleGpu, cuda_env

GPUS_KEY = "llmperf_gpus"
GROUPS_KEY = "llmperf_groups_dir"
VERDICTS_KEY = "llmperf_verdicts"
GROUP_PREFIX = "llmperf-"


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def planned_workers(config: pytest.Config) -> int:
    """How many xdist workers the controller will start (0 without xdist)."""
    if is_worker(config) or getattr(config.option, "dist", "no") == "no":
        return 0
    return len(getattr(config.option, "tx", None) or [])


def worker_gpus(config: pytest.Config) -> tuple[list[VisibleGpu], list[VisibleGpu]] | None:
    """(owned, pool) GPUs the controller gave this worker; None outside xdist."""
    data = getattr(config, "workerinput", {}).get(GPUS_KEY)
    if data is None:
        return None
    return ([VisibleGpu.from_json(g) for g in data["owned"]],
            [VisibleGpu.from_json(g) for g in data["pool"]])


def configure_worker(config: pytest.Config) -> None:
    """Pin this worker, and everything it starts, to its own GPUs."""
    assigned = worker_gpus(config)
    if assigned is not None:
        os.environ.update(cuda_env(assigned[0]))


def group_name(engine_key: Any) -> str:
    """The scheduling group of every test sharing one engine config."""
    return GROUP_PREFIX + hashlib.sha1(repr(engine_key).encode()).hexdigest()[:12]


def publish_groups(config: pytest.Config, items: list[pytest.Item], engine_key: Any) -> None:
    """A worker tells the controller's scheduler which engine each test needs."""
    folder = getattr(config, "workerinput", {}).get(GROUPS_KEY)
    if folder is None:
        return
    groups = {item.nodeid: group_name(key) for item in items
              if (key := engine_key(item)) is not None}
    name = f"{config.workerinput['workerid']}.json"  # type: ignore[attr-defined]
    write_atomic(Path(folder, name), json.dumps(groups).encode("utf-8"))


def plain_nodeid(nodeid: str) -> str:
    """The node id without an ``@group`` suffix (older pytest with ``--dist loadgroup``)."""
    if nodeid.rfind("@") > max(nodeid.rfind("]"), nodeid.rfind("::")):
        return nodeid.rsplit("@", 1)[0]
    return nodeid


def make_scheduler(config: pytest.Config, log: Any, groups_dir: str) -> Any:
    """xdist's loadgroup scheduling, with a group per engine config."""
    from xdist.scheduler import LoadGroupScheduling

    class EngineGroupScheduling(LoadGroupScheduling):  # type: ignore[misc, unused-ignore]
        """Sends all tests of one engine config to one worker, as one unit of work."""

        _groups: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._groups is None:  # every worker has collected by now
                self._groups = {}
                for path in sorted(Path(groups_dir).glob("*.json")):
                    self._groups.update(json.loads(path.read_text(encoding="utf-8")))
            group = self._groups.get(nodeid)
            return group if group is not None else str(super()._split_scope(nodeid))

    return EngineGroupScheduling(config, log)


class Controller:
    """The controller's side: check the worker count, assign GPUs, gather verdicts."""

    def __init__(self, config: pytest.Config, gpus: list[VisibleGpu], session: Any) -> None:
        self.config = config
        self.workers = planned_workers(config)
        self.gpus = gpus
        self.session = session
        if gpus and self.workers > len(gpus):
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            raise pytest.UsageError(
                f"-n {self.workers} starts {self.workers} pytest-xdist workers but only "
                f"{len(gpus)} GPU(s) are visible"
                + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
                + f": each worker needs a GPU of its own; use -n {len(gpus)} or -n auto"
            )
        if gpus and any(g.mig for g in gpus):
            raise pytest.UsageError(
                "pytest-xdist workers cannot be pinned to MIG slices (vLLM reads "
                "CUDA_VISIBLE_DEVICES as GPU indices): run without -n"
            )
        self.groups_dir = tempfile.mkdtemp(prefix="llmperf-xdist-")

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        # Plain "load" would scatter a config's tests over workers, each starting the
        # same engine; other modes the user chose are left alone.
        if config.getvalue("dist") in ("load", "loadgroup"):
            return make_scheduler(config, log, self.groups_dir)
        return None

    def pytest_unconfigure(self) -> None:
        shutil.rmtree(self.groups_dir, ignore_errors=True)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[GROUPS_KEY] = self.groups_dir
        if not self.gpus:
            return
        index = int(re.sub(r"\D", "", node.gateway.id) or 0)
        try:
            owned = assign(self.gpus, index, self.workers)
        except NotEnoughGpus as exc:  # checked in __init__; a changed -n cannot reach here
            raise pytest.UsageError(str(exc)) from None
        node.workerinput[GPUS_KEY] = {
            "owned": [g.to_json() for g in owned],
            "pool": [g.to_json() for g in self.gpus],
        }

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        data = getattr(node, "workeroutput", {}).get(VERDICTS_KEY)
        if not data:
            return
        sent = pickle.loads(data)
        self.session.verdicts.extend(sent["verdicts"])
        self.session.verdicts.sort(key=lambda v: v.test_id)
        for name in sent["baseline_dirs"]:
            if name not in self.session.baseline_dirs:
                self.session.baseline_dirs.append(name)
        self.session.machines.update(sent["machines"])
        self.session.hardware_keys.update(sent["hardware_keys"])


class Worker:
    """A worker's side: hand the verdicts to the controller when the session ends."""

    def __init__(self, config: pytest.Config, session: Any) -> None:
        self.config = config
        self.session = session

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        self.config.workeroutput[VERDICTS_KEY] = pickle.dumps({  # type: ignore[attr-defined]
            "verdicts": self.session.verdicts,
            "baseline_dirs": self.session.baseline_dirs,
            "machines": self.session.machines,
            "hardware_keys": self.session.hardware_keys,
        })

