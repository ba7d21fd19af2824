"""Progress lines: vLLM's start-up phases and our trial lines read from the engine log."""

from __future__ import annotations

from pathlib import Path

import fake_engine
import pytest

from pytest_llmperf.progress import LogFollower, ProgressEvent, trial_line, watcher

# Lines as vLLM 0.25 writes them on an H100 (abridged).
GPU_LOG = """\
(EngineCore_DP0 pid=1) INFO 11-23 10:00:01 [core.py:93] Initializing a V1 LLM engine (v0.25.0) with config: model='/cards/llama-3.1-8b'
(EngineCore_DP0 pid=1) INFO 11-23 10:00:03 [gpu_model_runner.py:2338] Starting to load model /cards/llama-3.1-8b...
(EngineCore_DP0 pid=1) INFO 11-23 10:00:09 [gpu_model_runner.py:2370] Model loading took 14.9889 GiB and 5.412 seconds
(EngineCore_DP0 pid=1) INFO 11-23 10:00:15 [backends.py:539] Dynamo bytecode transform time: 5.80 s
(EngineCore_DP0 pid=1) INFO 11-23 10:00:30 [monitor.py:34] torch.compile takes 20.10 s in total
(EngineCore_DP0 pid=1) INFO 11-23 10:00:32 [kv_cache_utils.py:864] GPU KV cache size: 444,928 tokens
(EngineCore_DP0 pid=1) INFO 11-23 10:00:32 [kv_cache_utils.py:868] Maximum concurrency for 1,024 tokens per request: 434.50x
Capturing CUDA graphs (mixed prefill-decode, PIECEWISE): 100%|##########| 67/67
(EngineCore_DP0 pid=1) INFO 11-23 10:00:40 [core.py:214] init engine (profile, create kv cache, warmup model) took 30.77 seconds
"""


def test_follower_reports_each_start_up_phase_once(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text(GPU_LOG[:150])  # the first lines, the last one cut mid-way
    follower = LogFollower(str(log))
    first = [e.text for e in follower.events()]
    assert first == ["initialising vLLM 0.25.0"]
    with log.open("a") as f:
        f.write(GPU_LOG[150:] + GPU_LOG)  # the rest, then everything again
        f.write(trial_line("trial", "1/3: 8.10 s, 3,087.1 tok/s") + "\n")
    rest = list(follower.events())
    assert [e.text for e in rest] == [
        "loading weights",
        "weights loaded: 14.9889 GiB in 5.4 s",
        "compiling (torch.compile; cached after the first start)",
        "KV cache: 444,928 tokens",
        "capturing CUDA graphs",
        "profiled, KV cache allocated, warmed up in 30.8 s",
        "1/3: 8.10 s, 3,087.1 tok/s",
    ]
    assert rest[-1].kind == "trial"


def test_watcher_from_end_skips_earlier_runs(tmp_path: Path) -> None:
    log = tmp_path / "engine.log"
    log.write_text(trial_line("trial", "1/1: old") + "\n")
    seen: list[ProgressEvent] = []
    tick = watcher(str(log), seen.append, from_end=True)
    with log.open("a") as f:
        f.write(trial_line("warmup", "1 untimed round(s)") + "\n")
    tick()
    assert seen == [ProgressEvent("warmup", "1 untimed round(s)")]
    watcher(str(tmp_path / "missing.log"), seen.append)()  # no file yet: nothing, no error


def test_plugin_shows_engine_starts_unless_quiet(pytester: pytest.Pytester,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    fake_engine.install(monkeypatch)
    pytester.makepyfile(test_suite="""
        from pytest_llmperf import perf

        @perf(model="tiny-llama-2l", device="cpu", max_model_len=512)
        def test_a(llmperf):
            llmperf.run()
    """)
    loud = pytester.runpytest()
    loud.assert_outcomes(passed=1)
    loud.stdout.fnmatch_lines(["[[]llmperf[]] starting engine tiny-llama-2l tp1*[[]cpu[]]",
                               "[[]llmperf[]]   engine stopped in *.* s"])
    quiet = pytester.runpytest("-q")
    quiet.assert_outcomes(passed=1)
    assert "starting engine" not in quiet.stdout.str()


def test_worker_announces_each_trial_in_its_log(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    """The engine worker's trial lines (printed to its log) are what the follower reads."""
    from test_workload import WL, ScriptedEngine, _llm

    from pytest_llmperf.engine_worker import _trial_announcer
    from pytest_llmperf.workload import measure

    trials = measure(_llm(ScriptedEngine()), WL, vocab_size=1000,
                     on_trial=_trial_announcer(WL.trials))
    printed = capsys.readouterr().out
    log = tmp_path / "engine.log"
    log.write_text(printed)
    events = list(LogFollower(str(log)).events())
    assert [e.kind for e in events] == ["trial"] * len(trials)
    assert events[0].text.startswith(f"1/{WL.trials}: ") and events[0].text.endswith(" tok/s")


def test_the_engine_wait_loop_ticks_while_it_waits() -> None:
    """The engine wait loop reads the log on every turn, and once more at the end."""
    from pytest_llmperf.engine import EngineHandle

    class Conn:
        polls = 0

        def poll(self, timeout: float) -> bool:
            self.polls += 1
            return self.polls >= 3

        def recv(self) -> dict[str, str]:
            return {"kind": "ready"}

    class Alive:  # a guarded engine process whose every process lives
        pid = 1

        def alive(self) -> bool:
            return True

        def lost(self) -> list[tuple[int, str]]:
            return []

        def watch(self, match: object) -> list[object]:
            return []

    handle = EngineHandle(None, None, "cpu", {}, "unused.log",  # type: ignore[arg-type]
                          Alive(), Conn())  # type: ignore[arg-type]
    ticks: list[int] = []
    msg = handle._wait("start", 10.0, lambda: ticks.append(1))
    assert msg == {"kind": "ready"}
    assert len(ticks) == 4  # before each of 3 polls, and after the reply


def test_launch_note_tells_the_wait_beyond_vllms_own_start() -> None:
    from pytest_llmperf.engine import launch_note

    assert launch_note({"start_time_s": 13.4}) == ""  # an engine that did not say
    assert launch_note({"launch_s": 21.26}) == " (21.3 s from spawn)"
    assert (launch_note({"launch_s": 21.26, "import_s": 6.04})
            == " (21.3 s from spawn, 6.0 s of it importing vLLM)")
