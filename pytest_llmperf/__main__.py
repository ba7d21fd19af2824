"""``python -m pytest_llmperf history|merge|table|drift``: the report core from the command line.

``history DB``: trends per test across the runs stored with ``--llmperf-history``,
change points flagged, optionally as PNGs. ``merge SHARD.json ...``: one report (JSON,
Markdown, plots) from the ``--llmperf-json`` files of several shards or runners.
``table REPORT.json ...``: the suite table (reports/suite_table.py) of one or more runs.
``drift add REPORT.json ...`` / ``drift show HARDWARE_KEY``: the record of a runner's
unchanged runs that bounds the suite check's threshold (rundrift.py).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .reports.history import HistoryError
from .reports.json import ReportError
from .reports.model import MergeError
from .reports.plots import HISTORY_METRICS


def _history(args: argparse.Namespace) -> int:
    from .metrics import METRICS
    from .reports.history import HistoryStore, trend_lines

    unknown = [m for m in args.metric if m not in METRICS]
    if unknown:
        raise SystemExit(f"history: unknown metric {unknown[0]!r}; known: {', '.join(METRICS)}")
    if not Path(args.db).is_file():
        raise SystemExit(f"history: {args.db}: no such file (write one with --llmperf-history)")
    metrics = args.metric or list(HISTORY_METRICS)
    with HistoryStore(args.db) as store:
        for line in trend_lines(store, metrics, hardware_key=args.hardware, test_filter=args.test):
            print(line)
        if args.plots:
            from .reports.plots import write_history_plots

            keep = (lambda t: args.test in t) if args.test else None
            written = write_history_plots(store, args.plots, hardware_key=args.hardware, keep=keep)
            print(f"\n{len(written)} plot(s) written to {args.plots}")
    return 0


def _merge(args: argparse.Namespace) -> int:
    from .reports.json import read_json
    from .reports.markdown import headline
    from .reports.model import merge_reports
    from .reports.outputs import OutputPaths, write_outputs

    merged = merge_reports([(path, read_json(path)) for path in args.reports])
    if args.suite_check is not None:
        from dataclasses import replace

        from .rundrift import DriftError, load_for
        from .suitecheck import check_suite

        try:
            drift = load_for(args.baselines, {t.hardware_key for t in merged.tests})
        except DriftError as exc:
            print(f"merge: run-drift file unusable: {exc}", file=sys.stderr)
            return 2
        merged = replace(merged, suite_checks=check_suite(merged.tests, args.suite_check,
                                                          drift=drift))
        for check in merged.suite_checks:
            print("\n".join(check.lines()))
    paths = OutputPaths(json=args.json, markdown=args.markdown, plots=args.plots,
                        step_summary=args.step_summary)
    print(headline(merged).removeprefix("## "))
    for line in write_outputs(merged, paths):
        print(line)
    return 1 if args.check and merged.failed else 0


def _drift_add(args: argparse.Namespace) -> int:
    from .reports.json import read_json
    from .rundrift import DriftError, RunDrift, load, path_for, runs_from_report, save

    if args.label and len(args.reports) > 1:
        print("drift add: --label names one run; give one report per call", file=sys.stderr)
        return 2
    try:
        found = []
        for path in args.reports:  # every report is checked before any file is written
            label = args.label or Path(path).name.split(".")[0]
            found += runs_from_report(read_json(path), path, label, args.probe)
        updated: dict[str, RunDrift] = {}
        files = {key: path_for(args.baselines, key) for key, _ in found}
        for key, run in found:
            if key not in updated:
                updated[key] = load(files[key], key) or RunDrift(key)
            updated[key] = updated[key].with_run(run, files[key])
    except DriftError as exc:
        print(f"drift add: {exc}", file=sys.stderr)
        return 2
    for key, drift in updated.items():
        save(files[key], drift)
        print(f"{files[key]}: {len(drift.runs)} unchanged run(s)")
    return 0


def _drift_show(args: argparse.Namespace) -> int:
    from .metrics import METRICS
    from .rundrift import DriftError, describe, load, path_for
    from .suitecheck import ALPHA

    file = path_for(args.baselines, args.hardware_key)
    try:
        drift = load(file, args.hardware_key)
    except DriftError as exc:
        print(f"drift show: {exc}", file=sys.stderr)
        return 2
    if drift is None:
        print(f"{file}: no such file (no drift "
              "recorded: the suite check uses its share of the tolerance alone)")
        return 0
    print(f"{file}: {len(drift.runs)} unchanged run(s); "
          f"the suite check's threshold is never below the floor (alpha {ALPHA:g})")
    for line in describe(drift, list(METRICS), ALPHA):
        print(f"  {line}")
    return 0


def _table(args: argparse.Namespace) -> int:
    from .reports.json import read_json
    from .reports.suite_table import suite_table

    for line in suite_table([read_json(path) for path in args.reports], markdown=args.markdown):
        print(line)
    return 0


def _share(text: str) -> float | None:
    """--suite-check SHARE|off, read as --llmperf-suite-check is (None: off)."""
    from .options import OptionError, parse_suite_check

    try:
        return parse_suite_check(text)
    except OptionError as exc:
        raise argparse.ArgumentTypeError(exc.reason.lstrip("=")) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pytest_llmperf",
                                     description="pytest-llmperf reports from the command line")
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("history", help="trends and change points from a --llmperf-history file")
    h.add_argument("db", help="the SQLite file written by --llmperf-history")
    h.add_argument("--test", help="only tests whose id contains this text (default: all)")
    h.add_argument("--hardware", help="only this hardware key (default: all)")
    h.add_argument("--metric", action="append", default=[],
                   help=f"metric to show, repeatable (default: {', '.join(HISTORY_METRICS)})")
    h.add_argument("--plots", metavar="DIR", help="also write history PNGs here (default: none)")
    h.set_defaults(func=_history)
    m = sub.add_parser("merge", help="one report from the --llmperf-json files of several shards")
    m.add_argument("reports", nargs="+", metavar="SHARD.json")
    m.add_argument("--json", metavar="PATH", help="write the merged JSON report (default: none)")
    m.add_argument("--markdown", metavar="PATH", help="write the merged Markdown (default: none)")
    m.add_argument("--plots", metavar="DIR", help="write the merged plots (default: none)")
    m.add_argument("--step-summary", action="store_true",
                   help="append the Markdown to $GITHUB_STEP_SUMMARY (default: off)")
    m.add_argument("--check", action="store_true",
                   help="exit 1 when any test failed or regressed, or the suite check failed "
                        "(default: exit 0)")
    m.add_argument("--suite-check", metavar="SHARE|off", type=_share, default=None,
                   help="apply the suite check over the merged tests: fail when a metric's median "
                        "change is worse than SHARE of its tolerance (default: not applied)")
    m.add_argument("--baselines", metavar="DIR", default="baselines",
                   help="where the suite check reads each runner's run-drift.json "
                        "(default: baselines)")
    m.set_defaults(func=_merge)
    d = sub.add_parser("drift", help="the suite check's record of a runner's run-to-run drift "
                                     "(baselines/<hardware>/run-drift.json)")
    dsub = d.add_subparsers(dest="drift_command", required=True)
    da = dsub.add_parser("add", help="record unchanged runs: each report's suite-check medians")
    da.add_argument("reports", nargs="+", metavar="REPORT.json[.gz]",
                    help="--llmperf-json reports of unchanged runs against stored baselines")
    da.add_argument("--label", help="the run's name in the file (default: the report's file "
                                    "name; one report only)")
    da.add_argument("--probe", type=float, help="the runner speed probe's score of that run "
                                                "(default: not recorded)")
    da.add_argument("--baselines", metavar="DIR", default="baselines",
                    help="the baselines directory (default: baselines)")
    da.set_defaults(func=_drift_add)
    ds = dsub.add_parser("show", help="the recorded runs of one runner and the floor they set")
    ds.add_argument("hardware_key")
    ds.add_argument("--baselines", metavar="DIR", default="baselines",
                    help="the baselines directory (default: baselines)")
    ds.set_defaults(func=_drift_show)
    t = sub.add_parser("table", help="the suite table (tok/s, latency, memory, KV vs the card, "
                                     "roofline share, starts apart) of --llmperf-json files")
    t.add_argument("reports", nargs="+", metavar="REPORT.json[.gz]")
    t.add_argument("--markdown", action="store_true", help="a Markdown table (default: text)")
    t.set_defaults(func=_table)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ReportError, MergeError, HistoryError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
