"""Bad input is caught before any engine starts, with a message naming the culprit.

pytester runs with the fake engine (tests/fake_engine.py): every test here also checks
that no engine was started where the input was bad.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import fake_engine
import pytest
from factories import TINY
from factories import write_suite as _suite

RUNS = f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> fake_engine.FakeEngines:
    return fake_engine.install(monkeypatch)


# -- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--llmperf-update-baselines", "--llmperf-slowdown=0.1"],
         "ERROR: --llmperf-update-baselines with --llmperf-slowdown=0.1: the recorded baseline "
         "would carry the injected slowdown; record without --llmperf-slowdown, then gate with it"),
        (["--llmperf-baseline-starts=3"],
         "ERROR: --llmperf-baseline-starts=3 without --llmperf-update-baselines: it only applies "
         "when recording baselines and would be ignored; add --llmperf-update-baselines or drop it"),
        (["--llmperf-run-timeout=nan"], "ERROR: --llmperf-run-timeout=nan: must be a finite number"),
    ],
)
def test_conflicting_options_are_usage_errors(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines, args: list[str], message: str
) -> None:
    _suite(pytester, RUNS)
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert fake.started == []


def test_json_naming_a_directory_is_refused_before_anything_runs(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, RUNS)
    (pytester.path / "out").mkdir()
    result = pytester.runpytest("--llmperf-json=out")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: --llmperf-json=out: {pytester.path / 'out'} is a directory; name a file, "
        f"e.g. {pytester.path / 'out' / 'results.json'}"
    ])
    assert fake.started == []


def test_log_dir_naming_a_file_is_refused(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, RUNS)
    (pytester.path / "engine.log").write_text("")
    result = pytester.runpytest("--llmperf-log-dir=engine.log")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: --llmperf-log-dir=engine.log: {pytester.path / 'engine.log'} is a file, not a directory"
    ])
    assert fake.started == []


def test_report_path_is_relative_to_the_rootdir(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, RUNS)
    pytester.makeini("[pytest]\n")
    sub = pytester.mkdir("sub")
    os.chdir(sub)  # pytester restores the working directory
    result = pytester.runpytest(str(pytester.path), "--llmperf-json=out/r.json")
    result.assert_outcomes(passed=1)
    assert (pytester.path / "out" / "r.json").is_file()
    assert not (sub / "out").exists()
    escape = pytester.runpytest(str(pytester.path), "--llmperf-json=../r.json")
    assert escape.ret == pytest.ExitCode.USAGE_ERROR
    escape.stderr.fnmatch_lines(["ERROR: --llmperf-json=../r.json: climbs out of the rootdir*"])


def test_split_path_option_that_moves_the_rootdir_is_named(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No ini file: pytest takes the value for a test path and moves the rootdir."""
    _suite(pytester, RUNS)
    outside = tmp_path_factory.mktemp("elsewhere") / "baselines"
    outside.mkdir()
    result = pytester.runpytest("--llmperf-baselines", str(outside))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: --llmperf-baselines {outside}: given as two arguments, pytest took '{outside}' "
        f"for a test path while choosing the rootdir (* instead of {pytester.path}), which "
        "changes every test id and baseline key; write it as one argument: "
        f"--llmperf-baselines={outside}"
    ])
    assert fake.started == []
    ok = pytester.runpytest(f"--llmperf-baselines={outside}", "--llmperf-update-baselines")
    ok.assert_outcomes(passed=1)
    assert (outside / fake_engine_hardware_dir(outside) / "test_suite.json").is_file()


def fake_engine_hardware_dir(root: Path) -> str:
    [child] = [p.name for p in root.iterdir()]
    return child


def test_split_form_that_does_not_move_the_rootdir_is_fine(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, RUNS)
    pytester.makeini("[pytest]\n")
    (pytester.path / "b").mkdir()
    pytester.runpytest("--llmperf-baselines", "b").assert_outcomes(passed=1)


# -- markers ------------------------------------------------------------------------------


def test_two_markers_on_one_function_are_a_collection_error(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, f"@perf({TINY})\n@perf(batch=4)\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*test_suite.py::test_a: 2 perf markers on function test_a; one per level "
        "(module, class, function, pytest.param): merge them into one @perf(...)*"
    ])
    assert fake.started == []


def test_two_markers_on_one_class_are_a_collection_error(pytester: pytest.Pytester) -> None:
    _suite(pytester, f"@perf({TINY})\n@perf(batch=4)\nclass TestX:\n    def test_a(self, llmperf):\n        pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_suite.py::TestX::test_a: 2 perf markers on class TestX; one per level*"])


def test_markers_layer_closest_wins_key_by_key(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(
        pytester,
        f"""
pytestmark = perf({TINY}, batch=2, input_len=64, output_len=64, trials=1)

@perf(batch=3, input_len=32)
class TestLayers:
    @perf(batch=4)
    def test_function_wins(self, llmperf):
        w = llmperf.workload
        assert (w.batch, w.input_len, w.output_len) == (4, 32, 64)

    def test_class_wins(self, llmperf):
        assert (llmperf.workload.batch, llmperf.workload.input_len) == (3, 32)

    @perf(batch=4)
    @pytest.mark.parametrize("n", [pytest.param(5, marks=perf(batch=5)), 6])
    def test_param_wins(self, llmperf, n):
        assert llmperf.workload.batch == (5 if n == 5 else 4)

def test_module_only(llmperf):
    assert llmperf.workload.batch == 2 and llmperf.workload.input_len == 64
""",
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=5)


def test_marker_slowdown_while_recording_is_a_collection_error(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, f"@perf({TINY}, slowdown=0.2)\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest("--llmperf-update-baselines")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*test_suite.py::test_a: perf marker slowdown=0.2 with --llmperf-update-baselines would "
        "record a slowed baseline*"
    ])
    assert fake.started == []
    assert not (pytester.path / "baselines").exists()


def test_relative_model_directory_from_another_directory_says_why(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\n")
    model = pytester.mkdir("models") / "mine"
    model.mkdir()
    (model / "config.json").write_text("{}")
    _suite(pytester, "@perf(model='./models/mine', device='cpu', cpu={'model': './models/mine'})\n"
                     "def test_a(llmperf):\n    pass\n")
    assert pytester.runpytest("--collect-only").ret == pytest.ExitCode.OK
    os.chdir(pytester.mkdir("sub"))
    result = pytester.runpytest(str(pytester.path), "--collect-only")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*test_a: invalid perf marker: unknown model './models/mine'*; a relative model directory is "
        f"found from the working directory ({pytester.path / 'sub'}), as vLLM finds it: run pytest "
        f"from {pytester.path} or give an absolute path*"
    ])


# -- a perf test that measured nothing ---------------------------------------------------


def test_never_measured_fails_under_strict_and_warns_otherwise(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    pass\n")
    lenient = pytester.runpytest()
    lenient.assert_outcomes(passed=1)
    lenient.stdout.fnmatch_lines([
        "*LLMPerfWarning: perf test never called llmperf.run(): nothing measured "
        "(a failure with --llmperf-strict)*"
    ])
    strict = pytester.runpytest("--llmperf-strict")
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines([
        "*test_suite.py::test_a: perf test never called llmperf.run(): nothing measured [--llmperf-strict]*"
    ])


# -- baseline files: checked before any engine starts -------------------------------------


def _record_then_corrupt(pytester: pytest.Pytester, content: bytes) -> Path:
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    [path] = list((pytester.path / "baselines").rglob("*.json"))
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d["entries"]["test_a"]["metrics"]["output_tok_s"].update(median=-5.0),
         '$.entries.test_a.metrics.output_tok_s.median: -5.0 is less than or equal to the minimum of 0'),
        (lambda d: d.update(schema_version=7),
         "$.schema_version: unsupported schema_version 7; this version of pytest-llmperf reads "
         "schema_version 1, 2 (written by a newer pytest-llmperf? upgrade it)"),
        (lambda d: d["entries"]["test_a"].update(colour="red"),
         "$.entries.test_a: Additional properties are not allowed ('colour' was unexpected)"),
    ],
)
def test_bad_baseline_fails_its_tests_at_setup_and_no_engine_starts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mutate: object, message: str
) -> None:
    _suite(pytester, RUNS)
    fake_engine.install(monkeypatch)
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    [path] = list((pytester.path / "baselines").rglob("*.json"))
    doc = json.loads(path.read_text())
    mutate(doc)  # type: ignore[operator]
    path.write_text(json.dumps(doc))
    before = path.read_bytes()
    fake = fake_engine.install(monkeypatch)
    for args in ([], ["--llmperf-update-baselines"]):
        result = pytester.runpytest(*args)
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines([f"*test_suite.py::test_a: baseline file unusable: {path}: {message}*"])
    assert fake.started == []
    assert path.read_bytes() == before


def test_only_the_selected_tests_files_are_read(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, RUNS, name="test_one")
    _suite(pytester, RUNS.replace("test_a", "test_b"), name="test_two")
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=2)
    [one] = list((pytester.path / "baselines").rglob("test_one.json"))
    one.write_bytes(b"")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*test_one.py::test_a: baseline file unusable: {one}:1:1: invalid JSON: Expecting value*"])
    pytester.runpytest("test_two.py").assert_outcomes(passed=1)
    assert one.read_bytes() == b""
