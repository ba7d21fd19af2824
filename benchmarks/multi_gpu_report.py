"""Summarise benchmarks/multi_gpu.sh's results: the tp table and the xdist speed-up.

    python benchmarks/multi_gpu_report.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _tests(path: Path) -> list[dict]:
    return json.loads(path.read_text())["tests"] if path.exists() else []


def _row(t: dict) -> str:
    r = t["result"]
    if r is None:
        return f"| {t['test_id']} | - | - | - | - | {t['verdict']} |"
    trials = r["trials"]
    tok_s = sorted(x["output_tokens"] / x["elapsed_s"] for x in trials)
    median = tok_s[len(tok_s) // 2]
    e2e = sorted(x["e2e_ms"]["mean"] for x in trials)[len(trials) // 2]
    tpot = sorted(x["tpot_ms"]["p50"] for x in trials)[len(trials) // 2]
    return (f"| {t['test_id']} | tp{r['engine']['tp']} | {median:,.1f} | {e2e:,.1f} | "
            f"{tpot:.2f} | {t['verdict']} |")


def main(out: Path) -> int:
    print("| test | tp | output tok/s (median) | mean latency ms | TPOT p50 ms | verdict |")
    print("| --- | --- | --- | --- | --- | --- |")
    for t in _tests(out / "tp-table.json"):
        print(_row(t))
    walls = {}
    for name in ("1", "n2"):
        f = out / f"wall-{name}.txt"
        walls[name] = float(f.read_text()) if f.exists() else None
    one, two = walls["1"], walls["n2"]
    n1, n2 = len(_tests(out / "suite-1.json")), len(_tests(out / "suite-n2.json"))
    print()
    print(f"suite wall time: one process {one} s ({n1} results), -n 2 {two} s ({n2} results)")
    if one and two:
        print(f"speed-up with -n 2: {one / two:.2f}x (goal: at least 1.8x)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
