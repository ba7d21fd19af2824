"""``python -m pytest_llmperf history|merge`` over recorded reports (no engine)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_reports import KEY, _history, _report, _verdicts

from pytest_llmperf.__main__ import main
from pytest_llmperf.reports.json import read_json, validate_report, write_json

ROOT = Path(__file__).resolve().parents[1]


def test_history_shows_the_trend_and_flags_the_change_point(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "h.db"
    _history(db, [2300, 2310, 2295, 2305, 2120, 2110, 2125])
    assert main(["history", str(db), "--plots", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "7 run(s), 7 commit(s), 1 hardware key(s)" in out
    assert f"suites/test_llama.py::test_batch[24] on {KEY}" in out
    assert re.search(r"040404040404     1  21\d\d\.\d \(-8\.\d%\)", out)
    assert re.search(r"change point: output_tok_s -8\.\d% at 040404040404 \(after 030303030303", out)
    assert "change point: tpot_p50_ms +" in out
    assert "change point: ttft_p50_ms" not in out  # +9% is within TTFT's noise floor
    assert "1 plot(s) written" in out
    [png] = (tmp_path / "plots").iterdir()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_history_with_one_commit_says_it_needs_more(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.db"
    _history(db, [2300])
    assert main(["history", str(db), "--metric", "output_tok_s"]) == 0
    assert "1 commit(s): change points need 4" in capsys.readouterr().out


def test_history_errors_name_the_culprit(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no such file"):
        main(["history", str(tmp_path / "none.db")])
    _history(tmp_path / "h.db", [1.0])
    with pytest.raises(SystemExit, match="unknown metric 'tok_s'"):
        main(["history", str(tmp_path / "h.db"), "--metric", "tok_s"])


def test_merge_cli_writes_the_single_run_report(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    verdicts = _verdicts()
    a = write_json(_report(verdicts[:2]), tmp_path / "s1.json")
    b = write_json(_report(verdicts[2:]), tmp_path / "s2.json")
    out_json, out_md = tmp_path / "m.json", tmp_path / "m.md"
    rc = main(["merge", str(a), str(b), "--json", str(out_json), "--markdown", str(out_md),
               "--check"])
    assert rc == 1  # one test regressed
    assert "1 regressed, 1 without a baseline, 3 passed" in capsys.readouterr().out
    data = json.loads(out_json.read_text())
    validate_report(data)
    assert data == _report(verdicts).to_json()
    assert read_json(out_json).failed
    assert out_md.read_text().count("<details>") == 5


def test_merge_cli_reports_a_bad_shard(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "s1.json"
    bad.write_text("{}")
    assert main(["merge", str(bad)]) == 2
    assert "s1.json: schema_version None" in capsys.readouterr().err


def test_module_runs_as_a_command() -> None:
    done = subprocess.run([sys.executable, "-m", "pytest_llmperf", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert "history" in done.stdout and "merge" in done.stdout
