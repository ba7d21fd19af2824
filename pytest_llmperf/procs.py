"""Every process the plugin starts: its own process group, watched, ended as a group,
and never outliving the process that owns it (the pytest run).

A *guarded* child gets:

- its own process group (its pid is the group id), so it and everything it starts
  (vLLM's EngineCore, its workers, an OpenAI server's children) end together, and a
  terminal's Ctrl-C reaches only the owner, which then ends the group itself;
- the environment marker ``LLMPERF_OWNER=<owner pid>``, inherited by all its
  descendants, so a process left over from an earlier run can be recognised
  (:func:`leftovers_holding`); a multiprocessing child also gets the title
  ``llmperf-<title> (owner <pid>)``;
- a *reaper*: a tiny separate process, in a session of its own, that waits on a pipe
  from the owner; when the owner dies, by any signal including SIGKILL, the pipe
  closes and the reaper ends the whole group (SIGTERM, then SIGKILL after a short
  grace: vLLM's EngineCore has been seen ignoring SIGTERM);
- on Linux, a parent-death signal (``prctl(PR_SET_PDEATHSIG)``) on the group leader,
  set when the owner starts it from its main thread (the kernel sends it when the
  starting *thread* ends): SIGKILL for a command; for a multiprocessing child that
  calls :func:`guard_child`, SIGHUP, whose handler ends the child's whole group;
- for such a child, also a watchdog thread that ends its group as soon as its
  parent is gone (besides the reaper, the only mechanism on macOS, which has no
  parent-death signal).

The owner ends a child with :meth:`GuardedProcess.end`, and an ``atexit`` handler
ends any still running when the owner exits normally or on an exception (so
multiprocessing's own exit handler, which joins non-daemonic children, never waits
on a live engine).

Guard a command, e.g. an OpenAI-compatible server::

    import subprocess, sys
    from pytest_llmperf.procs import start_command

    log = open(log_path, "ab")
    server = start_command(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
         "--model", model_path, "--port", str(port)],
        title="server", stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        ...                           # poll /health; server.returncode is not None
                                      # means it died: server.describe_exit() says how
    finally:
        server.end()                  # SIGTERM to the group, SIGKILL after grace_s

Guard a multiprocessing child (the engine worker)::

    ctx = multiprocessing.get_context("spawn")
    worker = start_process(ctx, target=worker_main, args=(conn, request), title="engine")
    ...
    worker.end()

    # and first thing in worker_main, before anything that starts processes:
    guard_child(owner_pid, title="engine")   # owner_pid = os.getpid() in the parent

This module imports nothing from pytest or vLLM.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psutil

OWNER_ENV = "LLMPERF_OWNER"
TITLE_PREFIX = "llmperf-"
DEFAULT_GRACE_S = 3.0
# Sent by the kernel to a guarded multiprocessing child when its owner dies; its
# handler ends the child's whole group. SIGHUP: nothing else sends it to a process
# with no terminal, and vLLM does not handle it.
PARENT_DEATH_SIGNAL = signal.SIGHUP
_ARM_ENV = "LLMPERF_ARM_PDEATHSIG"
_PR_SET_PDEATHSIG = 1

# The reaper: stdin is a pipe whose write end only the owner holds. EOF there, or
# a new parent pid, means the owner is gone: end the group. It exits by itself
# once the group is empty. No imports beyond the standard library's core, so it
# starts in a few tens of milliseconds.
_REAPER = r"""
import os, select, signal, sys, time
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
pgid, owner, grace = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
seen = False  # a multiprocessing child forms its group a moment after it starts
def alive():
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except OSError:
        return True
def send(sig):
    try:
        os.killpg(pgid, sig)
    except OSError:
        pass
while True:
    try:
        ready = select.select([0], [], [], 0.5)[0]
    except InterruptedError:
        continue
    if ready and not os.read(0, 4096):
        break
    if os.getppid() != owner:
        break
    if alive():
        seen = True
    elif seen:
        sys.exit(0)
send(signal.SIGTERM)
try:
    os.kill(pgid, signal.SIGTERM)  # the leader, in case its group never formed
except OSError:
    pass
end = time.monotonic() + grace
while alive() and time.monotonic() < end:
    time.sleep(0.1)
send(signal.SIGKILL)
try:
    os.kill(pgid, signal.SIGKILL)
except OSError:
    pass
"""

# Starts a command with the parent-death signal set, then becomes it (the setting
# survives exec). argv[1] is the signal number (0: none).
_LAUNCHER = r"""
import ctypes, os, sys
sig, owner = int(sys.argv[1]), int(sys.argv[2])
if sig:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)
    except Exception:
        pass
    if os.getppid() != owner:
        sys.exit(137)
os.execvp(sys.argv[3], sys.argv[3:])
"""


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Linux: have the kernel send ``sig`` to this process when its parent thread ends.

    Returns False where the mechanism does not exist (macOS, other systems).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The process's own symbols include libc's (find_library would start ldconfig).
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _set_title(title: str) -> None:
    try:
        import setproctitle  # a vLLM dependency; absent elsewhere, then no title
    except ImportError:
        return
    setproctitle.setproctitle(title)


def process_title(title: str, owner_pid: int) -> str:
    return f"{TITLE_PREFIX}{title} (owner {owner_pid})"


def _end_own_group(*_: Any) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def guard_child(owner_pid: int, title: str, poll_s: float = 0.5) -> None:
    """Call first in a multiprocessing child: own group, parent-death signal, watchdog.

    The watchdog is a daemon thread that ends this process's whole group (SIGKILL)
    once the parent is gone; it works wherever ``getppid`` does, macOS included.
    """
    if os.getpgrp() != os.getpid():
        os.setpgrp()
    os.environ[OWNER_ENV] = str(owner_pid)  # for every process started from here on
    _set_title(process_title(title, owner_pid))
    # Only when the owner started us from its main thread: the kernel sends the signal
    # when the starting *thread* ends, and a helper thread may end long before the owner.
    if os.environ.pop(_ARM_ENV, "") == "1" and threading.current_thread() is threading.main_thread():
        # The parent-death signal ends the whole group, not just this process (a
        # SIGKILL would orphan vLLM's EngineCore, which holds the GPU memory).
        signal.signal(PARENT_DEATH_SIGNAL, _end_own_group)
        set_parent_death_signal(PARENT_DEATH_SIGNAL)
    if os.getppid() != owner_pid:  # the owner died before the signal was armed
        _end_own_group()

    def watch() -> None:
        while os.getppid() == owner_pid:
            time.sleep(poll_s)
        _end_own_group()

    threading.Thread(target=watch, name="llmperf-owner-watchdog", daemon=True).start()


def describe_exit(code: int | None) -> str:
    """'exited with code 1', 'killed by SIGKILL', or 'still running'."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


# Strong references: a child whose handle was dropped must still be ended at exit.
_LIVE: set[GuardedProcess] = set()
_ATEXIT_REGISTERED = False


def _end_all_at_exit() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.end(grace_s=0.0, timeout_s=5.0)


def _register(proc: GuardedProcess) -> None:
    global _ATEXIT_REGISTERED
    _LIVE.add(proc)
    if not _ATEXIT_REGISTERED:
        # Registered after multiprocessing's own handler (imported by now), so it
        # runs first: that handler joins non-daemonic children and would wait forever.
        atexit.register(_end_all_at_exit)
        _ATEXIT_REGISTERED = True


def _start_reaper(pgid: int, grace_s: float) -> subprocess.Popen[bytes] | None:
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _REAPER, str(pgid), str(os.getpid()), str(grace_s)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
            env={**os.environ, OWNER_ENV: str(os.getpid())},
        )
    except OSError:
        return None


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class GuardedProcess:
    """A child in its own process group, with a reaper; see the module docstring."""

    def __init__(self, proc: Any, title: str, grace_s: float = DEFAULT_GRACE_S) -> None:
        self._proc = proc  # multiprocessing.Process or subprocess.Popen
        self.title = title
        self.grace_s = grace_s
        self.pid: int = int(proc.pid)
        self.pgid: int = self.pid
        self._watched: dict[int, tuple[psutil.Process, str]] = {}
        self._reaper = _start_reaper(self.pgid, grace_s)
        self._ended = False
        _register(self)

    # -- state ------------------------------------------------------------------------
    @property
    def process(self) -> Any:
        """The underlying ``multiprocessing.Process`` or ``subprocess.Popen``."""
        return self._proc

    @property
    def returncode(self) -> int | None:
        """The leader's exit status once it ended (negative: the signal), else None."""
        if isinstance(self._proc, subprocess.Popen):
            return self._proc.poll()
        code: int | None = self._proc.exitcode
        return code

    def alive(self) -> bool:
        return self.returncode is None

    def describe_exit(self) -> str:
        return describe_exit(self.returncode)

    def members(self) -> list[psutil.Process]:
        """Every live process of the group and every descendant of the leader."""
        found: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(self.pid).children(recursive=True):
                found[p.pid] = p
        for p in psutil.process_iter():
            if p.pid in found or p.pid == self.pid:
                continue
            with contextlib.suppress(OSError):
                if os.getpgid(p.pid) == self.pgid:
                    found[p.pid] = p
        return [p for p in found.values() if _running(p)]

    # -- watching -----------------------------------------------------------------------
    def watch(self, match: Callable[[psutil.Process], bool]) -> list[psutil.Process]:
        """Start watching the descendants for which ``match`` is true; return the new ones."""
        new = []
        with contextlib.suppress(psutil.Error):
            for p in psutil.Process(self.pid).children(recursive=True):
                if p.pid in self._watched:
                    continue
                with contextlib.suppress(psutil.Error):
                    if _running(p) and match(p):
                        self._watched[p.pid] = (p, _name(p))
                        new.append(p)
        return new

    def lost(self) -> list[tuple[int, str]]:
        """(pid, name) of watched descendants that are gone."""
        return [(pid, name) for pid, (p, name) in self._watched.items() if not _running(p)]

    # -- ending -------------------------------------------------------------------------
    def wait_group(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the leader and the whole group to exit by themselves.

        A clean shutdown (vLLM's EngineCore unlinking its shared memory) may outlive
        the leader by a moment; ending the group before it finishes leaks that.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive() and not self.members():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def end(self, grace_s: float | None = None, timeout_s: float = 10.0) -> None:
        """End the whole group: SIGTERM, then SIGKILL after ``grace_s``; reap the leader.

        Safe to call more than once, and from an ``except``/``finally`` during Ctrl-C:
        the SIGKILL step runs even if the graceful step is interrupted.
        """
        grace = self.grace_s if grace_s is None else grace_s
        others = self.members()
        try:
            if grace > 0 and (self.alive() or others):
                _killpg(self.pgid, signal.SIGTERM)
                self._signal_leader(signal.SIGTERM)
                deadline = time.monotonic() + grace
                while time.monotonic() < deadline and (self.alive() or _any_running(others)):
                    time.sleep(0.05)
        finally:
            _killpg(self.pgid, signal.SIGKILL)
            self._signal_leader(signal.SIGKILL)  # its group may not be formed yet
            for p in others:  # descendants that left the group
                with contextlib.suppress(psutil.Error):
                    p.kill()
            self._reap_leader(timeout_s)
            with contextlib.suppress(psutil.Error):
                psutil.wait_procs(others, timeout=timeout_s)
            self._stop_reaper()
            self._ended = True
            _LIVE.discard(self)

    def _signal_leader(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, sig)

    def _reap_leader(self, timeout_s: float) -> None:
        with contextlib.suppress(Exception):
            if isinstance(self._proc, subprocess.Popen):
                self._proc.wait(timeout_s)
            else:
                self._proc.join(timeout_s)

    def _stop_reaper(self) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is None:
            return
        with contextlib.suppress(Exception):
            if reaper.stdin is not None:
                reaper.stdin.close()  # the group is gone: the reaper exits
        with contextlib.suppress(Exception):
            reaper.wait(2.0)
        if reaper.poll() is None:
            with contextlib.suppress(OSError):
                reaper.kill()
            with contextlib.suppress(Exception):
                reaper.wait(2.0)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _any_running(procs: Iterable[psutil.Process]) -> bool:
    return any(_running(p) for p in procs)


def _name(p: psutil.Process) -> str:
    try:
        cmd = p.cmdline()
        return (" ".join(cmd) if cmd else p.name()).strip()[:80]
    except psutil.Error:
        return "?"


def start_process(ctx: Any, target: Callable[..., Any], args: Sequence[Any] = (), *,
                  title: str, grace_s: float = DEFAULT_GRACE_S) -> GuardedProcess:
    """Start ``target`` in a non-daemonic multiprocessing child (spawn context advised).

    The child must call :func:`guard_child` first (with this process's pid); the
    marker is also put in its initial environment, so it is visible in
    ``/proc/<pid>/environ``.
    """
    marks = {OWNER_ENV: str(os.getpid()), _ARM_ENV: "1" if _on_main_thread() else "0"}
    previous = {k: os.environ.get(k) for k in marks}
    os.environ.update(marks)  # spawn hands the current environment to the child
    try:
        proc = ctx.Process(target=target, args=tuple(args), name=f"{TITLE_PREFIX}{title}",
                           daemon=False)
        proc.start()
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return GuardedProcess(proc, title, grace_s)


def start_command(args: Sequence[str], *, title: str, env: Mapping[str, str] | None = None,
                  grace_s: float = DEFAULT_GRACE_S, **popen_kwargs: Any) -> GuardedProcess:
    """Start a command (``subprocess.Popen`` keywords allowed) as a guarded child.

    On Linux it runs through a three-line launcher that arms the parent-death signal
    and then ``exec``s the command, so the process is the command itself.
    """
    for key in ("start_new_session", "process_group", "preexec_fn"):
        if key in popen_kwargs:
            raise ValueError(f"start_command sets {key} itself")
    full_env = dict(os.environ if env is None else env)
    full_env[OWNER_ENV] = str(os.getpid())
    sig = signal.SIGKILL if sys.platform.startswith("linux") and _on_main_thread() else 0
    argv = [sys.executable, "-c", _LAUNCHER, str(int(sig)), str(os.getpid()), *args]
    proc = subprocess.Popen(argv, env=full_env, start_new_session=True, **popen_kwargs)
    return GuardedProcess(proc, title, grace_s)


# -- leftovers from earlier runs --------------------------------------------------------


@dataclass(frozen=True)
class Leftover:
    """A process marked by this plugin, not owned by this run, holding a resource."""

    pid: int
    pgid: int | None
    owner_pid: int | None
    owner_alive: bool
    name: str
    held_gib: float

    def kill_command(self) -> str:
        if self.pgid is not None and self.pgid > 1:
            return f"kill -9 -- -{self.pgid}"
        return f"kill -9 {self.pid}"

    def describe(self) -> str:
        if self.owner_pid is None:
            whose = "started by an earlier pytest-llmperf run"
        elif self.owner_alive:
            whose = f"owned by another pytest run still going (pid {self.owner_pid})"
        else:
            whose = f"left over by an earlier run (its pytest, pid {self.owner_pid}, is gone)"
        held = f" holds {self.held_gib:.1f} GiB;" if self.held_gib else ";"
        return f"pid {self.pid} ({self.name}), {whose},{held} end it with: {self.kill_command()}"


def marker_of(p: psutil.Process) -> tuple[bool, int | None]:
    """(is marked, owner pid) from a process's environment or title."""
    owner: int | None = None
    marked = False
    with contextlib.suppress(psutil.Error, ValueError):
        value = p.environ().get(OWNER_ENV)
        if value is not None:
            return True, int(value)
    with contextlib.suppress(psutil.Error):
        cmd = " ".join(p.cmdline())
        if cmd.startswith(TITLE_PREFIX):
            marked = True
            tail = cmd.rpartition("(owner ")[2].rstrip(")")
            with contextlib.suppress(ValueError):
                owner = int(tail)
    return marked, owner


def leftovers_holding(holders: Mapping[int, float], *, owner_pid: int | None = None) -> list[Leftover]:
    """Marked processes among ``holders`` (pid -> GiB held) that this run does not own.

    ``holders`` is what NVML lists on the GPUs an engine is about to use; a pid
    NVML reports from another pid namespace is simply not found here.
    """
    me = os.getpid() if owner_pid is None else owner_pid
    found = []
    for pid, gib in sorted(holders.items()):
        try:
            p = psutil.Process(pid)
        except psutil.Error:
            continue
        marked, owner = marker_of(p)
        if not marked or owner == me:
            continue
        pgid: int | None
        try:
            pgid = os.getpgid(pid)
        except OSError:
            pgid = None
        alive = owner is not None and psutil.pid_exists(owner) and owner != pid
        found.append(Leftover(pid, pgid, owner, alive, _name(p), float(gib)))
    return found
