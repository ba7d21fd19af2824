"""The suite table (reports/suite_table.py, ``python -m pytest_llmperf table``) and the
derived figures a report now carries; reports built from results, no engine."""

from __future__ import annotations

import dataclasses
import gzip
import json
from pathlib import Path

import pytest
from factories import make_result
from test_reports import FP, KEY

from pytest_llmperf import derived
from pytest_llmperf.__main__ import main
from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.gate import Verdict
from pytest_llmperf.metrics import METRICS
from pytest_llmperf.reports.json import ReportError, load_report_schema, read_json, write_json
from pytest_llmperf.reports.model import RunReport
from pytest_llmperf.reports.suite_table import suite_table, totals

ENGINE = EngineConfig(model="llama-3.1-8b", max_model_len=1024)


def _result(tok_s: float, start_s: float, batch: int = 24, kv_gib: float | None = 54.31,
            engine: EngineConfig = ENGINE):  # type: ignore[no-untyped-def]
    r = make_result(output_tok_s=tok_s, tpot_ms=1000 * batch / tok_s, trials=2, engine=engine,
                    workload=Workload(batch=batch, input_len=256, output_len=256, trials=2))
    memory = dataclasses.replace(r.memory, kv_cache_tokens=444_928, kv_cache_gib=kv_gib,
                                 predicted_kv_bytes_per_token=131_072)
    return dataclasses.replace(r, memory=memory, start_time_s=start_s)


def _report() -> RunReport:
    shared = Verdict(test_id="suites/test_a.py::test_row[24]", result=_result(3000.0, 40.0),
                     derived={"roofline_share": 0.42, "decode_bytes_s": 1.4e12})
    same_engine = Verdict(test_id="suites/test_a.py::test_kv", result=_result(2900.0, 40.0))
    other = EngineConfig(model="llama-3.1-8b", max_model_len=1024, max_num_seqs=16)
    points = (_result(800.0, 11.0, batch=16, kv_gib=None, engine=other), _result(1200.0, 12.0))
    sweep = Verdict(test_id="suites/test_b.py::test_sweep", result=points[1])
    sweep.points = list(points)
    failed = Verdict(test_id="suites/test_b.py::test_crash", result=None)
    return RunReport.from_verdicts([shared, same_engine, sweep, failed], fingerprint=FP.to_json(),
                                   hardware_key=KEY, git_commit="c" * 40)


def test_report_json_carries_the_derived_figures(tmp_path: Path) -> None:
    path = write_json(_report(), tmp_path / "r.json")  # validates against the schema
    data = json.loads(path.read_text())
    row = next(t for t in data["tests"] if t["test_id"].endswith("test_row[24]"))
    assert row["derived"] == {"decode_bytes_s": 1.4e12, "roofline_share": 0.42}
    back = read_json(path)
    assert back.to_json() == data
    # Reports from before the field read back with no derived figures.
    for t in data["tests"]:
        del t["derived"]
    path.write_text(json.dumps(data))
    assert all(t.derived == {} for t in read_json(path).tests)


def test_the_schema_names_exactly_the_derived_figures() -> None:
    schema = load_report_schema()["$defs"]["test"]["properties"]["derived"]
    assert set(schema["propertyNames"]["enum"]) == set(derived.FIGURES)
    assert set(derived.FIGURES) <= set(METRICS)


def test_an_unknown_derived_figure_fails_validation(tmp_path: Path) -> None:
    data = _report().to_json()
    data["tests"][0]["derived"] = {"speedup": 2.0}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError, match="speedup"):
        read_json(path)


def test_suite_table_rows_and_starts_counted_apart() -> None:
    report = _report()
    lines = suite_table([report])
    row = next(line for line in lines if "test_row[24]" in line)
    assert "3,000.0" in row and "42%" in row and "40.0 s" in row
    # 54.31 GiB at 131,072 B/token: the card predicts 444,907 tokens, vLLM said 444,928.
    assert f"{444_928 / 444_907:.1%}" in row
    sweep = next(line for line in lines if "test_sweep" in line)
    assert "1,200.0" in sweep
    crash = next(line for line in lines if "test_crash" in line)
    assert crash.split()[1] == "-"
    t = totals([report])
    assert (t.tests, t.measured) == (4, 3)
    # The shared engine's 40 s once, the sweep's own two starts: 40 + 11 + 12.
    assert t.engine_start_s == pytest.approx(63.0)
    trials = [trial.elapsed_s for v in report.tests if v.result is not None
              for r in (v.points or (v.result,)) for trial in r.trials]
    assert t.measuring_s == pytest.approx(sum(trials))
    assert lines[-1] == t.line()
    assert "engine starts 63.0 s" in lines[-1]


def test_table_cli_reads_gzipped_reports_and_names_a_bad_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = write_json(_report(), tmp_path / "r.json")
    gz = tmp_path / "r2.json.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert main(["table", str(plain), str(gz), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert out.count("| suites/test_a.py::test_row[24] |") == 2
    assert "8 test(s), 6 measured" in out
    (tmp_path / "broken.json.gz").write_bytes(b"not gzip")
    assert main(["table", str(tmp_path / "broken.json.gz")]) == 2
    assert "broken.json.gz: cannot read" in capsys.readouterr().err
    assert main(["table", str(tmp_path / "none.json")]) == 2
    assert "none.json: cannot read" in capsys.readouterr().err


def test_cost_column_only_where_the_run_was_priced() -> None:
    report = _report()
    assert "$ / M out tok" not in suite_table([report])[0]
    priced = Verdict(test_id="suites/test_c.py::test_priced", result=_result(2000.0, 5.0),
                     derived={"cost_per_mtok_usd": 0.347, "cost_per_request_usd": 0.0001})
    both = [report, RunReport.from_verdicts([priced], hardware_key=KEY)]
    lines = suite_table(both)
    assert "$ / M out tok" in lines[0]
    assert "$ / request" in lines[0]
    assert "$0.347" in next(line for line in lines if "test_priced" in line)
    assert "$0.00010" in next(line for line in lines if "test_priced" in line)
    row = next(line for line in lines if "test_row[24]" in line)
    assert "$" not in row  # unpriced run: no cost, not zero
    assert suite_table(both, markdown=True)[2].split(" | ")[3:5] == ["-", "-"]


def test_totals_split_the_tests_wall_time_and_old_reports_have_none(tmp_path: Path) -> None:
    report = _report()
    assert totals([report]).wall_s is None and "in the tests" not in totals([report]).line()
    timed = dataclasses.replace(report, tests=tuple(
        dataclasses.replace(t, wall_s=w) for t, w in zip(report.tests, (70.0, 5.0, 60.0, 1.5), strict=True)))
    t = totals([timed])
    assert t.wall_s == pytest.approx(136.5)
    rest = 136.5 - t.engine_start_s - t.measuring_s
    assert t.line().endswith(f"of 136.5 s in the tests (the other {rest:,.1f} s: vLLM imports, "
                             "warm-ups, confirming starts, engine stops)")
    path = write_json(timed, tmp_path / "r.json")  # the schema takes the field
    assert [x.wall_s for x in read_json(path).tests] == [70.0, 5.0, 60.0, 1.5]
    data = json.loads(path.read_text())
    data["tests"][0]["wall_s"] = -1.0
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError, match="wall_s"):
        read_json(path)


def test_the_plugin_records_each_tests_wall_time(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """setup + call + teardown of each perf test, first verdict only, in the JSON report."""
    import fake_engine

    fake_engine.install(monkeypatch)
    pytester.makepyfile(test_suite="""
        import time
        import pytest
        from pytest_llmperf import perf

        @pytest.fixture
        def slow_teardown():
            yield
            time.sleep(0.3)

        @perf(model="tiny-llama-2l", device="cpu", max_model_len=512)
        def test_a(llmperf, slow_teardown):
            llmperf.run()
            time.sleep(0.2)

        def test_plain():
            pass
    """)
    out = pytester.runpytest("--llmperf-json=r.json", "-p", "no:cacheprovider")
    out.assert_outcomes(passed=2)
    data = json.loads((pytester.path / "r.json").read_text())
    (row,) = data["tests"]
    assert row["wall_s"] >= 0.5
    capsys.readouterr()
    assert main(["table", str(pytester.path / "r.json")]) == 0
    assert " s in the tests (the other " in capsys.readouterr().out
