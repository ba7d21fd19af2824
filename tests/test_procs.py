"""Guarded processes (pytest_llmperf.procs): ended as a group, never outliving their owner.

No engine here: the children are small Python processes that ignore SIGTERM, as vLLM's
EngineCore has been seen to. Real engines: tests/test_lifecycle_cpu.py.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pytest_llmperf import procs

HERE = Path(__file__).parent
OWNER = HERE / "procs_owner.py"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the parent-death signal exists on Linux only")


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(HERE.parent), str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def _start_owner(mode: str) -> tuple[subprocess.Popen[str], dict]:
    owner = subprocess.Popen([sys.executable, str(OWNER), mode], stdout=subprocess.PIPE,
                             text=True, env=_env())
    assert owner.stdout is not None
    ready, _, _ = select.select([owner.stdout], [], [], 60)
    if not ready:
        owner.kill()
        pytest.fail("the owner printed no pids within 60 s")
    info = json.loads(owner.stdout.readline())
    return owner, info


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _still_alive_after(pids: list[int], timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("mode", ["command", "process"])
def test_sigkill_of_the_owner_ends_the_whole_tree(mode: str) -> None:
    owner, info = _start_owner(mode)
    pids = info["pids"]
    assert len(pids) >= 2, "the child should have started a grandchild"
    assert all(_alive(p) for p in pids)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert _still_alive_after(pids + [info["reaper"]], 15) == []


@linux_only
def test_without_the_reaper_the_parent_death_signal_ends_the_group() -> None:
    owner, info = _start_owner("process")
    os.kill(info["reaper"], signal.SIGKILL)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert _still_alive_after(info["pids"], 15) == []


def test_an_owner_that_exits_without_ending_its_child_neither_hangs_nor_leaves_it() -> None:
    # multiprocessing's exit handler joins non-daemonic children: without the
    # atexit handler of procs, this owner would wait 600 s for its child.
    owner, info = _start_owner("exit")
    assert owner.wait(timeout=20) == 0
    assert _still_alive_after(info["pids"] + [info["reaper"]], 5) == []


def test_end_kills_a_group_that_ignores_sigterm() -> None:
    from procs_owner import STUBBORN

    guarded = procs.start_command([sys.executable, "-c", STUBBORN, "grandchild"], title="t")
    deadline = time.monotonic() + 30
    while not guarded.members() and time.monotonic() < deadline:
        time.sleep(0.05)
    pids = [guarded.pid] + [p.pid for p in guarded.members()]
    assert len(pids) == 2
    reaper = guarded._reaper
    assert reaper is not None and reaper.poll() is None
    env = psutil.Process(pids[1]).environ()
    assert env[procs.OWNER_ENV] == str(os.getpid())  # the marker reaches grandchildren
    t0 = time.monotonic()
    guarded.end(grace_s=0.5)
    assert time.monotonic() - t0 < 5
    assert _still_alive_after(pids, 1) == []
    assert guarded.returncode == -signal.SIGKILL
    assert guarded.describe_exit() == "killed by SIGKILL"
    assert reaper.poll() is not None  # the reaper went with the group
    guarded.end()  # a second end is harmless


def test_describe_exit() -> None:
    assert procs.describe_exit(None) == "still running"
    assert procs.describe_exit(1) == "exited with code 1"
    assert procs.describe_exit(-9) == "killed by SIGKILL"


# -- leftovers of earlier runs ------------------------------------------------------------


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def sleepers():
    started: list[subprocess.Popen[bytes]] = []

    def start(env: dict[str, str] | None) -> int:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             env=env, start_new_session=True)
        started.append(p)
        return p.pid

    yield start
    for p in started:
        p.kill()
        p.wait()


def test_leftovers_holding_names_only_marked_processes_of_other_runs(sleepers) -> None:
    gone_owner = _dead_pid()
    clean_env = {k: v for k, v in os.environ.items() if k != procs.OWNER_ENV}
    ghost = sleepers({**clean_env, procs.OWNER_ENV: str(gone_owner)})
    stranger = sleepers(clean_env)
    ours = sleepers({**clean_env, procs.OWNER_ENV: str(os.getpid())})
    time.sleep(0.2)  # let the interpreters exec, so /proc shows their environment
    holders = {ghost: 30.5, stranger: 10.0, ours: 5.0, _dead_pid(): 1.0}
    found = procs.leftovers_holding(holders)
    assert [f.pid for f in found] == [ghost]
    text = found[0].describe()
    assert f"pid {ghost}" in text
    assert "30.5 GiB" in text
    assert f"pytest, pid {gone_owner}, is gone" in text
    assert f"kill -9 -- -{ghost}" in text  # its own group: the whole tree goes
