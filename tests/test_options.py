"""Run options as a pytest-free core: every rejection names the option (both, for conflicts)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pytest_llmperf.options import (
    OptionError,
    RunOptions,
    resolve_path,
    split_value_options,
)


def build(root: Path, **values: Any) -> RunOptions:
    return RunOptions.from_mapping(values, rootdir=root)


def test_defaults(tmp_path: Path) -> None:
    opts = build(tmp_path)
    assert opts.device == "cpu" and not opts.update_baselines and opts.baseline_starts == 1
    assert opts.baselines_dir == tmp_path / "baselines"
    assert opts.start_timeout_s == opts.run_timeout_s == 900.0
    assert opts.cpu_memory == 0.25 and opts.json_path is None and opts.log_dir is None


def test_values_are_read(tmp_path: Path) -> None:
    opts = build(
        tmp_path, gpu=True, llmperf_update_baselines=True, llmperf_baseline_starts=3,
        llmperf_tolerance=["0.05", "output_tok_s=0.02"], llmperf_trials=4,
        llmperf_min_duration=2.5, llmperf_start_timeout=60, llmperf_json="out/r.json",
    )
    assert opts.device == "gpu" and opts.baseline_starts == 3 and opts.trials == 4
    assert opts.tolerance == 0.05 and opts.tolerances == {"output_tok_s": 0.02}
    assert opts.start_timeout_s == 60.0 and opts.min_duration_s == 2.5
    assert opts.json_path == tmp_path / "out" / "r.json"


def test_a_latency_may_be_given_a_tolerance_past_one(tmp_path: Path) -> None:
    opts = build(tmp_path, llmperf_tolerance=["ttft_p50_ms=4"])
    assert opts.tolerances == {"ttft_p50_ms": 4.0}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"llmperf_trials": 0}, "--llmperf-trials=0: must be at least 1"),
        ({"llmperf_trials": "three"}, "--llmperf-trials='three': expected an integer"),
        ({"llmperf_baseline_starts": 0, "llmperf_update_baselines": True},
         "--llmperf-baseline-starts=0: must be at least 1"),
        ({"llmperf_min_duration": -1.0}, "--llmperf-min-duration=-1: must be 0 or more"),
        ({"llmperf_slowdown": 0.95}, "--llmperf-slowdown=0.95: must be a fraction in [0, 0.9)"),
        ({"llmperf_slowdown": float("nan")}, "--llmperf-slowdown=nan: must be a finite number"),
        ({"llmperf_start_timeout": 0.0}, "--llmperf-start-timeout=0: must be positive (seconds)"),
        ({"llmperf_run_timeout": float("inf")}, "--llmperf-run-timeout=inf: must be a finite number"),
        ({"llmperf_run_timeout": float("nan")}, "--llmperf-run-timeout=nan: must be a finite number"),
        ({"llmperf_cpu_memory": 0.0}, "--llmperf-cpu-memory=0: must be a fraction in (0, 0.9]"),
        ({"llmperf_tolerance": ["lots"]}, "--llmperf-tolerance='lots': expected a fraction like 0.05"),
        ({"llmperf_tolerance": ["tpot=0.1"]}, "--llmperf-tolerance='tpot=0.1': unknown metric 'tpot'"),
        ({"llmperf_tolerance": ["1.5"]}, "--llmperf-tolerance='1.5': the fraction must be in (0, 1)"),
        ({"llmperf_tolerance": ["output_tok_s=1.5"]},
         "--llmperf-tolerance='output_tok_s=1.5': the fraction must be in (0, 1)"),
        ({"llmperf_tolerance": ["ttft_p50_ms=10"]},
         "--llmperf-tolerance='ttft_p50_ms=10': the fraction must be in (0, 10)"),
    ],
)
def test_bad_values_name_the_option(tmp_path: Path, values: dict[str, Any], message: str) -> None:
    with pytest.raises(OptionError) as info:
        build(tmp_path, **values)
    assert str(info.value).startswith(message)
    assert info.value.option == message.split("=")[0]


def test_update_with_slowdown_names_both_options(tmp_path: Path) -> None:
    with pytest.raises(OptionError) as info:
        build(tmp_path, llmperf_update_baselines=True, llmperf_slowdown=0.1)
    assert info.value.option == "--llmperf-update-baselines"
    assert info.value.other == "--llmperf-slowdown"
    assert str(info.value).startswith(
        "--llmperf-update-baselines with --llmperf-slowdown=0.1: the recorded baseline would "
        "carry the injected slowdown"
    )
    # A zero slowdown injects nothing: no conflict.
    assert build(tmp_path, llmperf_update_baselines=True, llmperf_slowdown=0.0).slowdown == 0.0


@pytest.mark.parametrize("starts", [1, 3])
def test_baseline_starts_without_update_is_refused(tmp_path: Path, starts: int) -> None:
    with pytest.raises(OptionError) as info:
        build(tmp_path, llmperf_baseline_starts=starts)
    assert (info.value.option, info.value.other) == (
        "--llmperf-baseline-starts", "--llmperf-update-baselines"
    )
    assert f"--llmperf-baseline-starts={starts} without --llmperf-update-baselines" in str(info.value)
    assert build(tmp_path, llmperf_baseline_starts=starts, llmperf_update_baselines=True).baseline_starts == starts


# -- paths -------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_rootdir_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    opts = build(tmp_path, llmperf_baselines="perf/base", llmperf_json="r.json", llmperf_log_dir="logs")
    assert opts.baselines_dir == tmp_path / "perf" / "base"
    assert opts.json_path == tmp_path / "r.json"
    assert opts.log_dir == tmp_path / "logs"


@pytest.mark.parametrize("raw", ["..", "../elsewhere", "a/../../b"])
def test_relative_paths_may_not_climb_out(tmp_path: Path, raw: str) -> None:
    with pytest.raises(OptionError, match=r"--llmperf-json=.*climbs out of the rootdir"):
        resolve_path("--llmperf-json", raw, tmp_path / "root")


def test_absolute_and_home_paths_are_taken_as_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "outside"
    assert resolve_path("--llmperf-baselines", str(outside), tmp_path / "root") == outside
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_path("--llmperf-baselines", "~/b", tmp_path / "root") == tmp_path / "b"


def test_ini_value_is_named_when_it_is_bad(tmp_path: Path) -> None:
    with pytest.raises(OptionError, match=r"^ini llmperf_baselines=\.\./x: climbs out"):
        RunOptions.from_mapping({}, rootdir=tmp_path, baselines_ini="../x")


def test_json_naming_a_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    with pytest.raises(OptionError) as info:
        build(tmp_path, llmperf_json="out")
    assert str(info.value) == (
        f"--llmperf-json=out: {tmp_path / 'out'} is a directory; name a file, "
        f"e.g. {tmp_path / 'out' / 'results.json'}"
    )


def test_log_dir_naming_a_file(tmp_path: Path) -> None:
    (tmp_path / "log").write_text("x")
    with pytest.raises(OptionError, match=r"^--llmperf-log-dir=log: .*/log is a file, not a directory$"):
        build(tmp_path, llmperf_log_dir="log")


def test_path_below_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(OptionError, match=r"^--llmperf-json=f/r.json: .*/f is a file, so .* cannot be created"):
        build(tmp_path, llmperf_json="f/r.json")


def test_unwritable_place_is_refused(tmp_path: Path) -> None:
    # /proc refuses new files even to root, where permission bits do not.
    with pytest.raises(OptionError, match=r"^--llmperf-log-dir=/proc/llmperf-logs: /proc is not writable"):
        build(tmp_path, llmperf_log_dir="/proc/llmperf-logs")
    with pytest.raises(OptionError, match=r"^--llmperf-json=/proc/r.json: /proc is not writable"):
        build(tmp_path, llmperf_json="/proc/r.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through permission bits")
def test_read_only_directory_is_refused(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    with pytest.raises(OptionError, match="is not writable"):
        build(tmp_path, llmperf_json="ro/r.json")


def test_baselines_dir_must_be_writable_only_when_recording(tmp_path: Path) -> None:
    assert build(tmp_path, llmperf_baselines="/proc/baselines").baselines_dir == Path("/proc/baselines")
    with pytest.raises(OptionError, match=r"^--llmperf-baselines=/proc/baselines: /proc is not writable"):
        build(tmp_path, llmperf_baselines="/proc/baselines", llmperf_update_baselines=True)
    (tmp_path / "bfile").write_text("")
    with pytest.raises(OptionError, match="is a file, not a directory"):
        build(tmp_path, llmperf_baselines="bfile")


def test_path_checks_leave_nothing_behind(tmp_path: Path) -> None:
    build(tmp_path, llmperf_json="a/b/r.json", llmperf_log_dir="logs", llmperf_update_baselines=True)
    assert list(tmp_path.iterdir()) == []


def test_json_and_log_dir_may_not_be_one_path(tmp_path: Path) -> None:
    with pytest.raises(OptionError) as info:
        build(tmp_path, llmperf_json="x", llmperf_log_dir="x")
    assert (info.value.option, info.value.other) == ("--llmperf-log-dir", "--llmperf-json")


def test_split_value_options() -> None:
    args = ["-p", "pytest_llmperf", "--llmperf-baselines", "/b", "--llmperf-json=r.json",
            "--llmperf-trials", "3", "--llmperf-strict", "tests"]
    assert split_value_options(args) == [("--llmperf-baselines", "/b"), ("--llmperf-trials", "3")]


def test_json_report_may_not_land_among_baseline_files(tmp_path: Path) -> None:
    with pytest.raises(OptionError) as info:
        build(tmp_path, llmperf_json="baselines/cpu-x-2c/test_suite.json")
    assert (info.value.option, info.value.other) == ("--llmperf-json", "ini llmperf_baselines")
    assert "lies inside the baselines directory" in str(info.value)
    # Beside the hardware directories nothing can be mistaken for a baseline file.
    assert build(tmp_path, llmperf_json="baselines/report.json").json_path == tmp_path / "baselines" / "report.json"
