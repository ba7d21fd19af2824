"""The suite table: one row per perf test of one or more reports, the figures a team publishes.

Per config: output tok/s (and its GPU cost per million tokens and per request, where
priced), TTFT and TPOT p50/p99, peak memory, KV-cache tokens against the card's formula,
the share of the GPU's peak memory bandwidth a decode-bound run reads (derived.py),
the engine start and the time spent measuring; then the wall time of all tests with the
engine starts and the measuring counted apart from the rest. ``python -m pytest_llmperf table REPORT.json...``
prints it from ``--llmperf-json`` files, as text or Markdown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..results import PerfResult
from .model import RunReport, TestRecord
from .table import markdown_table, text_table
from .terminal import config_label, num

HEADER = ("test", "config", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99",
          "peak mem", "KV tokens", "KV / formula", "roofline", "start", "measured", "verdict")
RIGHT = (False, False, *([True] * 11), False)
# Inserted after "out tok/s" where a report priced its runs (derived.py names them).
COST_COLUMNS = (("cost_per_mtok_usd", "$ / M out tok", "${:,.3f}"),
                ("cost_per_request_usd", "$ / request", "${:,.5f}"))


@dataclass(frozen=True)
class Totals:
    tests: int
    measured: int  # tests with a result
    engine_start_s: float  # the starts the results name (a shared engine's start counted once)
    measuring_s: float  # the trials' own time
    wall_s: float | None = None  # the tests' own wall time, where the reports carry it

    def line(self) -> str:
        text = (f"{self.tests} test(s), {self.measured} measured: engine starts "
                f"{self.engine_start_s:,.1f} s, measuring {self.measuring_s:,.1f} s")
        if self.wall_s is None:
            return text
        rest = max(0.0, self.wall_s - self.engine_start_s - self.measuring_s)
        return (f"{text}, of {self.wall_s:,.1f} s in the tests (the other {rest:,.1f} s: "
                "vLLM imports, warm-ups, confirming starts, engine stops)")


def _results(t: TestRecord) -> tuple[PerfResult, ...]:
    """Every result the test measured: its sweep's points, else the one result."""
    return t.points or ((t.result,) if t.result is not None else ())


def _measuring_s(t: TestRecord) -> float:
    return sum(trial.elapsed_s for r in _results(t) for trial in r.trials)


def _kv_share(t: TestRecord) -> str:
    r = t.result
    assert r is not None
    got, card = r.memory.kv_cache_tokens, r.memory.predicted_kv_cache_tokens
    return f"{got / card:.1%}" if got and card else "-"


def _row(t: TestRecord) -> list[str]:
    r = t.result
    if r is None:
        return [t.test_id, "-", *(["-"] * 11), t.label]
    return [
        t.test_id,
        config_label(t),
        num(r.output_tok_s),
        num(r.ttft.p50, ".1f") + " ms",
        num(r.ttft.p99, ".1f") + " ms",
        num(r.tpot.p50, ".2f") + " ms",
        num(r.tpot.p99, ".2f") + " ms",
        num(r.memory.peak_process_gib, ".2f") + " GiB",
        num(r.memory.kv_cache_tokens, ",d") if r.memory.kv_cache_tokens else "-",
        _kv_share(t),
        _figure(t, "roofline_share", "{:.0%}"),
        num(r.start_time_s, ".1f") + " s",
        num(_measuring_s(t), ".1f") + " s",
        t.label,
    ]


def totals(reports: Sequence[RunReport]) -> Totals:
    """Engine starts apart from measuring. Tests that share an engine carry the same start
    (same config, same start time), so each distinct start is counted once; a sweep's
    points count their own starts."""
    starts: dict[tuple[str, str, float], float] = {}
    tests = measured = 0
    measuring = 0.0
    walls = [t.wall_s for report in reports for t in report.tests if t.wall_s is not None]
    for report in reports:
        for t in report.tests:
            tests += 1
            if t.result is None:
                continue
            measured += 1
            measuring += _measuring_s(t)
            for r in _results(t):
                starts[(t.hardware_key or "", r.engine.label(), r.start_time_s)] = r.start_time_s
    return Totals(tests, measured, sum(starts.values()), measuring, sum(walls) if walls else None)


def _figure(t: TestRecord, name: str, fmt: str) -> str:
    """A derived figure of the test, "-" where it has none (or NaN)."""
    value = t.derived.get(name)
    return "-" if value is None or value != value else fmt.format(value)


def suite_table(reports: Sequence[RunReport], markdown: bool = False) -> list[str]:
    """The table over every test of ``reports`` (in their order), then the totals line;
    with cost columns after throughput where a run had --llmperf-gpu-cost-per-hour."""
    tests = [t for report in reports for t in report.tests]
    header, right, rows = list(HEADER), list(RIGHT), [_row(t) for t in tests]
    for col, (name, title, fmt) in enumerate(COST_COLUMNS, start=3):
        if any(name in t.derived for t in tests):
            header.insert(col, title)
            right.insert(col, True)
            for row, t in zip(rows, tests, strict=True):
                row.insert(col, _figure(t, name, fmt))
    lines = (markdown_table if markdown else text_table)(header, rows, right)
    return [*lines, "", totals(reports).line()]
