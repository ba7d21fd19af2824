"""Report writers over recorded result objects: JSON schema, Markdown, plots, history, merge.

No engine here: results come from ``factories.make_result`` and go through the real
gate (``compare_entry``) so verdicts are what a run would produce. The one real-engine
run writing every format is in test_reports_cpu.py.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from factories import make_result

from pytest_llmperf.baselines import BaselineEntry
from pytest_llmperf.config import EngineConfig, Workload
from pytest_llmperf.fingerprint import Fingerprint
from pytest_llmperf.gate import Verdict, compare_entry
from pytest_llmperf.reports import RunReport, merge_reports
from pytest_llmperf.reports.history import HistoryStore, by_commit, change_points
from pytest_llmperf.reports.json import ReportError, read_json, validate_report, write_json
from pytest_llmperf.reports.markdown import append_step_summary, render_markdown
from pytest_llmperf.reports.model import MergeError
from pytest_llmperf.reports.outputs import OutputPaths, write_outputs
from pytest_llmperf.reports.plots import CurvePoint, knee, write_plots

PNG = b"\x89PNG\r\n\x1a\n"
FP = Fingerprint(device="gpu", gpu_name="NVIDIA H100 80GB HBM3", gpu_count=1, gpu_memory_mib=81559,
                 driver="550.54", cuda="12.4", cpu_model="Intel Xeon", cpu_count=26,
                 vllm_version="0.25.0", torch_version="2.7.0", python="3.11.9")
KEY = FP.hardware_key
ENGINE = EngineConfig(model="llama-3.1-8b", max_model_len=1024)


def _verdict(test_id: str, tok_s: float, batch: int = 24, baseline_tok_s: float | None = None,
             seed: int = 0) -> Verdict:
    w = Workload(batch=batch, input_len=256, output_len=256)
    result = make_result(output_tok_s=tok_s, tpot_ms=1000 * batch / tok_s, engine=ENGINE,
                         workload=w, jitter=0.005, seed=seed)
    v = Verdict(test_id=test_id, result=result)
    entry = None
    if baseline_tok_s is not None:
        base = make_result(output_tok_s=baseline_tok_s, tpot_ms=1000 * batch / baseline_tok_s,
                           engine=ENGINE, workload=w, jitter=0.005, seed=seed + 100)
        entry = BaselineEntry.from_result(test_id.rpartition("::")[2], base, FP, "0" * 40,
                                          recorded_at="2026-11-20T10:00:00+00:00")
    status, comparison, messages = compare_entry(result, entry, {})
    v.baseline_status, v.comparison, v.baseline = status, comparison, entry
    v.messages.extend(messages)
    return v


def _verdicts() -> list[Verdict]:
    return [
        _verdict("suites/test_llama.py::test_batch[1]", 150, batch=1, baseline_tok_s=150, seed=1),
        _verdict("suites/test_llama.py::test_batch[8]", 1050, batch=8, baseline_tok_s=1040, seed=2),
        _verdict("suites/test_llama.py::test_batch[24]", 2300, batch=24, baseline_tok_s=2470, seed=3),
        _verdict("suites/test_llama.py::test_batch[64]", 2650, batch=64, baseline_tok_s=2640, seed=4),
        _verdict("suites/test_llama.py::test_new", 900, batch=4, seed=5),
    ]


def _report(verdicts: list[Verdict] | None = None, commit: str = "c" * 40) -> RunReport:
    return RunReport.from_verdicts(verdicts if verdicts is not None else _verdicts(),
                                   fingerprint=FP.to_json(), hardware_key=KEY, git_commit=commit)


# -- JSON -------------------------------------------------------------------------------


def test_json_report_validates_and_round_trips(tmp_path: Path) -> None:
    report = _report()
    path = write_json(report, tmp_path / "out" / "r.json")
    data = json.loads(path.read_text())
    validate_report(data)
    assert data["schema_version"] == 1
    assert data["summary"] == {"tests": 5, "failed": True,
                               "outcomes": {"regression": 1, "missing": 1, "pass": 3}}
    assert data["machines"][KEY]["gpu_name"] == "NVIDIA H100 80GB HBM3"
    regressed = next(t for t in data["tests"] if t["test_id"].endswith("[24]"))
    assert regressed["outcome"] == "regression" and regressed["verdict"] == "FAIL (regression)"
    assert regressed["baseline"]["metrics"]["output_tok_s"]["median"] > 2400
    assert regressed["result"]["workload"]["batch"] == 24
    assert {r["metric"]: r["verdict"] for r in regressed["comparison"]}["output_tok_s"] == "regression"
    # Reading it back gives the same report, field for field.
    again = read_json(path)
    assert again.to_json() == data
    assert [t.test_id for t in again.tests][:3] == [
        "suites/test_llama.py::test_batch[1]", "suites/test_llama.py::test_batch[8]",
        "suites/test_llama.py::test_batch[24]"]  # natural order, not 1, 24, 64, 8


def test_json_schema_rejects_a_bad_report_naming_the_path(tmp_path: Path) -> None:
    data = _report().to_json()
    data["tests"][0]["outcome"] = "fine"
    with pytest.raises(ReportError, match=r"\$\.tests\[0\]\.outcome: 'fine' is not one of"):
        validate_report(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ReportError, match="bad.json"):
        read_json(bad)
    bad.write_text('{"tests": [')
    with pytest.raises(ReportError, match=r"bad.json:1:\d+: not JSON"):
        read_json(bad)
    bad.write_text('{"benchmarks": []}')
    with pytest.raises(ReportError, match="schema_version None is not one this version reads"):
        read_json(bad)


def test_unmeasured_figures_are_null_not_nan(tmp_path: Path) -> None:
    from dataclasses import replace

    from pytest_llmperf.metrics import Distribution

    v = _verdict("t.py::test_a", 1000)
    assert v.result is not None
    trials = tuple(replace(t, itl_ms=Distribution.from_samples([])) for t in v.result.trials)
    v.result = replace(v.result, trials=trials)
    path = write_json(_report([v]), tmp_path / "r.json")
    text = path.read_text()
    assert "NaN" not in text
    assert json.loads(text)["tests"][0]["result"]["trials"][0]["itl_ms"]["p50"] is None
    assert read_json(path).tests[0].result is not None


# -- Markdown ---------------------------------------------------------------------------


def test_markdown_puts_regressions_first_and_folds_details() -> None:
    text = render_markdown(_report())
    lines = text.splitlines()
    assert lines[1] == "## ❌ pytest-llmperf: 1 regressed, 1 without a baseline, 3 passed"
    rows = [ln for ln in lines if ln.startswith("| ") and "`suites" in ln]
    assert len(rows) == 5
    assert "test_batch[24]" in rows[0] and "FAIL (regression)" in rows[0]
    assert "**(-" in rows[0]  # the regressed throughput change is bold
    assert "test_new" in rows[1] and "pass (missing baseline)" in rows[1]
    assert text.count("<details>") == text.count("</details>") == 5
    assert "| output_tok_s |" in text and "REGRESSION" in text
    assert "- no baseline for this test on this hardware" in text


def test_markdown_appends_to_the_github_step_summary(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    assert append_step_summary("# report", {"GITHUB_STEP_SUMMARY": str(summary)}) == summary
    assert summary.read_text() == "earlier step\n# report\n"
    assert append_step_summary("# report", {}) is None


# -- plots ------------------------------------------------------------------------------


def test_every_chart_is_a_png(tmp_path: Path) -> None:
    verdicts = _verdicts()
    report = _report([verdicts[0], verdicts[2], verdicts[4]])
    written = write_plots(report, tmp_path / "plots")
    names = sorted(p.name for p in written)
    assert any(n.startswith("throughput-llama-3.1-8b") for n in names)  # batch 1 and 24
    assert sum(n.startswith("latency-") for n in names) == 3
    assert sum(n.startswith("compare-") for n in names) == 2  # test_new has no baseline
    for p in written:
        assert p.read_bytes()[:8] == PNG


def test_knee_is_where_doubling_stops_paying() -> None:
    def pts(*xy: tuple[float, float]) -> list[CurvePoint]:
        return [CurvePoint(x, y, y, y, 1.0, "t") for x, y in xy]

    k = knee(pts((1, 100), (2, 190), (4, 360), (8, 520), (16, 560)))
    assert k is not None and k.x == 8  # 8 -> 16 adds 7.7%
    assert knee(pts((1, 100), (2, 190), (4, 360))) is None


def test_paired_run_draws_base_beside_head(tmp_path: Path) -> None:
    v = _verdict("t.py::test_a", 1000)
    v.base_result = make_result(output_tok_s=1100, engine=ENGINE)  # type: ignore[attr-defined]
    report = _report([v])
    assert report.tests[0].base is not None
    [compare] = [p for p in write_plots(report, tmp_path) if p.name.startswith("compare-")]
    assert compare.read_bytes()[:8] == PNG
    assert "| metric | base | now |" not in render_markdown(report)  # no comparison rows yet
    validate_report(report.to_json())


# -- history ----------------------------------------------------------------------------


def _history(path: Path, levels: list[float]) -> None:
    with HistoryStore(path) as store:
        for i, tok in enumerate(levels):
            v = _verdict("suites/test_llama.py::test_batch[24]", tok, seed=i)
            store.append(_report([v], commit=f"{i:02d}" * 20), recorded_at=f"2026-11-{i + 1:02d}")


def test_history_finds_the_commit_where_throughput_dropped(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    _history(db, [2300, 2310, 2295, 2305, 2120, 2110, 2125])
    with HistoryStore(db) as store:
        assert [r.git_commit for r in store.runs()][0] == "00" * 20
        [(key, test)] = store.tests()
        assert key == KEY
        commits = by_commit(store.series(key, test, "output_tok_s"))
    assert len(commits) == 7
    [cp] = change_points([c.value for c in commits], min_change=0.01)
    assert cp.index == 4 and cp.change == pytest.approx(-0.08, abs=0.01)


def test_no_change_point_in_noise() -> None:
    assert change_points([100.0, 100.4, 99.8, 100.2, 99.9, 100.3, 100.1], min_change=0.01) == []
    assert change_points([100.0, 101.0, 99.0]) == []  # too short to split


def test_history_rejects_a_file_that_is_not_one(tmp_path: Path) -> None:
    from pytest_llmperf.reports.history import HistoryError

    bad = tmp_path / "h.db"
    bad.write_text("not sqlite at all, just text " * 100)
    with pytest.raises(HistoryError, match="h.db: not a usable history file"):
        HistoryStore(bad)


def test_write_outputs_writes_every_format(tmp_path: Path) -> None:
    _history(tmp_path / "h.db", [2300, 2310, 2120])
    paths = OutputPaths(json=str(tmp_path / "r.json"), markdown=str(tmp_path / "r.md"),
                        plots=str(tmp_path / "plots"), history=str(tmp_path / "h.db"))
    lines = write_outputs(_report(_verdicts()[2:3]), paths)
    assert len(lines) == 4
    validate_report(json.loads((tmp_path / "r.json").read_text()))
    assert (tmp_path / "r.md").read_text().startswith("<!-- pytest-llmperf report -->")
    assert any(p.name.startswith("history-") for p in (tmp_path / "plots").iterdir())
    with sqlite3.connect(tmp_path / "h.db") as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone() == (4,)


# -- merge ------------------------------------------------------------------------------


def test_merge_of_two_shards_equals_the_single_run(tmp_path: Path) -> None:
    verdicts = _verdicts()
    single = _report(verdicts)
    a = write_json(_report(verdicts[::2]), tmp_path / "shard1.json")
    b = write_json(_report(verdicts[1::2]), tmp_path / "shard2.json")
    merged = merge_reports([(str(p), read_json(p)) for p in (b, a)])
    assert merged.to_json() == single.to_json()
    assert render_markdown(merged) == render_markdown(single)


def test_merge_keeps_each_hardware_and_refuses_overlap(tmp_path: Path) -> None:
    from dataclasses import replace

    v = _verdicts()[:2]
    h100 = _report(v)
    other = replace(FP, gpu_name="NVIDIA GeForce RTX 4090")
    rtx = RunReport.from_verdicts(v, fingerprint=other.to_json(), hardware_key=other.hardware_key)
    merged = merge_reports([("h100", h100), ("rtx", rtx)])
    assert sorted(merged.machines) == sorted([KEY, other.hardware_key])
    assert len(merged.tests) == 4
    assert "| hardware |" in render_markdown(merged)
    with pytest.raises(MergeError, match=r"b: suites/test_llama.py::test_batch\[1\] on .* is also in a"):
        merge_reports([("a", h100), ("b", h100)])


def test_load_axis_is_the_served_load_where_there_is_one() -> None:
    from types import SimpleNamespace

    from pytest_llmperf.reports.plots import load_axis

    assert load_axis(Workload(batch=8)) == ("batch", 8.0)
    assert load_axis(SimpleNamespace(batch=1, concurrency=16, rate=None)) == ("concurrency", 16.0)
    assert load_axis(SimpleNamespace(batch=1, concurrency=None, rate=2.5)) == ("rate", 2.5)


def test_an_unusable_baseline_is_an_error_outcome() -> None:
    v = _verdict("t.py::test_a", 1000)
    v.errors.append("baseline file unusable: baselines/x.json: $.entries: bad")
    [t] = _report([v]).tests
    assert t.outcome == "error" and t.failing
    assert t.notes[0].startswith("baseline file unusable")
    data = _report([v]).to_json()
    validate_report(data)
    assert RunReport.from_json(data).tests[0].errors == t.errors


def test_a_test_unchanged_since_the_base_commit_is_its_own_outcome(tmp_path: Path) -> None:
    v = _verdict("t.py::test_same", 1000)
    v.baseline_status, v.comparison = "unchanged", None
    v.messages.append("unchanged since origin/main (abc): same engine config, model and workload, measured once")
    report = _report([v, _verdict("t.py::test_b", 150, batch=1, baseline_tok_s=150, seed=1)])
    same = next(t for t in report.tests if t.test_id == "t.py::test_same")
    assert same.outcome == "unchanged" and not same.failing
    assert same.label == "pass (unchanged since base)"
    data = json.loads(write_json(report, tmp_path / "r.json").read_text())
    validate_report(data)
    assert data["summary"]["outcomes"] == {"unchanged": 1, "pass": 1}
    md = render_markdown(report)
    assert "1 unchanged, 1 passed" in md
    assert "Baseline: unchanged." in md


def _sweep_verdict(test_id: str, loads: list[dict[str, int]], engine: dict[str, int] | None = None) -> Verdict:
    """A test that measured several points itself (llmperf.sweep): the last is gated."""
    points = []
    for i, load in enumerate(loads):
        w = Workload(**{"batch": 8, "input_len": 128, "output_len": 128, **load})
        eng = EngineConfig(model="llama-3.1-8b", max_model_len=1024, **(engine or {}))
        points.append(make_result(output_tok_s=100.0 * w.batch ** 0.8, tpot_ms=7.0 + w.batch / 8,
                                  engine=eng, workload=w, seed=i))
    return Verdict(test_id=test_id, result=points[-1], points=points)


def test_a_sweep_inside_one_test_gets_its_own_curve(tmp_path: Path) -> None:
    from pytest_llmperf.reports.plots import sweep_curves

    knee_test = _sweep_verdict("suites/test_batch_curve.py::test_throughput_rises_to_a_knee",
                               [{"batch": b} for b in (1, 2, 4, 8, 16, 32)])
    grid = _sweep_verdict("suites/test_x.py::test_grid", [{"batch": 1, "input_len": 64},
                                                          {"batch": 2, "input_len": 128}])
    report = _report([knee_test, grid, _verdict("suites/test_x.py::test_one", 900, batch=4)])
    curves = sweep_curves(report)
    [(title, (axis, points))] = curves.items()  # the grid varies two keys: no curve
    assert title == "test_throughput_rises_to_a_knee [gpu]"
    assert axis == "batch" and [p.x for p in points] == [1, 2, 4, 8, 16, 32]
    assert points[-1].tok_s == pytest.approx(100.0 * 32 ** 0.8)
    written = write_plots(report, tmp_path / "plots")
    assert "throughput-test_throughput_rises_to_a_knee-gpu.png" in {p.name for p in written}
    # The points survive the JSON report, schema-validated.
    path = write_json(report, tmp_path / "r.json")
    again = read_json(path)
    assert [len(t.points) for t in again.tests] == [6, 2, 0]
    assert sweep_curves(again).keys() == curves.keys()


def test_an_engine_sweep_draws_against_the_engine_key() -> None:
    from pytest_llmperf.reports.plots import sweep_curves

    v = Verdict(test_id="t", result=None)
    pts = [make_result(output_tok_s=100.0 * s, engine=EngineConfig(model="m", max_num_seqs=s))
           for s in (8, 16, 32)]
    v.result, v.points = pts[-1], pts
    [(axis, points)] = sweep_curves(_report([v])).values()
    assert axis == "max_num_seqs" and [p.x for p in points] == [8, 16, 32]


def test_the_chart_and_the_tests_note_name_the_same_knee() -> None:
    """One definition (sweep.knee_index): a step that gains 12% is past the knee for
    both the chart and the suite's note (the chart once used 10%, the note 15%)."""
    from pytest_llmperf.sweep import knee as note_knee

    xy = [(1, 100.0), (2, 190.0), (4, 360.0), (8, 403.0), (16, 420.0)]
    k = knee([CurvePoint(x, y, y, y, 1.0, "t") for x, y in xy])
    assert k is not None and k.x == note_knee(xy) == 4
    # x that does not double is judged per doubling: 24 -> 32 (+10%) is +26% per doubling
    assert note_knee([(8, 100.0), (16, 180.0), (24, 250.0), (32, 275.0), (64, 280.0)]) == 32
