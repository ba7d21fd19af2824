"""``python -m pytest_llmperf history|merge|table``: the report core from the command line.

``history DB``: trends per test across the runs stored with ``--llmperf-history``,
change points flagged, optionally as PNGs. ``merge SHARD.json ...``: one report (JSON,
Markdown, plots) from the ``--llmperf-json`` files of several shards or runners.
``table REPORT.json ...``: the suite table (reports/suite_table.py) of one or more runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .reports.history import HistoryError
from .reports.json import ReportError
from .reports.model import MergeError
from .reports.plots import HISTORY_METRICS


def _history(args: argparse.Namespace) -> int:
    from pathlib import Path

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

        from .suitecheck import check_suite

        merged = replace(merged, suite_checks=check_suite(merged.tests, args.suite_check))
        for check in merged.suite_checks:
            print("\n".join(check.lines()))
    paths = OutputPaths(json=args.json, markdown=args.markdown, plots=args.plots,
                        step_summary=args.step_summary)
    print(headline(merged).removeprefix("## "))
    for line in write_outputs(merged, paths):
        print(line)
    return 1 if args.check and merged.failed else 0


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
    m.set_defaults(func=_merge)
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
