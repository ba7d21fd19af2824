"""The end-of-session table and the machine-readable results file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .atomic import write_atomic
from .gate import Verdict


def _num(value: float | None, fmt: str = ",.1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _status(v: Verdict) -> str:
    if v.result is None:
        return "ERROR"
    if v.failed_test:
        return "FAIL (test)"
    if v.limit_failures:
        return "FAIL (limits)"
    if v.regressed:
        return "FAIL (regression)"
    if v.comparison is not None and v.comparison.improvements:
        return "pass (improved)"
    if v.baseline_status in ("missing", "stale"):
        return f"pass ({v.baseline_status} baseline)"
    if v.baseline_status == "updated":
        return "pass (baseline updated)"
    return "pass"


def summary_lines(verdicts: Sequence[Verdict]) -> list[str]:
    """An aligned table: test, config, tok/s, TTFT p50/p99, TPOT p50, peak memory, verdict."""
    header = ["test", "config", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "peak mem",
              "KV tokens", "verdict"]
    rows = [header]
    for v in verdicts:
        r = v.result
        if r is None:
            rows.append([v.test_id, "-", "-", "-", "-", "-", "-", "-", _status(v)])
            continue
        mem = r.memory.peak_process_gib
        rows.append([
            v.test_id,
            f"{r.engine.label()} {r.workload.label()} [{r.device}]",
            _num(r.output_tok_s),
            _num(r.ttft.p50, ".1f") + " ms",
            _num(r.ttft.p99, ".1f") + " ms",
            _num(r.tpot.p50, ".2f") + " ms",
            _num(mem, ".2f") + " GiB",
            _num(r.memory.kv_cache_tokens, ",d") if r.memory.kv_cache_tokens else "-",
            _status(v),
        ])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return lines


def detail_lines(verdicts: Sequence[Verdict]) -> list[str]:
    """Improvements, missing or stale baselines and disturbed runs, one line each."""
    out = []
    for v in verdicts:
        if v.comparison is not None and v.comparison.improvements:
            names = ", ".join(f"{m.metric} {m.change:+.1%}" for m in v.comparison.improvements)
            out.append(f"{v.test_id}: improved beyond tolerance ({names}); "
                       "record it with --llmperf-update-baselines")
        out.extend(f"{v.test_id}: {m}" for m in v.messages)
        if v.result is not None:
            out.extend(f"{v.test_id}: {n}" for n in v.result.notes)
    return out


def results_json(verdicts: Sequence[Verdict], fingerprint: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "fingerprint": fingerprint,
        "tests": [
            {
                "test_id": v.test_id,
                "verdict": _status(v),
                "baseline_status": v.baseline_status,
                "limit_failures": v.limit_failures,
                "comparison": None if v.comparison is None else [
                    {"metric": m.metric, "baseline": m.baseline, "current": m.current,
                     "change": m.change, "tolerance": m.tolerance, "verdict": m.verdict}
                    for m in v.comparison.rows
                ],
                "result": None if v.result is None else v.result.to_json(),
            }
            for v in verdicts
        ],
    }


def write_json_atomic(path: str, data: dict[str, Any]) -> None:
    """Write JSON via a temp file and rename, so readers never see half a file."""
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
