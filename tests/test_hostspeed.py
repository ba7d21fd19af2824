"""The runner-speed probe and how the stored-baseline gate uses it (hostspeed.py)."""

from __future__ import annotations

import itertools
import json

import pytest
from factories import make_result

from pytest_llmperf.baselines import BaselineEntry, BaselineStore
from pytest_llmperf.fingerprint import collect_fingerprint
from pytest_llmperf.gate import compare_entry
from pytest_llmperf.hostspeed import (
    MAX_RATIO,
    PROBE_VERSION,
    HostSpeed,
    measure_host_speed,
    state_note,
)


def _speed(score: float, version: int = PROBE_VERSION) -> HostSpeed:
    return HostSpeed(score=score, spread=0.01, parts={"python": score}, version=version)


def test_the_probe_times_every_part_with_a_fake_clock() -> None:
    ticks = itertools.count(0.0, 0.5)  # every part takes 0.5 s per call
    speed = measure_host_speed(repeats=3, clock=lambda: next(ticks))
    assert set(speed.parts) == {"python", "compute"}
    assert speed.parts == pytest.approx({"python": 2.0, "compute": 2.0})
    assert speed.score == pytest.approx(2.0) and speed.spread == pytest.approx(0.0)
    assert HostSpeed.from_json(json.loads(json.dumps(speed.to_json()))) == speed


def test_the_probe_on_this_machine_is_positive_and_quick() -> None:
    speed = measure_host_speed(repeats=2)
    assert speed.score > 0 and all(v > 0 for v in speed.parts.values())
    with pytest.raises(ValueError, match="repeats=0"):
        measure_host_speed(repeats=0)


@pytest.mark.parametrize(("now", "then", "says"), [
    (100.0, 100.0, ""),
    (100.0 * MAX_RATIO * 0.99, 100.0, ""),  # one speed state
    (100.0 / MAX_RATIO / 0.99, 100.0, ""),
    (60.0, 100.0, "reads this runner 40% slower"),
    (160.0, 100.0, "reads this runner 60% faster"),
])
def test_the_state_note_speaks_only_beyond_one_state(now: float, then: float, says: str) -> None:
    note = state_note(_speed(now), _speed(then))
    assert says in note and bool(note) is bool(says)
    if note:
        assert "compared unscaled" in note and "--llmperf-update-baselines" in note


def test_no_state_note_without_both_probes_of_one_version() -> None:
    assert state_note(None, _speed(1.0)) == ""
    assert state_note(_speed(1.0), None) == ""
    assert state_note(_speed(1.0), _speed(9.0, version=PROBE_VERSION + 1)) == ""


def _entry(result, speed: HostSpeed | None) -> BaselineEntry:  # type: ignore[no-untyped-def]
    return BaselineEntry.from_starts("t", [result], collect_fingerprint("cpu"), None,
                                     host_speed=speed.to_json() if speed else None)


def test_the_probe_never_scales_the_baseline() -> None:
    """2026-12-04, unchanged run aa-5: the probe read 189 against 133.5 at the recording
    (1.42x) while the engines ran 1.08x. Scaled by the probe, the baseline moved 42% and
    TTFT failed; compared as it is, the run is within tolerance."""
    base = make_result(output_tok_s=1000.0, tpot_ms=10.0, device="cpu")
    entry = _entry(base, _speed(133.5))
    now = make_result(output_tok_s=1080.0, tpot_ms=10.0 / 1.08, device="cpu")
    status, comparison, messages = compare_entry(now, entry, {"output_tok_s": 0.15},
                                                 host_speed=_speed(189.1))
    assert status == "compared" and comparison is not None and comparison.state == "pass", \
        comparison.table()
    row = {r.metric: r for r in comparison.rows}["output_tok_s"]
    assert row.baseline == pytest.approx(1000.0) and row.change == pytest.approx(0.08)
    assert not messages  # one speed state: nothing to say


def test_a_loss_is_caught_whatever_the_probe_reads() -> None:
    """2026-12-04, planted 20% loss: the probe read the runner 1.3x faster. The loss is
    measured against the recording as it is, so neither reading hides it."""
    base = make_result(output_tok_s=1000.0, tpot_ms=10.0, device="cpu")
    entry = _entry(base, _speed(100.0))
    worse = make_result(output_tok_s=800.0, tpot_ms=12.5, device="cpu")
    for probe in (70.0, 100.0, 130.0):
        _, comparison, _ = compare_entry(worse, entry, {"output_tok_s": 0.15}, host_speed=_speed(probe))
        assert comparison is not None and comparison.state == "regression", probe
        row = {r.metric: r for r in comparison.rows}["output_tok_s"]
        assert row.change == pytest.approx(-0.20)


def test_a_probe_beyond_every_state_is_said_and_compared_unscaled() -> None:
    """The main job's case on 2026-12-03: the probe read 37-46% slow, the engines ran at
    the baseline's speed. The unchanged run passes and a real loss still fails; the
    message points at recording the state."""
    base = make_result(output_tok_s=1000.0, device="cpu")
    entry = _entry(base, _speed(100.0))
    status, same, messages = compare_entry(make_result(output_tok_s=1000.0, device="cpu"), entry,
                                           {"output_tok_s": 0.15}, host_speed=_speed(40.0))
    assert status == "compared" and same is not None and same.state == "pass", same.table()
    assert any("compared unscaled" in m and "60% slower" in m for m in messages)
    _, worse, _ = compare_entry(make_result(output_tok_s=700.0, device="cpu"), entry,
                                {"output_tok_s": 0.15}, host_speed=_speed(40.0))
    assert worse is not None and worse.state == "regression"


def test_gpu_results_and_old_entries_are_not_scaled() -> None:
    base = make_result(output_tok_s=1000.0)
    slow = make_result(output_tok_s=750.0)
    _, comparison, messages = compare_entry(slow, _entry(base, _speed(100.0)), {},
                                            host_speed=_speed(75.0))
    assert comparison is not None and comparison.state == "regression" and not messages
    cpu_base = make_result(output_tok_s=1000.0, device="cpu")
    _, old, _ = compare_entry(make_result(output_tok_s=750.0, device="cpu"), _entry(cpu_base, None),
                              {}, host_speed=_speed(75.0))
    assert old is not None and old.state == "regression"


def test_the_probe_round_trips_through_a_baseline_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = BaselineStore(tmp_path, "cpu-test")
    store.update("suites/test_x.py", {"t": _entry(make_result(device="cpu"), _speed(42.0))})
    loaded = store.get("suites/test_x.py", "t")
    assert loaded is not None and HostSpeed.from_json(loaded.host_speed or {}) == _speed(42.0)


def test_a_malformed_probe_in_a_baseline_file_names_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pytest_llmperf.baselines import BaselineError

    store = BaselineStore(tmp_path, "cpu-test")
    path = store.update("suites/test_x.py", {"t": _entry(make_result(device="cpu"), _speed(42.0))})
    doc = json.loads(path.read_text())
    doc["entries"]["t"]["host_speed"]["score"] = -1
    path.write_text(json.dumps(doc))
    with pytest.raises(BaselineError, match="test_x.json"):
        store.load("suites/test_x.py")


# -- through the plugin (fake engine) ------------------------------------------------


def test_the_plugin_records_the_probe_and_compares_unscaled(pytester: pytest.Pytester,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_engine

    from pytest_llmperf import hostspeed

    fake = fake_engine.install(monkeypatch)
    score = {"now": 100.0}
    probes: list[float] = []

    def probe() -> HostSpeed:
        probes.append(score["now"])
        return _speed(score["now"])

    monkeypatch.setattr(hostspeed, "measure_host_speed", probe)
    pytester.makepyfile(test_suite='from pytest_llmperf import perf\n\n'
                        '@perf(model="tiny-llama-2l", device="cpu", max_model_len=512, '
                        'tolerances={"output_tok_s": 0.15})\n'
                        'def test_a(llmperf):\n    llmperf.run()\n')
    recorded = pytester.runpytest("--llmperf-update-baselines")
    recorded.assert_outcomes(passed=1)
    recorded.stdout.fnmatch_lines(["device: cpu, baselines: *, runner speed probe: 100 (python 100/s)"])
    [path] = list((pytester.path / "baselines").rglob("test_suite.json"))
    assert json.loads(path.read_text())["entries"]["test_a"]["host_speed"]["score"] == 100.0
    assert probes == [100.0]  # once per session

    # The probe reads 25% slow, the engine runs at the baseline's speed: it passes.
    score["now"] = 75.0
    pytester.runpytest().assert_outcomes(passed=1)
    # A 25% loss is a regression whatever the probe reads (it used to be scaled away).
    fake.tok_s = 750.0
    pytester.runpytest("--llmperf-confirm=0").assert_outcomes(failed=1)
    probes.clear()
    pytester.runpytest("--llmperf-no-speed-probe", "--llmperf-confirm=0").assert_outcomes(failed=1)
    assert probes == []
    # Beyond one speed state of the recording: said, and still compared.
    score["now"] = 60.0
    far = pytester.runpytest("--llmperf-confirm=0")
    far.assert_outcomes(failed=1)
    far.stdout.fnmatch_lines(["*the speed probe reads this runner 40% slower*"])
    fake.tok_s = 1000.0
    pytester.runpytest().assert_outcomes(passed=1)
