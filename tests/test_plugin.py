"""Plugin behaviour through pytester: options, marker validation, ordering, skips, gate.

These use the fake engine (tests/fake_engine.py) so they run in seconds; the real
engine path is covered by test_engine_cpu.py.
"""

from __future__ import annotations

import json

import fake_engine
import pytest
from factories import TINY
from factories import write_suite as _suite

import pytest_llmperf


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> fake_engine.FakeEngines:
    return fake_engine.install(monkeypatch)


# -- marker validation: collection errors that name the key ---------------------------


def test_unknown_marker_key_is_a_collection_error_with_suggestion(pytester: pytest.Pytester) -> None:
    _suite(pytester, f"@perf({TINY}, bacth=4)\ndef test_a(llmperf):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_a: invalid perf marker: unknown perf key 'bacth' (did you mean 'batch'?)*"])


def test_wrong_type_names_key(pytester: pytest.Pytester) -> None:
    _suite(pytester, f"@perf({TINY}, batch='8')\ndef test_a(llmperf):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*batch='8': expected int, got str*"])


def test_unknown_card_lists_known_cards(pytester: pytest.Pytester) -> None:
    _suite(pytester, "@perf(model='llama-3-8b')\ndef test_a(llmperf):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*unknown model 'llama-3-8b'*Known cards:*llama-3.1-8b*tiny-llama-2l*"])


def test_prompt_longer_than_context_is_rejected(pytester: pytest.Pytester) -> None:
    _suite(pytester, f"@perf({TINY}, input_len=400, output_len=200)\ndef test_a(llmperf):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*input_len + output_len = 600 exceeds max_model_len=512*"])


def test_fixture_without_marker_fails_clearly(pytester: pytest.Pytester) -> None:
    _suite(pytester, "def test_a(llmperf):\n    pass\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*llmperf fixture needs a @pytest.mark.perf(model=...) marker*"])


# -- options --------------------------------------------------------------------------


def test_help_lists_prefixed_options(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--gpu*", "*--llmperf-update-baselines*", "*--llmperf-tolerance*"])


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("--llmperf-tolerance=outptu_tok_s=0.1", "*unknown metric 'outptu_tok_s' (did you mean 'output_tok_s'?)*"),
        ("--llmperf-tolerance=lots", "*expected a fraction like 0.05*"),
        ("--llmperf-tolerance=1.5", "*must be in (0, 1)*"),
        ("--llmperf-trials=0", "*--llmperf-trials=0: must be at least 1*"),
        ("--llmperf-slowdown=2", "*--llmperf-slowdown=2: must be a fraction in [[]0, 0.9)*"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, arg: str, message: str) -> None:
    result = pytester.runpytest(arg)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_gpu_flag_without_gpu_is_a_usage_error(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_llmperf.hw.nvml as gpu

    monkeypatch.setattr(gpu, "usable_gpu_reason", lambda: "NVML did not initialise: no driver")
    result = pytester.runpytest("--gpu")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--gpu was given but no GPU is usable here: NVML did not initialise*"])


# -- skips and ordering -----------------------------------------------------------------


def test_gpu_only_test_skips_without_gpu(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, "@perf(model='llama-3.1-8b', device='gpu')\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest("-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*GPU-only perf test (device='gpu'): run with --gpu*"])
    assert fake.started == []


def test_tests_sharing_a_config_share_one_engine(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(
        pytester,
        f"""
@perf({TINY}, batch=2)
def test_a1(llmperf):
    llmperf.run()

@perf({TINY}, batch=4)
def test_b(llmperf):
    llmperf.run()

def test_plain():
    pass

@perf({TINY}, batch=2, output_len=16)
def test_a2(llmperf):
    llmperf.run()
""",
    )
    result = pytester.runpytest("-v", "-p", "no:randomly")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*test_a1 PASSED*", "*test_a2 PASSED*", "*test_b PASSED*", "*test_plain PASSED*"])
    assert len(fake.started) == 2  # a1 and a2 share max_num_seqs=2; b needs its own
    assert fake.stopped == 2


def test_engine_that_fails_to_start_fails_its_tests_and_session_goes_on(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_engine.install(monkeypatch, fail_models={"qwen2.5-1.5b"})
    _suite(
        pytester,
        """
@perf(model="qwen2.5-1.5b", device="cpu")
def test_bad1(llmperf):
    llmperf.run()

@perf(model="qwen2.5-1.5b", device="cpu")
def test_bad2(llmperf):
    llmperf.run()

@perf(model="tiny-llama-2l", device="cpu")
def test_good(llmperf):
    llmperf.run()
""",
    )
    result = pytester.runpytest()
    result.assert_outcomes(failed=2, passed=1)
    result.stdout.fnmatch_lines(["*engine start failed: ValueError: fake refusal of qwen2.5-1.5b*"])


def test_run_rejects_engine_keys(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run(max_num_seqs=4)\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*'max_num_seqs' is not a workload key*engine keys belong in the perf marker*"])


# -- limits and the baseline gate ---------------------------------------------------------


def test_floor_is_enforced_when_the_named_model_runs(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY}, min_tok_s=5000)\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*min_tok_s=5000: measured 1,000.00, below the floor*"])


def test_floor_not_applied_to_cpu_stand_in(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, "@perf(model='llama-3.1-8b', min_tok_s=5000)\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*limits not applied: the CPU run measured tiny-llama-2l, a stand-in for llama-3.1-8b*"])


def test_an_interrupted_test_is_not_reported_as_failed(pytester: pytest.Pytester,
                                                      fake: fake_engine.FakeEngines) -> None:
    # Ctrl-C (or a CI step's timeout sending SIGINT) during a perf test: the run stops, the
    # finished test keeps its row, the cut-off one is not called "FAIL (test)".
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n\n"
                     f"@perf({TINY}, batch=2)\ndef test_b(llmperf):\n    llmperf.run()\n"
                     "    raise KeyboardInterrupt\n")
    result = pytester.runpytest(no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "test_suite.py::test_a" in out and "no baseline" in out
    assert "FAIL (test)" not in out and "test_suite.py::test_b " not in out


def test_update_then_compare_then_detect_regression(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY}, trials=5)\ndef test_a(llmperf):\n    llmperf.run()\n")
    # Without the flag nothing is written and the missing baseline is a warning.
    first = pytester.runpytest()
    first.assert_outcomes(passed=1)
    first.stdout.fnmatch_lines(["*LLMPerfWarning: test_suite.py::test_a: no baseline for this test on this hardware*"])
    assert not (pytester.path / "baselines").exists()

    written = pytester.runpytest("--llmperf-update-baselines")
    written.assert_outcomes(passed=1)
    files = list((pytester.path / "baselines").rglob("*.json"))
    assert len(files) == 1 and files[0].name == "test_suite.json"
    doc = json.loads(files[0].read_text())
    assert doc["entries"]["test_a"]["metrics"]["output_tok_s"]["median"] == pytest.approx(1000.0)

    same = pytester.runpytest()
    same.assert_outcomes(passed=1)

    slower = pytester.runpytest("--llmperf-slowdown=0.1")
    slower.assert_outcomes(failed=1)
    slower.stdout.fnmatch_lines([
        "*regression against the baseline (output_tok_s, total_tok_s, requests_s)*",
        "*metric*baseline*now*change*threshold*verdict*",
        "*output_tok_s*1000.0*900.0*-10.0%*-2.0%*REGRESSION*",
    ])
    # A looser tolerance on the marker's metric lets the same change through.
    looser = pytester.runpytest("--llmperf-slowdown=0.1", "--llmperf-tolerance=0.2")
    looser.assert_outcomes(passed=1)


def test_a_one_start_regression_is_rechecked_on_a_fresh_start(pytester: pytest.Pytester,
                                                              fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY}, trials=5)\ndef test_a(llmperf):\n    llmperf.run()\n")
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    runs: list[int] = []

    def first_start_disturbed(config: object) -> float:
        runs.append(1)
        return 0.6 if len(runs) == 1 else 1.0  # a neighbour took the CPU during start 1

    fake.speed = first_start_disturbed
    started = len(fake.started)
    passed = pytester.runpytest()
    passed.assert_outcomes(passed=1)
    assert len(fake.started) == started + 2  # the judged start and one fresh start
    passed.stdout.fnmatch_lines(["*set aside a disturbed engine start: its regression "
                                 "(output_tok_s -40.0%, total_tok_s -40.0% and 8 more) did not reproduce on a fresh start*"])
    table_row = next(line for line in passed.stdout.lines if line.startswith("test_suite.py::test_a  "))
    assert "1,000.0" in table_row and "600.0" not in table_row  # the fresh start's figures

    # A real slowdown reproduces on the fresh start and fails, decided over both starts.
    fake.speed = None
    slower = pytester.runpytest("--llmperf-slowdown=0.1")
    slower.assert_outcomes(failed=1)
    slower.stdout.fnmatch_lines(["*output_tok_s*-10.0%*REGRESSION*",
                                 "*regression reproduced on a fresh engine start (first start: "
                                 "output_tok_s -10.0%*"])
    # --llmperf-confirm=0: no fresh starts, the disturbed start fails the test at once.
    runs.clear()
    fake.speed = first_start_disturbed
    started = len(fake.started)
    pytester.runpytest("--llmperf-confirm=0").assert_outcomes(failed=1)
    assert len(fake.started) == started + 1


def test_improvement_is_reported_with_hint(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_engine.install(monkeypatch)
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n")
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    fake.tok_s = 1200.0
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*improved beyond tolerance (output_tok_s +20.0%*record it with --llmperf-update-baselines*"])


def test_strict_fails_on_missing_baseline(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest("--llmperf-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no baseline for this test on this hardware*[--llmperf-strict]*"])


def test_stale_baseline_is_reported(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY}, batch=2)\ndef test_a(llmperf):\n    llmperf.run()\n")
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    _suite(pytester, f"@perf({TINY}, batch=4)\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest("--llmperf-strict")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*baseline is stale*workload.batch: baseline 2, now 4*"])


def test_corrupt_baseline_fails_naming_the_file_and_is_not_overwritten(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n")
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    [path] = list((pytester.path / "baselines").rglob("*.json"))
    path.write_text('{"schema_version": 1, "entries": ')
    started = len(fake.started)
    for args in ([], ["--llmperf-update-baselines"]):
        result = pytester.runpytest(*args)
        # Checked at collection: the test errors at setup, its engine never starts.
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines([f"*test_a: baseline file unusable: {path}:1:34: invalid JSON: Expecting value*"])
        result.stdout.no_fnmatch_line("*performance limits missed*")
    assert len(fake.started) == started
    assert path.read_text() == '{"schema_version": 1, "entries": '


def test_summary_table_and_json_report(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY}, batch=3)\ndef test_a(llmperf):\n    r = llmperf.run()\n    assert r.tok_s > 0\n")
    result = pytester.runpytest("--llmperf-json=out/results.json")
    result.stdout.fnmatch_lines([
        "*llmperf summary*",
        "*test*config*out tok/s*TTFT p50*TTFT p99*TPOT p50*peak mem*verdict*",
        "*test_a*tiny-llama-2l*b3 128/128*1,000.0*",
    ])
    data = json.loads((pytester.path / "out" / "results.json").read_text())
    assert data["tests"][0]["result"]["workload"]["batch"] == 3


def test_package_exposes_every_plugin_hook_and_fixture() -> None:
    """``-p pytest_llmperf`` registers the package; it must carry all the plugin's names."""
    import pytest_llmperf.plugin as plugin

    wanted = {n for n in dir(plugin) if n.startswith("pytest_") and callable(getattr(plugin, n))}
    wanted |= {"llmperf", "llm_engine", "gpu_info"}
    assert wanted <= set(dir(pytest_llmperf))
    for name in wanted:
        assert getattr(pytest_llmperf, name) is getattr(plugin, name)


def test_baseline_pooled_over_several_engine_starts(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY}, trials=2)\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest("--llmperf-update-baselines", "--llmperf-baseline-starts=3")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*baseline pooled over 3 engine starts*"])
    assert len(fake.started) == 3
    [path] = list((pytester.path / "baselines").rglob("*.json"))
    values = json.loads(path.read_text())["entries"]["test_a"]["metrics"]["output_tok_s"]["values"]
    assert len(values) == 6  # 2 trials from each of 3 starts


def test_baseline_starts_must_be_positive(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--llmperf-baseline-starts=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--llmperf-baseline-starts=0: must be at least 1*"])


def test_cpu_memory_figures_are_not_gated() -> None:
    """On the CPU build the KV cache follows free RAM, so memory moves are reported only."""
    from dataclasses import replace

    from factories import make_result

    from pytest_llmperf.baselines import BaselineEntry
    from pytest_llmperf.fingerprint import collect_fingerprint
    from pytest_llmperf.gate import compare_entry

    base = make_result(device="cpu")
    entry = BaselineEntry.from_result("t", base, collect_fingerprint("cpu"), None)
    grown = replace(base, memory=replace(base.memory, peak_process_gib=30.0, kv_cache_tokens=50_000))
    status, comparison, _ = compare_entry(grown, entry, {})
    assert status == "compared" and comparison is not None and comparison.passed
    on_gpu = replace(grown, device="gpu")
    gpu_entry = BaselineEntry.from_result("t", replace(base, device="gpu"), collect_fingerprint("cpu"), None)
    _, gpu_comparison, _ = compare_entry(on_gpu, gpu_entry, {})
    assert gpu_comparison is not None
    assert {m.metric for m in gpu_comparison.regressions} == {"peak_mem_gib", "kv_cache_tokens"}


def test_hooks_choose_the_hardware_key_and_see_every_result(
    pytester: pytest.Pytester, fake: fake_engine.FakeEngines
) -> None:
    pytester.makeconftest("""
        seen = []

        def pytest_llmperf_hardware_key(config, fingerprint):
            return "shared-runner-pool"

        def pytest_llmperf_result(config, item, result, comparison):
            seen.append((item.name, round(result.output_tok_s), comparison is None))

        def pytest_terminal_summary(terminalreporter):
            terminalreporter.write_line(f"SEEN {seen}")
    """)
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n")
    result = pytester.runpytest("--llmperf-update-baselines")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["SEEN [('test_a', 1000, True)]"])
    assert (pytester.path / "baselines" / "shared-runner-pool" / "test_suite.json").is_file()


def test_compare_hook_replaces_the_decision(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n")
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    pytester.makeconftest("""
        from pytest_llmperf.regression import compare_to_baseline

        def pytest_llmperf_compare(config, item, current, baseline, tolerances):
            loose = {m: 0.5 for m in ("output_tok_s", "total_tok_s", "requests_s")}
            return compare_to_baseline(current, baseline, tolerances={**tolerances, **loose})
    """)
    result = pytester.runpytest("--llmperf-slowdown=0.1")
    result.assert_outcomes(passed=1)


def test_summary_names_a_vllm_version_change(pytester: pytest.Pytester, fake: fake_engine.FakeEngines) -> None:
    _suite(pytester, f"@perf({TINY})\ndef test_a(llmperf):\n    llmperf.run()\n")
    pytester.runpytest("--llmperf-update-baselines").assert_outcomes(passed=1)
    [path] = list((pytester.path / "baselines").rglob("*.json"))
    path.write_text(path.read_text().replace('"vllm_version": "0.32.0"', '"vllm_version": "0.25.0"'))
    result = pytester.runpytest()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_a: baseline vLLM 0.25.0, now 0.32.0*"])
