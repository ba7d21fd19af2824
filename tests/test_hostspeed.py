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
    DEAD_BAND,
    PROBE_VERSION,
    HostSpeed,
    adjustment,
    measure_host_speed,
)
from pytest_llmperf.metrics import speed_exponent


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


def test_speed_exponents_follow_the_units() -> None:
    assert speed_exponent("output_tok_s") == 1 and speed_exponent("requests_s") == 1
    assert speed_exponent("tpot_p50_ms") == -1 and speed_exponent("e2e_p99_ms") == -1
    assert speed_exponent("kv_cache_tokens") == 0 and speed_exponent("peak_mem_gib") == 0
    with pytest.raises(KeyError, match="unknown metric"):
        speed_exponent("tok_s")


@pytest.mark.parametrize(("now", "then", "factor", "says"), [
    (100.0, 100.0, 1.0, ""),
    (100.0 * (1 + DEAD_BAND * 0.9), 100.0, 1.0, ""),  # inside the dead band
    (75.0, 100.0, 0.75, "25% slower"),
    (130.0, 100.0, 1.3, "30% faster"),
    (60.0, 100.0, 1.0, "compared unscaled: the probe reads this runner 40% slower"),
    (160.0, 100.0, 1.0, "re-record"),
])
def test_adjustment(now: float, then: float, factor: float, says: str) -> None:
    adj = adjustment(_speed(now), _speed(then))
    assert adj is not None
    assert adj.factor == pytest.approx(factor)
    assert says in adj.message and bool(adj.message) is bool(says)


def test_no_adjustment_without_both_probes_of_one_version() -> None:
    assert adjustment(None, _speed(1.0)) is None
    assert adjustment(_speed(1.0), None) is None
    assert adjustment(_speed(1.0), _speed(2.0, version=PROBE_VERSION + 1)) is None


def _entry(result, speed: HostSpeed | None) -> BaselineEntry:  # type: ignore[no-untyped-def]
    return BaselineEntry.from_starts("t", [result], collect_fingerprint("cpu"), None,
                                     host_speed=speed.to_json() if speed else None)


def test_a_slow_runner_is_not_a_regression_once_scaled() -> None:
    """The CI case: every figure 25% slower because the runner is; the probe says so."""
    base = make_result(output_tok_s=1000.0, tpot_ms=10.0, device="cpu")
    slow = make_result(output_tok_s=750.0, tpot_ms=10.0 / 0.75, device="cpu")
    entry = _entry(base, _speed(100.0))
    status, unscaled, _ = compare_entry(slow, entry, {})
    assert status == "compared" and unscaled is not None and unscaled.state == "regression"
    status, scaled, messages = compare_entry(slow, entry, {}, host_speed=_speed(75.0))
    assert status == "compared" and scaled is not None and scaled.state == "pass", scaled.table()
    assert any("25% slower" in m and "scaled by 0.75" in m for m in messages)
    row = {r.metric: r for r in scaled.rows}["output_tok_s"]
    assert row.baseline == pytest.approx(750.0) and row.current == pytest.approx(750.0)


def test_a_real_regression_on_a_slow_runner_still_fails() -> None:
    """Slowed 25% by the runner and another 30% by the code: the 30% is caught."""
    base = make_result(output_tok_s=1000.0, tpot_ms=10.0, device="cpu")
    worse = make_result(output_tok_s=750.0 * 0.7, tpot_ms=10.0 / 0.75 / 0.7, device="cpu")
    _, comparison, _ = compare_entry(worse, _entry(base, _speed(100.0)), {"output_tok_s": 0.15},
                                     host_speed=_speed(75.0))
    assert comparison is not None and "output_tok_s" in {r.metric for r in comparison.regressions}
    row = {r.metric: r for r in comparison.rows}["output_tok_s"]
    assert row.change == pytest.approx(-0.30)


def test_a_faster_runner_does_not_hide_a_regression() -> None:
    base = make_result(output_tok_s=1000.0, tpot_ms=10.0, device="cpu")
    same = make_result(output_tok_s=1000.0, tpot_ms=10.0, device="cpu")  # on a 30% faster runner
    _, comparison, _ = compare_entry(same, _entry(base, _speed(100.0)), {"output_tok_s": 0.15},
                                     host_speed=_speed(130.0))
    assert comparison is not None and comparison.state == "regression"


def test_too_different_a_probe_is_not_trusted_to_scale_by() -> None:
    """The main job's case on 2026-12-03: the probe read 37-46% slow, the engines ran at
    the baseline's speed. Compared unscaled, the unchanged run passes and a real loss
    still fails; skipping the comparison (as before) would have hidden both."""
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


def test_the_plugin_records_the_probe_and_scales_by_it(pytester: pytest.Pytester,
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

    # The whole runner is 25% slower, and the engine with it: scaled, it passes.
    fake.tok_s, score["now"] = 750.0, 75.0
    slow = pytester.runpytest()
    slow.assert_outcomes(passed=1)
    slow.stdout.fnmatch_lines(["*runner 25% slower than when the baseline was recorded*"])
    # The same without the probe is a regression.
    probes.clear()
    unprobed = pytester.runpytest("--llmperf-no-speed-probe", "--llmperf-confirm=0")
    unprobed.assert_outcomes(failed=1)
    assert probes == []
    # Too far apart to scale by: compared as it is, so the 25% loss is a regression.
    score["now"] = 60.0
    far = pytester.runpytest("--llmperf-confirm=0")
    far.assert_outcomes(failed=1)
    far.stdout.fnmatch_lines(["*compared unscaled: the probe reads this runner 40% slower*"])
    # And an engine at the baseline's speed passes whatever the probe reads.
    fake.tok_s = 1000.0
    pytester.runpytest().assert_outcomes(passed=1)
