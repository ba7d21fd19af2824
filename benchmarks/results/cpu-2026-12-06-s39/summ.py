"""The table of RESULTS.md "CPU speed states: re-validation of 2026-12-06 (pooled fast state)".

Reads NAME.json, NAME.log and summary.txt of each run from the folder given (default
/tmp/val39, where run.sh writes them) and prints one Markdown row per run.
"""

import json
import os
import re
import sys
from pathlib import Path

RUNS = ["unchanged-1", "slow", "aa-1", "aa-2", "aa-3"]
PASSING = ("pass", "inconclusive", "skip", "skipped")


def main(folder: Path) -> None:
    summary = (folder / "summary.txt").read_text()
    for n in RUNS:
        if not os.path.exists(folder / f"{n}.json"):
            continue
        report = json.loads((folder / f"{n}.json").read_text())
        probe = re.search(r"runner speed probe: ([0-9.]+)", (folder / f"{n}.log").read_text())
        shifts = {s["metric"]: s for c in report["suite_checks"] for s in c["shifts"]}

        def median(metric: str, shifts: dict = shifts) -> str:
            s = shifts.get(metric)
            return f"{s['median_change']:+.1%}" if s else "-"

        others = [t["test_id"].split("::")[-1] for t in report["tests"]
                  if t["outcome"] not in PASSING]
        rc = re.search(rf"^{n} rc=(\d+) (\d+)s", summary, re.M)
        print(f"| {n} | {probe.group(1) if probe else '?'} | {rc.group(1) if rc else '?'} "
              f"| {median('output_tok_s')} | {median('tpot_p50_ms')} | {median('ttft_p50_ms')} "
              f"| {report['summary']['outcomes']} | {', '.join(others) or '-'} "
              f"| {rc.group(2) if rc else '?'} s |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/val39"))
