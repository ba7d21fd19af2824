"""How far do unchanged runs of the suites move? (CPU noise, to set CPU tolerances)

Two sources, both from ordinary runs of ``pytest suites/``:

- ``--starts BASELINE.json ...``: baseline files recorded with
  ``--llmperf-baseline-starts N`` hold every trial of N engine starts in order; per
  test and metric, the spread of the N per-start medians is the start-to-start drift
  a later run (a new engine start) meets.
- ``RUN.json ...``: the ``--llmperf-json`` files of unchanged runs against those
  baselines: every comparison's change, how many fell beyond the tolerance, and a
  tolerance that would have passed them all with a 1.5x margin. Planted slowdown runs
  (``--llmperf-slowdown``) given with ``--slowed`` show what the gate caught.

    python benchmarks/cpu_noise.py --starts baselines/cpu-*/suites/*.json run1.json run2.json --slowed slow.json
    python benchmarks/cpu_noise.py run1.json run2.json --slowed slow.json --shift baselines/cpu-*/suites/*.json

``--shift``: each run's median change in throughput over its tests, from the trials (so
also for runs whose entries were not compared).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def changes(paths: list[Path]) -> dict[str, list[tuple[str, float, float, str]]]:
    """metric -> (test id, change, tolerance, verdict) for every comparison in the files."""
    out: dict[str, list[tuple[str, float, float, str]]] = defaultdict(list)
    for path in paths:
        doc = json.loads(path.read_text())
        for test in doc["tests"]:
            for row in test.get("comparison") or []:
                out[row["metric"]].append((test["test_id"], row["change"], row["tolerance"], row["verdict"]))
    return out


def start_spreads(paths: list[Path], starts: int) -> dict[str, list[tuple[str, float]]]:
    """metric -> (test id, (max - min) / median of the per-start medians) per entry."""
    out: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for path in paths:
        for test_id, entry in json.loads(path.read_text())["entries"].items():
            trials = int(entry["workload"]["trials"])
            for metric, record in entry["metrics"].items():
                values = record["values"]
                if len(values) != starts * trials:
                    continue  # run-wide figures (one value per start) or another layout
                medians = [statistics.median(values[i * trials:(i + 1) * trials]) for i in range(starts)]
                centre = statistics.median(medians)
                if centre:
                    out[metric].append((test_id, (max(medians) - min(medians)) / abs(centre)))
    return out


def run_shifts(paths: list[Path], baselines: list[Path], metric: str = "output_tok_s"
               ) -> list[tuple[str, float, float, float]]:
    """(run, median, min, max) over its tests of (test median / baseline median - 1) for
    ``metric``, from the trials themselves: it also reads runs whose entries were not
    compared (a probe beyond its limit, before e89c69e)."""
    from pytest_llmperf.results import PerfResult
    from pytest_llmperf.startgate import start_value

    base: dict[str, float] = {}
    for path in baselines:
        suite = f"suites/{path.stem}.py"
        for test_id, entry in json.loads(path.read_text())["entries"].items():
            if metric in entry["metrics"]:
                base[f"{suite}::{test_id}"] = float(entry["metrics"][metric]["median"])
    out = []
    for path in paths:
        moves = []
        for test in json.loads(path.read_text())["tests"]:
            if test["test_id"] in base and test.get("result"):
                values = PerfResult.from_json(test["result"]).metric_values().get(metric)
                if values:
                    moves.append(start_value(values) / base[test["test_id"]] - 1)
        if moves:
            out.append((path.stem, statistics.median(moves), min(moves), max(moves)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="*", type=Path, help="--llmperf-json files of unchanged runs")
    ap.add_argument("--starts", nargs="*", type=Path, default=[],
                    help="baseline files recorded with --llmperf-baseline-starts N")
    ap.add_argument("--n-starts", type=int, default=3, help="N of those recordings (default: 3)")
    ap.add_argument("--slowed", nargs="*", type=Path, default=[], help="--llmperf-json files of slowed runs")
    ap.add_argument("--shift", nargs="*", type=Path, default=[], metavar="BASELINE.json",
                    help="with runs (and --slowed): each run's median throughput change over its "
                         "tests against these baseline files")
    args = ap.parse_args()
    if args.shift:
        print("| run | tests' median output tok/s change | range over the tests |")
        print("| --- | ---: | --- |")
        for name, median, lo, hi in run_shifts([*args.runs, *args.slowed], args.shift):
            print(f"| {name} | {median:+.1%} | {lo:+.1%} .. {hi:+.1%} |")
        return
    if args.starts:
        print(f"start-to-start spread over {args.n_starts} engine starts (range / median of per-start medians)")
        print("| metric | tests | median spread | max spread | test with the max |")
        print("| --- | --- | --- | --- | --- |")
        for metric, rows in sorted(start_spreads(args.starts, args.n_starts).items()):
            spreads = [s for _, s in rows]
            worst = max(rows, key=lambda r: r[1])
            print(f"| {metric} | {len(rows)} | {statistics.median(spreads):.1%} | {worst[1]:.1%} | {worst[0]} |")
        print()
    if not args.runs:
        return
    print(f"{len(args.runs)} unchanged run(s)")
    print("| metric | comparisons | median abs change | max abs change | beyond tolerance | tolerance | 1.5 x max |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for metric, rows in sorted(changes(args.runs).items()):
        absolute = [abs(c) for _, c, _, _ in rows]
        beyond = sum(v == "regression" for *_, v in rows)
        print(f"| {metric} | {len(rows)} | {statistics.median(absolute):.1%} | {max(absolute):.1%} "
              f"| {beyond} | {rows[0][2]:.0%} | {1.5 * max(absolute):.0%} |")
    for path in args.slowed:
        doc = json.loads(path.read_text())
        failed = [t["test_id"] for t in doc["tests"] if t["verdict"].startswith("FAIL")]
        print(f"\n{path}: {len(failed)} of {len(doc['tests'])} tests failed")
        for t in doc["tests"]:
            rows = {r["metric"]: r for r in t.get("comparison") or []}
            if "output_tok_s" in rows:
                r = rows["output_tok_s"]
                print(f"  {t['test_id']}: output_tok_s {r['change']:+.1%} ({r['verdict']}), {t['verdict']}")


if __name__ == "__main__":
    main()
