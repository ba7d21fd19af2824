"""One Markdown row per CPU validation run (benchmarks/cpu-validate.sh), for RESULTS.md.

Reads NAME.json, NAME.log and summary.txt of each run named from the folder given and
prints one Markdown row per run, in the order named:

    python3 benchmarks/cpu_validation.py /tmp/cpu-validate slow aa-1 aa-2
"""

import json
import os
import re
import sys
from pathlib import Path

PASSING = ("pass", "inconclusive", "skip", "skipped")


def main(folder: Path, runs: list[str]) -> None:
    summary = (folder / "summary.txt").read_text()
    for n in runs:
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
    if len(sys.argv) < 3:
        sys.exit("usage: cpu_validation.py FOLDER NAME...")
    main(Path(sys.argv[1]), sys.argv[2:])
