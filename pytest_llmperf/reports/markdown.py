"""``--llmperf-markdown``: a report for a pull request, readable at a glance.

A headline with the counts, one table row per test (failures first) with the key
metrics and their change against the baseline, then per test a folded
``<details>`` block with every compared metric and the notes. The same text goes to
``$GITHUB_STEP_SUMMARY`` in GitHub Actions and into the PR comment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..atomic import write_atomic
from ..regression import _fmt_pct
from ..results import PerfResult
from .model import COUNT_WORDS, RunReport, TestRecord
from .table import markdown_table
from .terminal import num

# The marker for finding our own PR comment again (the workflow updates it in place).
COMMENT_MARKER = "<!-- pytest-llmperf report -->"

ICONS: dict[str, str] = {
    "regression": "❌", "limits": "❌", "failed": "❌", "error": "❌",
    "inconclusive": "❔", "stale": "⚠️", "missing": "⚠️",
    "improved": "🚀", "updated": "📝", "unchanged": "🟰", "pass": "✅",
}

# (metric name, column title, how to read it off a result, format, unit suffix)
KEY_METRICS: tuple[tuple[str, str, Callable[[PerfResult], float | None], str, str], ...] = (
    ("output_tok_s", "out tok/s", lambda r: r.output_tok_s, ",.1f", ""),
    ("ttft_p50_ms", "TTFT p50", lambda r: r.ttft.p50, ",.1f", " ms"),
    ("tpot_p50_ms", "TPOT p50", lambda r: r.tpot.p50, ",.2f", " ms"),
    ("e2e_p99_ms", "E2E p99", lambda r: r.e2e.p99, ",.0f", " ms"),
)


def _machine(report: RunReport, key: str) -> str:
    fp = report.machines.get(key) or {}
    if fp.get("device") == "gpu" and fp.get("gpu_name"):
        what = f"{fp.get('gpu_count', 1)}x {fp['gpu_name']}"
    elif fp.get("cpu_model"):
        what = f"{fp['cpu_model']} ({fp.get('cpu_count', '?')} cores)"
    else:
        what = key
    soft = [f"vLLM {fp['vllm_version']}"] if fp.get("vllm_version") else []
    if fp.get("torch_version"):
        soft.append(f"torch {fp['torch_version']}")
    return f"`{key}`: {what}" + (f", {', '.join(soft)}" if soft else "")


def headline(report: RunReport) -> str:
    counts = report.counts
    icon = "❌" if report.failed else ("⚠️" if {"inconclusive", "stale", "missing"} & set(counts)
                                       else "✅")
    parts = [f"{n} {COUNT_WORDS[o]}" for o, n in counts.items()] or ["no perf tests ran"]
    return f"## {icon} pytest-llmperf: " + ", ".join(parts)


def _cell(t: TestRecord, metric: str, read: Callable[[PerfResult], float | None], fmt: str,
          unit: str) -> str:
    if t.result is None:
        return "-"
    text = num(read(t.result), fmt) + unit
    row = t.comparison_row(metric)
    if row is None:
        return text
    change = _fmt_pct(row.change)
    if row.verdict == "regression":
        return f"{text} **({change})**"
    return f"{text} ({change})"


def _config(t: TestRecord) -> str:
    r = t.result
    if r is None:
        return "-"
    return f"{r.engine.label()}, {r.workload.label()} ({r.device})"


def _details(t: TestRecord) -> list[str]:
    moved = [f"{m.metric} {_fmt_pct(m.change)}" for m in t.comparison or ()
             if m.verdict != "ok"]
    summary = f"<code>{t.test_id}</code>: {t.label}" + (f" ({', '.join(moved)})" if moved else "")
    out = ["<details>", f"<summary>{summary}</summary>", ""]
    if t.result is not None:
        r = t.result
        out.append(f"{_config(t)}; {len(r.trials)} trials; engine start {r.start_time_s:.1f} s"
                   + (f"; vLLM {r.vllm_version}" if r.vllm_version else ""))
        out.append("")
    if t.comparison:
        table = t.comparison_table()
        out.extend(markdown_table(*table.table_cells()))
        out.extend(f"- {line}" for line in table.explanations())
        out.append("")
    elif t.baseline_status in ("missing", "stale", "updated", "unchanged"):
        out.append(f"Baseline: {t.baseline_status}.")
        out.append("")
    notes = t.notes
    if notes:
        out.extend(f"- {n}" for n in notes)
        out.append("")
    out.append("</details>")
    return out


def render_markdown(report: RunReport) -> str:
    """The whole report as GitHub-flavoured Markdown."""
    lines = [COMMENT_MARKER, headline(report), ""]
    for key in sorted(report.machines):
        lines.append(f"- {_machine(report, key)}")
    commits = sorted({t.git_commit[:12] for t in report.tests if t.git_commit})
    if commits:
        lines.append(f"- commit {', '.join(f'`{c}`' for c in commits)}")
    lines.append("")
    for check in report.suite_checks:
        head, *rest = check.lines()
        lines.append(f"**{head}**" if check.failed else head)
        lines.extend(f"- {r.strip()}" for r in rest)
        lines.append("")
    tests = report.by_severity()
    if not tests:
        return "\n".join(lines) + "\n"
    several = len(report.machines) > 1
    header = ["", "test", *(["hardware"] if several else []), "config",
              *(title for _, title, _, _, _ in KEY_METRICS), "verdict"]
    right = [False, False, *([False] if several else []), False,
             *([True] * len(KEY_METRICS)), False]
    rows = [
        [ICONS[t.outcome], f"`{t.test_id}`", *([t.hardware_key or "-"] if several else []),
         _config(t), *(_cell(t, m, read, fmt, unit) for m, _, read, fmt, unit in KEY_METRICS),
         t.label]
        for t in tests
    ]
    lines.extend(markdown_table(header, rows, right))
    lines.append("")
    legend = ("Changes are against the stored baseline for this hardware (paired runs: "
              "against the base commit); **bold** marks a regression: beyond tolerance and noise "
              "against a stored baseline, and against the base commit significantly worse and "
              "not shown to be within tolerance.")
    if any(m.mde is not None for t in tests for m in t.comparison or ()):
        legend += (" In the details, *detectable* is the worsening this runner tells from its "
                   "noise with 90% power.")
    lines.append(legend)
    lines.append("")
    for t in tests:
        lines.extend(_details(t))
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def write_markdown(report: RunReport, path: str | os.PathLike[str]) -> Path:
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, render_markdown(report).encode("utf-8"))
    return target


def append_step_summary(text: str, environ: dict[str, str] | None = None) -> Path | None:
    """Append to GitHub Actions' job summary when ``$GITHUB_STEP_SUMMARY`` is set."""
    env = os.environ if environ is None else environ
    target = env.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    with open(target, "a", encoding="utf-8") as f:
        f.write(text if text.endswith("\n") else text + "\n")
    return Path(target)
