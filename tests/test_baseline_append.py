"""--llmperf-baseline-append: a new recording pooled into the stored one of its speed state.

One session's recording carries that session's offset (on the CPU runner, the fast
state's recording of 2026-12-04 read 12% slower than the runs that followed it); pooling
starts from several sessions averages that out. These tests pin what is pooled, what is
kept apart and when nothing is appended.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import make_result

from pytest_llmperf.baselines import BaselineEntry, MetricRecord
from pytest_llmperf.config import Workload
from pytest_llmperf.fingerprint import collect_fingerprint
from pytest_llmperf.hostspeed import HostSpeed


def _speed(score: float) -> dict[str, object]:
    return HostSpeed(score=score, spread=0.01, parts={"python": score}).to_json()


def _recording(tok_s: float, score: float | None, when: str, *, starts: int = 1,
               workload: Workload | None = None) -> BaselineEntry:
    results = [make_result(output_tok_s=tok_s * (1 + 0.01 * i), tpot_ms=10_000.0 / tok_s,
                           device="cpu", workload=workload) for i in range(starts)]
    return BaselineEntry.from_starts("t", results, collect_fingerprint("cpu"), "abc", when,
                                     host_speed=_speed(score) if score else None)


def test_metric_records_pool_values_and_start_medians() -> None:
    a = MetricRecord.from_values([1.0, 2.0, 3.0], [[1.0, 2.0, 3.0]])
    b = MetricRecord.from_values([10.0, 11.0, 12.0, 13.0], [[10.0, 11.0], [12.0, 13.0]])
    pooled = a.pooled_with(b)
    assert pooled.values == (1.0, 2.0, 3.0, 10.0, 11.0, 12.0, 13.0)
    assert pooled.start_medians == (2.0, 10.5, 12.5)
    assert pooled.median == 10.0
    # A version 1 record (no start medians) counts as one start.
    old = MetricRecord(values=(4.0, 6.0), median=5.0, mad=1.0)
    assert old.pooled_with(a).start_medians == (5.0, 2.0)


def test_a_recording_in_the_same_state_is_pooled_into_it() -> None:
    stored = _recording(1000.0, 190.0, "2026-12-04T21:00:00+00:00", starts=2)
    fresh = _recording(1200.0, 200.0, "2026-12-05T12:00:00+00:00", starts=2)
    entry, said = fresh.appended_to(stored)
    tok = entry.metrics["output_tok_s"]
    assert len(tok.per_start()) == 4
    assert len(tok.values) == len(stored.metrics["output_tok_s"].values) * 2
    assert 1000.0 < tok.median < 1212.0
    assert tok.per_start()[:2] == stored.metrics["output_tok_s"].per_start()
    assert entry.recorded_at.startswith("2026-12-05")
    assert "appended to the recording of probe 190" in said and "2 + 2 engine start(s)" in said
    # Appending again pools again.
    third, _ = _recording(1100.0, 195.0, "2026-12-05T13:00:00+00:00").appended_to(entry)
    assert len(third.metrics["output_tok_s"].per_start()) == 5


def test_other_speed_states_are_kept_and_the_nearest_one_is_pooled() -> None:
    slow = _recording(400.0, 64.0, "2026-12-03T09:00:00+00:00")
    stored = _recording(1000.0, 190.0, "2026-12-04T21:00:00+00:00").keeping_states_of(slow)
    entry, said = _recording(1100.0, 185.0, "2026-12-05T12:00:00+00:00").appended_to(stored)
    assert "probe 190" in said
    assert len(entry.metrics["output_tok_s"].per_start()) == 2
    [kept] = entry.speed_states
    assert kept.host_speed["score"] == 64.0
    assert len(kept.metrics["output_tok_s"].per_start()) == 1
    # A run in the slow state pools into the slow recording and keeps the fast one.
    entry2, said2 = _recording(420.0, 66.0, "2026-12-05T13:00:00+00:00").appended_to(entry)
    assert "probe 64" in said2
    assert len(entry2.metrics["output_tok_s"].per_start()) == 2
    assert [s.host_speed["score"] for s in entry2.speed_states] == [185.0]
    assert len(entry2.speed_states[0].metrics["output_tok_s"].per_start()) == 2


def test_a_new_speed_state_is_recorded_beside_the_stored_one() -> None:
    stored = _recording(1000.0, 190.0, "2026-12-04T21:00:00+00:00")
    entry, said = _recording(400.0, 64.0, "2026-12-05T12:00:00+00:00").appended_to(stored)
    assert said.startswith("nothing appended: no stored recording in this runner speed state")
    assert len(entry.metrics["output_tok_s"].per_start()) == 1
    assert [s.host_speed["score"] for s in entry.speed_states] == [190.0]


@pytest.mark.parametrize("change", ["workload", "none"])
def test_nothing_is_pooled_with_another_config_or_no_entry(change: str) -> None:
    stored = _recording(1000.0, 190.0, "2026-12-04T21:00:00+00:00")
    workload = Workload(batch=9) if change == "workload" else None
    fresh = _recording(1100.0, 190.0, "2026-12-05T12:00:00+00:00", workload=workload)
    entry, said = fresh.appended_to(stored if change == "workload" else None)
    assert said.startswith("nothing appended")
    assert ("another config" in said) == (change == "workload")
    assert entry.metrics == fresh.metrics and not entry.speed_states


def test_without_probes_the_recordings_are_pooled() -> None:
    stored = _recording(1000.0, None, "2026-12-04T21:00:00+00:00")
    entry, said = _recording(1100.0, None, "2026-12-05T12:00:00+00:00").appended_to(stored)
    assert said.startswith("appended to the stored recording")
    assert len(entry.metrics["output_tok_s"].per_start()) == 2
    # A probed run cannot tell which state an unprobed recording was made in.
    probed, said = _recording(1100.0, 190.0, "2026-12-05T12:00:00+00:00").appended_to(stored)
    assert said.startswith("nothing appended")
    assert len(probed.metrics["output_tok_s"].per_start()) == 1


def test_the_store_records_replaces_or_appends_and_keeps_other_states(tmp_path: Path) -> None:
    """BaselineStore.record, as a script records: the file on disk holds what it returns."""
    from pytest_llmperf.baselines import BaselineStore

    fp = collect_fingerprint("cpu")
    store = BaselineStore(tmp_path, fp.hardware_key)

    def starts(tok_s: float, n: int = 2) -> list:
        return [make_result(output_tok_s=tok_s * (1 + 0.01 * i), tpot_ms=10_000.0 / tok_s,
                            device="cpu") for i in range(n)]

    slow, said = store.record("suites/test_x.py", "t", starts(400.0), fp, "a", host_speed=_speed(64.0))
    assert said == [] and len(slow.metrics["output_tok_s"].per_start()) == 2
    # Another speed state replaces nothing: the slow state's recording is kept beside it.
    fast, said = store.record("suites/test_x.py", "t", starts(1000.0), fp, "b", host_speed=_speed(190.0))
    assert [s.host_speed["score"] for s in fast.speed_states] == [64.0]
    assert len(said) == 1 and said[0].startswith("kept the baseline's recordings") and "64" in said[0]
    # Appending in the fast state pools into its recording; without append it is replaced.
    pooled, said = store.record("suites/test_x.py", "t", starts(1100.0), fp, "c",
                                host_speed=_speed(195.0), append=True)
    assert len(pooled.metrics["output_tok_s"].per_start()) == 4
    assert "2 + 2 engine start(s)" in said[0]
    on_disk = BaselineStore(tmp_path, fp.hardware_key).get("suites/test_x.py", "t")
    assert on_disk is not None and on_disk.to_json() == pooled.to_json()
    replaced, _ = store.record("suites/test_x.py", "t", starts(1200.0, 1), fp, "d", host_speed=_speed(195.0))
    assert len(replaced.metrics["output_tok_s"].per_start()) == 1
    assert [s.host_speed["score"] for s in replaced.speed_states] == [64.0]


def test_append_needs_update_baselines(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = pytester.runpytest("--llmperf-baseline-append")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmperf-baseline-append without --llmperf-update-baselines*"])


def test_the_plugin_appends_starts_across_runs(pytester: pytest.Pytester,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import fake_engine

    from pytest_llmperf import hostspeed

    fake = fake_engine.install(monkeypatch)
    monkeypatch.setattr(hostspeed, "measure_host_speed",
                        lambda: HostSpeed(score=100.0, spread=0.01, parts={"python": 100.0}))
    pytester.makepyfile(test_suite='from pytest_llmperf import perf\n\n'
                        '@perf(model="tiny-llama-2l", device="cpu", max_model_len=512)\n'
                        'def test_a(llmperf):\n    llmperf.run()\n')
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    [path] = list((pytester.path / "baselines").rglob("test_suite.json"))

    def starts() -> list[float]:
        entry = json.loads(path.read_text())["entries"]["test_a"]
        return entry["metrics"]["output_tok_s"]["start_medians"]

    first = starts()
    fake.tok_s *= 1.1
    again = pytester.runpytest("--llmperf-update-baselines", "--llmperf-baseline-append", "-rA")
    again.assert_outcomes(passed=1)
    again.stdout.fnmatch_lines(["*appended to the recording of probe 100*1 + 1 engine start(s)*"])
    assert len(starts()) == 2 and starts()[0] == first[0]
    assert starts()[1] == pytest.approx(first[0] * 1.1, rel=0.05)
    # Without --llmperf-baseline-append the recording is replaced, as before.
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    assert len(starts()) == 1
