"""The runner's run-to-run drift (rundrift.py) as the suite check's floor."""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from factories import SuiteRecord, comparison_row
from scipy import stats

from pytest_llmperf.__main__ import main
from pytest_llmperf.metrics import METRICS
from pytest_llmperf.reports.json import write_json
from pytest_llmperf.reports.model import RunReport, TestRecord
from pytest_llmperf.rundrift import (
    MIN_RUNS,
    DriftError,
    DriftRun,
    RunDrift,
    load,
    path_for,
    runs_from_report,
    save,
)
from pytest_llmperf.suitecheck import ALPHA, check_suite

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CPU_KEY = "cpu-amd-epyc-2c"


def _run(shift: float, n: int = 20, *, mode: str = "starts", key: str = "cpu-x") -> list[SuiteRecord]:
    """n tests whose throughput moved by ``shift`` plus a small spread."""
    return [SuiteRecord(f"t{i}", key, (comparison_row("output_tok_s", shift + 0.01 * (i % 5 - 2)),),
                 comparison_mode=mode) for i in range(n)]


def _drift(*changes: float, key: str = "cpu-x") -> RunDrift:
    return RunDrift(key, tuple(DriftRun(f"r{i}", {"output_tok_s": c})
                               for i, c in enumerate(changes)))


def test_the_floor_is_a_one_sided_t_bound_on_the_recorded_runs_rms() -> None:
    drift = _drift(0.10, -0.10, 0.10, -0.10)
    assert drift.floor("output_tok_s", 0.01) == pytest.approx(stats.t.ppf(0.99, 4) * 0.10)
    assert drift.floor("tpot_p50_ms", 0.01) == 0.0  # no run recorded it
    assert _drift(*[0.3] * (MIN_RUNS - 1)).floor("output_tok_s", 0.01) == 0.0
    # a mean offset counts as drift: runs all 10% faster bound a 10% loss too
    assert _drift(0.1, 0.1, 0.1).floor("output_tok_s", 0.01) > 0.1


def test_a_run_inside_the_runners_drift_passes_and_the_verdict_says_why() -> None:
    records = _run(-0.18)  # beyond a quarter of the 40% tolerance: fails without the record
    [plain] = check_suite(records)
    assert plain.failed
    drift = {"cpu-x": _drift(0.15, -0.12, 0.2, -0.1, 0.14)}
    [check] = check_suite(records, drift=drift)
    assert not check.failed
    [shift] = check.shifts
    assert shift.drift == pytest.approx(drift["cpu-x"].floor("output_tok_s", ALPHA))
    assert shift.threshold == shift.drift and shift.drift_runs == 5
    assert "this runner's run-to-run drift over 5 unchanged runs" in shift.describe()
    # the verdict line says so too: a loss under that threshold is not this check's to see
    head = check.lines()[0]
    assert head.startswith("suite check on cpu-x: passed (")
    assert (f"run-to-run drift over 5 unchanged runs set 1 of the thresholds instead, "
            f"{shift.threshold:.0%} to {shift.threshold:.0%}") in head
    assert "drift" not in plain.lines()[0]


def test_a_loss_beyond_the_runners_drift_still_fails() -> None:
    drift = {"cpu-x": _drift(0.15, -0.12, 0.2, -0.1, 0.14)}
    [check] = check_suite(_run(-0.5), drift=drift)
    assert check.failed and check.regressions[0].metric == "output_tok_s"


def test_the_floor_is_not_applied_in_paired_mode_or_to_other_runners() -> None:
    drift = {"cpu-x": _drift(0.15, -0.12, 0.2, -0.1, 0.14)}
    [paired] = check_suite(_run(-0.18, mode="paired"), drift=drift)
    assert paired.failed and paired.shifts[0].drift == 0.0  # the drift cancels in a pair
    [other] = check_suite(_run(-0.18, key="cpu-y"), drift=drift)
    assert other.failed


def test_the_shift_keeps_its_drift_through_the_report(tmp_path: Path) -> None:
    from pytest_llmperf.reports.json import read_json

    tests = tuple(TestRecord(test_id=r.test_id, outcome="pass", hardware_key=r.hardware_key,
                             baseline_status="compared", comparison=r.comparison,
                             comparison_mode="starts") for r in _run(-0.18))
    report = RunReport(tests=tests)
    report = replace(report, suite_checks=check_suite(
        tests, drift={"cpu-x": _drift(0.15, -0.12, 0.2, -0.1, 0.14)}))
    again = read_json(write_json(report, tmp_path / "r.json"))  # validated by the schema
    assert again.suite_checks == report.suite_checks and again.suite_checks[0].shifts[0].drift > 0


# -- the file ---------------------------------------------------------------------------


def _write(tmp_path: Path, doc: object, key: str = "cpu-x") -> Path:
    path = path_for(tmp_path, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


GOOD = {"schema_version": 1, "hardware_key": "cpu-x",
        "runs": [{"label": "a", "median_change": {"output_tok_s": 0.1}}]}


def test_a_saved_file_loads_back_and_a_missing_one_is_none(tmp_path: Path) -> None:
    drift = _drift(0.1, -0.2, 0.05)
    save(path_for(tmp_path, "cpu-x"), drift)
    assert load(path_for(tmp_path, "cpu-x"), "cpu-x") == drift
    assert load(path_for(tmp_path, "cpu-z"), "cpu-z") is None
    assert [p.name for p in (tmp_path / "cpu-x").iterdir()] == ["run-drift.json"]  # no temp left


@pytest.mark.parametrize(("doc", "where", "reason"), [
    ("{not json", "line 1 column 2", "invalid JSON"),
    ({**GOOD, "schema_version": 2}, "$.schema_version", "1 was expected"),
    ({**GOOD, "hardware_key": "cpu-y"}, "$.hardware_key", "lies in the directory for 'cpu-x'"),
    ({**GOOD, "runs": [{"label": "a", "median_change": {"tok_s": 0.1}}]},
     '$.runs[0].median_change.tok_s', "unknown metric"),
    ({**GOOD, "runs": [{"label": "a", "median_change": {"output_tok_s": "fast"}}]},
     "$.runs[0].median_change.output_tok_s", "is not of type 'number'"),
    ({**GOOD, "runs": [{"label": "a", "median_change": {"output_tok_s": -1.5}}]},
     "$.runs[0].median_change.output_tok_s", "less than or equal to the minimum"),
    ({**GOOD, "runs": GOOD["runs"] * 2}, "$.runs", "the label 'a' is recorded twice"),
])
def test_a_bad_file_names_the_file_the_place_and_the_reason(
        tmp_path: Path, doc: object, where: str, reason: str) -> None:
    path = _write(tmp_path, doc)
    with pytest.raises(DriftError) as info:
        load(path, "cpu-x")
    assert info.value.file == str(path) and info.value.where == where
    assert reason in info.value.reason


# -- drift add / show on the recorded CPU reports -------------------------------------


def _report(folder: str, name: str) -> RunReport:
    with gzip.open(RESULTS / folder / f"{name}.json.gz") as f:
        return RunReport.from_json(json.load(f))


def test_drift_add_records_an_unchanged_run_and_refuses_what_would_mislead(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    unchanged = str(RESULTS / "cpu-2026-12-06-s35" / "aa-1.json.gz")
    slowed = str(RESULTS / "cpu-2026-12-06-s35" / "slow.json.gz")
    bl = str(tmp_path)
    assert main(["drift", "add", unchanged, "--probe", "192.7", "--baselines", bl]) == 0
    drift = load(path_for(tmp_path, CPU_KEY), CPU_KEY)
    assert drift is not None
    [run] = drift.runs
    assert run.label == "aa-1" and run.probe == 192.7 and run.tests == 21
    [expected] = _report("cpu-2026-12-06-s35", "aa-1").suite_checks
    assert run.median_change["output_tok_s"] == pytest.approx(
        next(s.median_change for s in expected.shifts if s.metric == "output_tok_s"), abs=1e-6)
    before = path_for(tmp_path, CPU_KEY).read_bytes()
    assert main(["drift", "add", unchanged, "--baselines", bl]) == 2  # the same label again
    assert main(["drift", "add", slowed, "--label", "x", "--baselines", bl]) == 2
    err = capsys.readouterr().err
    assert "already recorded" in err and "ran with a planted slowdown (0.2)" in err
    assert path_for(tmp_path, CPU_KEY).read_bytes() == before  # untouched by the refusals
    assert main(["drift", "show", CPU_KEY, "--baselines", bl]) == 0
    assert "output_tok_s: 1 run(s)" in capsys.readouterr().out


def test_a_paired_report_teaches_no_drift() -> None:
    report = _report("cpu-2026-12-06-s35", "aa-1")
    paired = replace(report, tests=tuple(replace(t, comparison_mode="paired") for t in report.tests))
    with pytest.raises(DriftError, match="paired mode"):
        runs_from_report(paired, "r.json", "x")
    with pytest.raises(DriftError, match="no suite check"):
        runs_from_report(replace(report, suite_checks=()), "r.json", "x")


# -- the committed CPU record ---------------------------------------------------------


def _committed() -> RunDrift:
    drift = load(path_for(ROOT / "baselines", CPU_KEY), CPU_KEY)
    assert drift is not None
    return drift


@pytest.mark.parametrize(("folder", "name"), [("cpu-2026-12-06-s39", "unchanged-1"),
                                              ("cpu-2026-12-06-s39", "aa-1")])
def test_the_unchanged_runs_that_failed_the_suite_check_pass_with_the_committed_record(
        folder: str, name: str) -> None:
    tests = _report(folder, name).tests
    [live] = check_suite(tests)
    assert live.failed  # as they did on the day
    [check] = check_suite(tests, drift={CPU_KEY: _committed()})
    assert not check.failed, check.lines()


def test_every_recorded_run_is_inside_the_floor_the_others_set() -> None:
    """Leave one out: each unchanged run, judged by the floor of the other runs."""
    drift = _committed()
    assert len(drift.runs) >= 13
    for run in drift.runs:
        others = RunDrift(drift.hardware_key, tuple(r for r in drift.runs if r is not run))
        for metric, change in run.median_change.items():
            worsening = -change if METRICS[metric].direction == "higher" else change
            assert worsening < others.floor(metric, ALPHA), (run.label, metric)


def test_the_committed_record_is_what_its_reports_say() -> None:
    """Each run that names a report carries that report's suite-check medians."""
    for run in _committed().runs:
        if not run.source.startswith("benchmarks/results/"):
            continue
        with gzip.open(ROOT / run.source) as f:
            report = RunReport.from_json(json.load(f))
        [(key, again)] = runs_from_report(report, run.source, run.label)
        assert key == CPU_KEY
        for metric, change in run.median_change.items():
            assert math.isclose(change, again.median_change[metric], abs_tol=1e-6)


# -- through pytest ---------------------------------------------------------------------


def _one_recorded_test(pytester: pytest.Pytester,
                       monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Path]:
    """A one-test suite on the fake engine with its baseline recorded: (engines, the
    hardware key's baseline directory)."""
    import fake_engine

    fake = fake_engine.install(monkeypatch)
    pytester.makepyfile(test_suite='''
from pytest_llmperf import perf

@perf(model="tiny-llama-2l", device="cpu", max_model_len=512)
def test_x(llmperf):
    llmperf.run()
''')
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    [key_dir] = (pytester.path / "baselines").iterdir()
    return fake, key_dir


def test_a_bad_drift_file_is_a_usage_error_before_any_engine_starts(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    fake, key_dir = _one_recorded_test(pytester, monkeypatch)
    (key_dir / "run-drift.json").write_text('{"schema_version": 1}')
    starts = len(fake.started)
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*run-drift file unusable*{key_dir.name}*run-drift.json: $: "
                                 "'hardware_key' is a required property*"])
    assert len(fake.started) == starts


def test_a_drift_file_broken_during_the_run_fails_the_session_and_says_so(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    _, key_dir = _one_recorded_test(pytester, monkeypatch)
    pytester.makeconftest(f'''
def pytest_runtest_teardown(item):
    open({str(key_dir / "run-drift.json")!r}, "w").write("{{broken")
''')
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*suite check not applied: run-drift file unusable:*"
                                 "run-drift.json: line 1 column 2: invalid JSON*"])
