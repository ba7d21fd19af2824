"""Write every report format a run asked for; what the plugin and the CLI both call."""

from __future__ import annotations

from dataclasses import dataclass

from .model import RunReport


@dataclass(frozen=True)
class OutputPaths:
    """Where each format goes; None leaves a format out."""

    json: str | None = None
    markdown: str | None = None
    plots: str | None = None
    history: str | None = None
    step_summary: bool = True  # with markdown: append it to $GITHUB_STEP_SUMMARY when set


def write_outputs(report: RunReport, paths: OutputPaths) -> list[str]:
    """Write the requested formats; one line per file written, for the terminal."""
    lines: list[str] = []
    if paths.json:
        from .json import write_json

        lines.append(f"results written to {write_json(report, paths.json)}")
    if paths.history:
        from .history import HistoryStore

        with HistoryStore(paths.history) as store:
            runs = store.append(report)
        lines.append(f"history: {len(runs)} run(s) appended to {paths.history}")
    if paths.markdown:
        from .markdown import append_step_summary, render_markdown, write_markdown

        lines.append(f"Markdown report written to {write_markdown(report, paths.markdown)}")
        if paths.step_summary and (summary := append_step_summary(render_markdown(report))):
            lines.append(f"Markdown report appended to {summary}")
    if paths.plots:
        from .plots import write_plots

        written = write_plots(report, paths.plots, history=paths.history)
        lines.append(f"{len(written)} plot(s) written to {paths.plots}")
    return lines
