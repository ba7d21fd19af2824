"""Engine faults without an engine: log_reason picks vLLM's real reason out of a log,
never a harmless warning; a ghost of an earlier run on the GPU is named before vLLM starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pytest_llmperf import procs
from pytest_llmperf.engine import NO_ERROR_LOGGED, EngineError, check_gpu_leftovers, log_reason

# Shaped like vLLM 0.32's CPU log: a tokenizer warning with a traceback, then INFO lines.
WARNINGS_ONLY = """\
(llmperf-engine pid=12646) INFO 11-25 01:13:19 [core.py:100] Initializing a V1 LLM engine
(llmperf-engine pid=12646) WARNING 11-25 01:14:22 [base.py:380] Tokenizer unavailable:
(llmperf-engine pid=12646) WARNING 11-25 01:14:22 [base.py:380] Traceback (most recent call last):
(llmperf-engine pid=12646) WARNING 11-25 01:14:22 [base.py:380]   File "vllm/renderers/base.py", line 217, in get_tokenizer
(llmperf-engine pid=12646) WARNING 11-25 01:14:22 [base.py:380]     raise ValueError("Tokenizer not available")
(llmperf-engine pid=12646) WARNING 11-25 01:14:22 [base.py:380] ValueError: Tokenizer not available when `skip_tokenizer_init=True`
Triton is installed, but doesn't include CPU backend. Disabling Triton.
/venv/vllm/triton_utils/dispatcher.py:138: FutureWarning: `torch.distributed.reduce_op` is deprecated
  if hasattr(value, "__dict__"):
[W1125 01:14:15.736130389 utils.cpp:68] Warning: NUMA binding: Using MEMBIND policy
"""

ENGINE_CORE_FAILED = WARNINGS_ONLY + """\
(EngineCore_DP0 pid=77) ERROR 11-25 01:15:01 [core.py:1020] EngineCore failed to start.
(EngineCore_DP0 pid=77) ERROR 11-25 01:15:01 [core.py:1020] Traceback (most recent call last):
(EngineCore_DP0 pid=77) ERROR 11-25 01:15:01 [core.py:1020]   File "vllm/v1/engine/core.py", line 1011, in run_engine_core
(EngineCore_DP0 pid=77) ERROR 11-25 01:15:01 [core.py:1020]     engine_core = EngineCoreProc(*args, **kwargs)
(EngineCore_DP0 pid=77) ERROR 11-25 01:15:01 [core.py:1020]                   ^^^^^^^^^^^^^^^
(EngineCore_DP0 pid=77) ERROR 11-25 01:15:01 [core.py:1020] ValueError: To serve at least one request with max_model_len (100000), 12.2 GiB KV cache is needed
Process EngineCore_DP0:
Traceback (most recent call last):
  File "multiprocessing/process.py", line 314, in _bootstrap
    self.run()
ValueError: To serve at least one request with max_model_len (100000), 12.2 GiB KV cache is needed
(llmperf-engine pid=12646) WARNING 11-25 01:15:02 [tokenizer.py:9] a warning after the error
RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {'EngineCore_DP0': 1}
"""

CUDA_OOM = """\
INFO 11-25 01:00:00 [gpu_model_runner.py:1] Loading model
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB
"""


def test_warnings_and_info_never_count_as_the_reason() -> None:
    assert log_reason(WARNINGS_ONLY) == NO_ERROR_LOGGED
    assert log_reason("") == NO_ERROR_LOGGED


def test_the_root_cause_wins_over_vllms_wrapper() -> None:
    reason = log_reason(ENGINE_CORE_FAILED)
    lines = reason.splitlines()
    assert "EngineCore failed to start." in lines
    assert lines[-1].startswith("ValueError: To serve at least one request")
    assert len(lines) == 2  # deduplicated; frames, wrappers and the late warning dropped
    assert "Tokenizer" not in reason
    assert "Engine core initialization failed" not in reason


def test_a_wrapper_alone_is_still_reported() -> None:
    text = WARNINGS_ONLY + ("RuntimeError: Engine core initialization failed. See root cause above. "
                            "Failed core proc(s): {}\n")
    assert "Failed core proc(s): {}" in log_reason(text)


def test_exceptions_with_dotted_names_and_fatal_lines() -> None:
    assert log_reason(CUDA_OOM) == CUDA_OOM.splitlines()[1]
    assert log_reason("INFO 11-25 01:00:00 [x.py:1] ok\nKilled\n") == "Killed"
    assert log_reason("Fatal Python error: Segmentation fault\n").startswith("Fatal Python error")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.fixture
def ghost():
    """A process marked as started by a pytest run that is gone."""
    env = {k: v for k, v in os.environ.items() if k != procs.OWNER_ENV}
    env[procs.OWNER_ENV] = str(_dead_pid())
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], env=env,
                         start_new_session=True)
    time.sleep(0.2)  # let it exec, so /proc shows its environment
    yield p.pid
    p.kill()
    p.wait()


def test_a_ghost_on_the_gpu_fails_the_engine_start_before_vllm(ghost) -> None:
    # The GPU side faked: what NVML would list as holding memory on the engine's GPUs.
    with pytest.raises(EngineError) as info:
        check_gpu_leftovers({ghost: 70.2, os.getpid(): 1.0})
    message = str(info.value)
    assert "held by a process of another pytest-llmperf run" in message
    assert f"pid {ghost} " in message and "70.2 GiB" in message
    assert f"kill -9 -- -{ghost}" in message
    assert not info.value.retryable
    check_gpu_leftovers({})  # nothing held: no error


def test_a_worker_that_exits_before_its_log_is_not_blamed_on_a_signal(tmp_path) -> None:
    """An interpreter that cannot run the engine worker (``--llmperf-ab-python`` pointing
    at a broken environment): the worker exits with a code before it writes its log,
    and the reason says so instead of guessing a SIGKILL or an OOM kill."""
    from pytest_llmperf.config import EngineConfig
    from pytest_llmperf.engine import start_engine

    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\n"
                      'case "$*" in *--multiprocessing-fork*) echo "broken env" >&2; exit 3;; esac\n'
                      f'exec "{sys.executable}" "$@"\n')
    broken.chmod(0o755)
    with pytest.raises(EngineError) as info:
        start_engine(EngineConfig(model="tiny-llama-2l", enforce_eager=True), "cpu",
                     log_dir=str(tmp_path / "logs"), start_timeout_s=60, run_timeout_s=60,
                     python=str(broken), retries=0)
    reason = info.value.reason
    assert "exited with code 3" in reason
    assert "the worker ended before writing one" in reason
    assert "signal" not in reason
