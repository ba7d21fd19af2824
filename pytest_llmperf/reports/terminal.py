"""The end-of-session summary in pytest's terminal: one row per test, then the notes."""

from __future__ import annotations

import math

from .model import RunReport, TestRecord
from .table import text_table


def num(value: float | int | None, fmt: str = ",.1f") -> str:
    """A figure for a table cell; ``-`` where nothing was measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def config_label(t: TestRecord) -> str:
    r = t.result
    if r is None:
        return "-"
    return f"{r.engine.label()} {r.workload.label()} [{r.device}]"


SUMMARY_HEADER = ("test", "config", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "peak mem",
                  "KV tokens", "verdict")


def summary_lines(report: RunReport) -> list[str]:
    """An aligned table: test, config, tok/s, TTFT p50/p99, TPOT p50, peak memory, verdict."""
    rows = []
    for t in report.tests:
        r = t.result
        if r is None:
            rows.append([t.test_id, "-", "-", "-", "-", "-", "-", "-", t.label])
            continue
        kv = r.memory.kv_cache_tokens
        rows.append([
            t.test_id,
            config_label(t),
            num(r.output_tok_s),
            num(r.ttft.p50, ".1f") + " ms",
            num(r.ttft.p99, ".1f") + " ms",
            num(r.tpot.p50, ".2f") + " ms",
            num(r.memory.peak_process_gib, ".2f") + " GiB",
            num(kv, ",d") if kv else "-",
            t.label,
        ])
    right = (False, False, True, True, True, True, True, True, False)
    return text_table(SUMMARY_HEADER, rows, right)


def detail_lines(report: RunReport) -> list[str]:
    """Improvements, missing or stale baselines and disturbed runs, one line each."""
    return [f"{t.test_id}: {note}" for t in report.tests for note in t.notes
            if note not in t.limit_failures and note not in t.errors]
