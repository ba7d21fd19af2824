"""A pytest plugin for device runs that may be cut off: each test's outcome, duration and
(for a failure) its full report are appended to $LLMPERF_LIVE as the test ends, so a run
lost mid-way still says which test failed and why (pytest prints failures only at the end).

    LLMPERF_LIVE=$OUT/live.txt python3 -m pytest -p benchmarks.live_reports ...
"""

import os
import time


def pytest_runtest_logreport(report):
    path = os.environ.get("LLMPERF_LIVE")
    if not path or (report.when != "call" and not report.failed):
        return
    lines = [f"{time.strftime('%H:%M:%S')} {report.nodeid} {report.when} {report.outcome} "
             f"in {report.duration:.1f}s"]
    if report.failed:
        lines.append(report.longreprtext)
    with open(path, "a", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
