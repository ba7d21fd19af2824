"""Baselines per runner speed state: an entry keeps one recording per state the CPU
runner was recorded in, and the gate compares with the state nearest the current probe
(``BaselineEntry.keeping_states_of``, ``gate.speed_state``)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from factories import make_result

from pytest_llmperf.baselines import (
    MAX_SPEED_STATES,
    BaselineEntry,
    BaselineError,
    BaselineStore,
    load_schema,
)
from pytest_llmperf.config import Workload
from pytest_llmperf.fingerprint import collect_fingerprint
from pytest_llmperf.gate import compare_entry, speed_state
from pytest_llmperf.hostspeed import PROBE_VERSION, HostSpeed

TOL = {"output_tok_s": 0.10, "tpot_p50_ms": 0.10}


def _speed(score: float, version: int = PROBE_VERSION) -> HostSpeed:
    return HostSpeed(score=score, spread=0.01, parts={"python": score}, version=version)


def _recording(tok_s: float, score: float | None, when: str = "2026-12-03T09:00:00+00:00",
               workload: Workload | None = None) -> BaselineEntry:
    result = make_result(output_tok_s=tok_s, tpot_ms=10_000.0 / tok_s, device="cpu",
                         workload=workload)
    return BaselineEntry.from_starts("t", [result], collect_fingerprint("cpu"), "abc", when,
                                     host_speed=_speed(score).to_json() if score else None)


def _two_states() -> BaselineEntry:
    """The main job's machine: 1,000 tok/s at probe 64, 3,000 at probe 133."""
    slow = _recording(1000.0, 64.0, "2026-12-03T09:00:00+00:00")
    return _recording(3000.0, 133.0, "2026-12-03T13:00:00+00:00").keeping_states_of(slow)


def _scores(entry: BaselineEntry) -> list[float]:
    return [HostSpeed.from_json(e.host_speed or {}).score for e in entry.states()]


# -- recording ------------------------------------------------------------------------


def test_a_recording_in_another_state_keeps_the_old_one() -> None:
    entry = _two_states()
    assert _scores(entry) == [133.0, 64.0]
    assert [e.metrics["output_tok_s"].median for e in entry.states()] == pytest.approx([3000, 1000])
    assert [e.recorded_at[11:13] for e in entry.states()] == ["13", "09"]
    assert all(not e.speed_states for e in entry.states())


def test_a_recording_in_the_same_state_replaces_it() -> None:
    # 64 -> 80 is within one speed state (1.5x): one recording serves both.
    again = _recording(1100.0, 80.0).keeping_states_of(_two_states())
    assert _scores(again) == [80.0, 133.0]
    # 133 -> 180 likewise: the old fast one goes, the slow one stays.
    fast = _recording(3300.0, 180.0).keeping_states_of(_two_states())
    assert _scores(fast) == [180.0, 64.0]


def test_at_most_three_states_newest_first() -> None:
    entry = _recording(500.0, 35.0)
    for tok_s, score in ((1000.0, 64.0), (3000.0, 133.0), (9000.0, 300.0)):
        entry = _recording(tok_s, score).keeping_states_of(entry)
    assert _scores(entry) == [300.0, 133.0, 64.0]
    assert len(entry.states()) == MAX_SPEED_STATES


@pytest.mark.parametrize("change", ["config", "software", "unprobed", "probe version", "none"])
def test_nothing_is_kept_of_another_config_software_or_probe(change: str) -> None:
    old = _recording(1000.0, 64.0)
    new = _recording(3000.0, 133.0)
    if change == "config":
        new = _recording(3000.0, 133.0, workload=Workload(batch=4, input_len=128, output_len=128))
    elif change == "software":
        old = dataclasses.replace(old, fingerprint={**old.fingerprint, "vllm_version": "0.31.0"})
    elif change == "unprobed":
        old = _recording(1000.0, None)
    elif change == "probe version":
        old = dataclasses.replace(old, host_speed=_speed(64.0, PROBE_VERSION + 1).to_json())
    assert new.keeping_states_of(None if change == "none" else old).speed_states == ()
    assert _recording(3000.0, None).keeping_states_of(old).speed_states == ()


def test_ignored_workload_keys_do_not_make_a_state_stale() -> None:
    old = _recording(1000.0, 64.0, workload=Workload(batch=8, input_len=128, output_len=128,
                                                     trials=5))
    assert len(_recording(3000.0, 133.0).keeping_states_of(old).speed_states) == 1


# -- the file -------------------------------------------------------------------------


def test_states_round_trip_through_a_valid_file(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, "cpu-test")
    path = store.update("suites/test_x.py", {"t": _two_states()})
    doc = json.loads(path.read_text())
    jsonschema.Draft202012Validator(load_schema()).validate(doc)
    assert [s["host_speed"]["score"] for s in doc["entries"]["t"]["speed_states"]] == [64.0]
    assert store.get("suites/test_x.py", "t") == _two_states()
    # One state only: no key at all, so such files read as before.
    plain = store.update("suites/test_y.py", {"t": _recording(1000.0, 64.0)})
    assert "speed_states" not in json.loads(plain.read_text())["entries"]["t"]


def test_the_schema_allows_the_states_an_entry_keeps() -> None:
    states = load_schema()["$defs"]["entry"]["properties"]["speed_states"]
    assert states["maxItems"] == MAX_SPEED_STATES - 1


@pytest.mark.parametrize(("edit", "where"), [
    (lambda s: s["metrics"]["output_tok_s"].update(median=1.0),
     'speed_states[0].metrics.output_tok_s.median'),
    (lambda s: s.pop("host_speed"), "speed_states[0]"),
    (lambda s: s.update(host_speed=None), "speed_states[0].host_speed"),
    (lambda s: s["metrics"].update(tok_s=s["metrics"]["output_tok_s"]), "speed_states[0].metrics"),
])
def test_a_broken_state_names_file_and_path(tmp_path: Path, edit: Callable[[dict[str, Any]], Any],
                                            where: str) -> None:
    store = BaselineStore(tmp_path, "cpu-test")
    path = store.update("suites/test_x.py", {"t": _two_states()})
    doc = json.loads(path.read_text())
    edit(doc["entries"]["t"]["speed_states"][0])
    path.write_text(json.dumps(doc))
    with pytest.raises(BaselineError, match="test_x.json") as info:
        store.load("suites/test_x.py")
    assert f'$.entries.t.{where}' in str(info.value)


def test_too_many_states_is_refused(tmp_path: Path) -> None:
    store = BaselineStore(tmp_path, "cpu-test")
    path = store.update("suites/test_x.py", {"t": _two_states()})
    doc = json.loads(path.read_text())
    doc["entries"]["t"]["speed_states"] *= MAX_SPEED_STATES
    path.write_text(json.dumps(doc))
    with pytest.raises(BaselineError, match="speed_states"):
        store.load("suites/test_x.py")


# -- the gate -------------------------------------------------------------------------


@pytest.mark.parametrize(("probe", "expected"), [
    (133.0, 133.0), (190.0, 133.0), (64.0, 64.0), (35.0, 64.0), (90.0, 64.0), (95.0, 133.0),
])
def test_the_nearest_state_is_chosen(probe: float, expected: float) -> None:
    chosen, why = speed_state(_two_states(), _speed(probe))
    assert _scores(chosen) == [expected]
    assert f"nearest this runner's probe ({probe:.4g}): {expected:.4g}" in why


def test_without_a_probe_the_newest_state_is_chosen() -> None:
    chosen, why = speed_state(_two_states(), None)
    assert _scores(chosen) == [133.0] and "no comparable probe" in why
    assert speed_state(_recording(1.0, 64.0), _speed(133.0))[1] == ""


@pytest.mark.parametrize(("probe", "tok_s", "state"), [
    (133.0, 3000.0, "pass"),        # fast state, unchanged
    (133.0, 2400.0, "regression"),  # fast state, a planted 20% loss
    (64.0, 1000.0, "pass"),         # slow state, unchanged
    (64.0, 800.0, "regression"),    # slow state, a planted 20% loss
])
def test_a_20_percent_loss_fails_in_either_state(probe: float, tok_s: float, state: str) -> None:
    """Against one recording the fast state cannot see the loss (2,400 against 1,000
    reads as an improvement, unscaled beyond MAX_RATIO); against its own state it can."""
    result = make_result(output_tok_s=tok_s, tpot_ms=10_000.0 / tok_s, device="cpu")
    status, comparison, messages = compare_entry(result, _two_states(), TOL,
                                                 host_speed=_speed(probe))
    assert status == "compared" and comparison is not None
    assert comparison.state == state, comparison.table()
    assert any("2 runner speed states" in m for m in messages)


def test_the_chosen_state_is_compared_unscaled() -> None:
    """Within a state the probe does not follow the engines (2026-12-04: 127-200 beside
    engines at 1.03-1.22x), so the recording is compared as it is."""
    result = make_result(output_tok_s=3300.0, tpot_ms=10_000.0 / 3300.0, device="cpu")
    _, comparison, messages = compare_entry(result, _two_states(), TOL, host_speed=_speed(146.3))
    assert comparison is not None
    assert comparison.state == "pass", comparison.table()
    row = {r.metric: r for r in comparison.rows}["output_tok_s"]
    assert row.baseline == pytest.approx(3000.0) and row.change == pytest.approx(0.10)
    assert not any("faster" in m or "scaled" in m for m in messages)


def test_gpu_results_ignore_states() -> None:
    entry = _two_states()
    result = make_result(output_tok_s=1000.0, tpot_ms=10.0)  # a GPU result
    _, comparison, messages = compare_entry(result, entry, TOL, host_speed=_speed(64.0))
    assert comparison is not None and comparison.state == "regression"
    assert not any("speed states" in m for m in messages)


# -- through the plugin (fake engine) ------------------------------------------------


def test_the_plugin_keeps_a_state_per_probe(pytester: pytest.Pytester,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_engine

    from pytest_llmperf import hostspeed

    fake = fake_engine.install(monkeypatch)
    score = {"now": 64.0}
    monkeypatch.setattr(hostspeed, "measure_host_speed", lambda: _speed(score["now"]))
    pytester.makepyfile(test_suite='from pytest_llmperf import perf\n\n'
                        '@perf(model="tiny-llama-2l", device="cpu", max_model_len=512, '
                        'tolerances={"output_tok_s": 0.10})\n'
                        'def test_a(llmperf):\n    llmperf.run()\n')
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    fake.tok_s, score["now"] = 3000.0, 133.0
    second = pytester.runpytest("--llmperf-update-baselines", "-rA")
    second.assert_outcomes(passed=1)
    [path] = list((pytester.path / "baselines").rglob("test_suite.json"))
    stored = json.loads(path.read_text())["entries"]["test_a"]
    assert stored["host_speed"]["score"] == 133.0
    assert [s["host_speed"]["score"] for s in stored["speed_states"]] == [64.0]

    # Each state passes unchanged and fails a 20% loss, against its own recording.
    for tok_s, probe in ((3000.0, 133.0), (1000.0, 64.0)):
        fake.tok_s, score["now"] = tok_s, probe
        same = pytester.runpytest("--llmperf-confirm=0")
        same.assert_outcomes(passed=1)
        fake.tok_s = tok_s * 0.8
        worse = pytester.runpytest("--llmperf-confirm=0")
        worse.assert_outcomes(failed=1)
        worse.stdout.fnmatch_lines([f"*nearest this runner's probe ({probe:.4g}): {probe:.4g}*"])
