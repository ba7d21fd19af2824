"""An owner process for tests/test_procs.py: starts a guarded child tree, prints its pids.

``python procs_owner.py command|process|exit``: the child (a command, or a
multiprocessing child calling ``guard_child``) ignores SIGTERM and starts a
grandchild that ignores it too, like vLLM's EngineCore. The owner prints one JSON
line ``{"owner", "reaper", "pids"}`` once the grandchild is up, then sleeps (or, for
``exit``, returns without ending the child: the atexit handler must).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time

from pytest_llmperf import procs

# Ignores SIGTERM, starts a grandchild that does too, sleeps.
STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "if len(sys.argv) > 1:\n"
    "    subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)'])\n"
    "time.sleep(600)\n"
)


def child(owner: int) -> None:
    procs.guard_child(owner, title="test-child")
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", STUBBORN])
    time.sleep(600)


def main(mode: str) -> None:
    if mode == "command":
        guarded = procs.start_command([sys.executable, "-c", STUBBORN, "grandchild"],
                                      title="test-command")
    else:
        ctx = multiprocessing.get_context("spawn")
        guarded = procs.start_process(ctx, child, (os.getpid(),), title="test-child")
    deadline = time.monotonic() + 60
    while not guarded.members() and time.monotonic() < deadline:
        time.sleep(0.1)
    reaper = guarded._reaper.pid if guarded._reaper is not None else None
    pids = [guarded.pid] + [p.pid for p in guarded.members()]
    print(json.dumps({"owner": os.getpid(), "reaper": reaper, "pids": pids}), flush=True)
    if mode == "exit":
        return
    time.sleep(600)


if __name__ == "__main__":
    main(sys.argv[1])
