"""A pytest plugin for device runs that may be cut off: each test's outcome, duration and
(for a failure) its full report are appended to $LLMPERF_LIVE as the test ends, so a run
lost mid-way still says which test failed and why (pytest prints failures only at the end),
and each measured test's figures (the median over its trials of every gated metric, from
the metric catalogue's ``PerfResult.metric_values``) as it is gated, so the numbers of the
tests that finished survive too (the report files are written only when the session ends).

    LLMPERF_LIVE=$OUT/live.txt python3 -m pytest -p benchmarks.live_reports ...
"""

import os
import statistics
import time


def _append(lines):
    path = os.environ.get("LLMPERF_LIVE")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")


def figures_line(nodeid, result):
    """``NODEID figures: metric=median ...`` for one measured test's PerfResult."""
    values = {name: statistics.median(vals)
              for name, vals in result.metric_values().items() if vals}
    return f"{nodeid} figures: " + " ".join(f"{k}={v:.5g}" for k, v in values.items())


def pytest_llmperf_result(config, item, result, comparison):
    if result is not None and os.environ.get("LLMPERF_LIVE"):
        _append([f"{time.strftime('%H:%M:%S')} {figures_line(item.nodeid, result)}"])


def pytest_runtest_logreport(report):
    if not os.environ.get("LLMPERF_LIVE") or (report.when != "call" and not report.failed):
        return
    lines = [f"{time.strftime('%H:%M:%S')} {report.nodeid} {report.when} {report.outcome} "
             f"in {report.duration:.1f}s"]
    if report.failed:
        lines.append(report.longreprtext)
    _append(lines)
