"""The one table renderer: aligned plain text for terminals, pipe tables for Markdown."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]],
               right: Sequence[bool] | None = None) -> list[str]:
    """Columns padded to their widest cell, a dashed rule under the header.

    ``right[i]`` right-aligns column i (numbers); the default left-aligns all.
    """
    align = list(right) if right is not None else [False] * len(header)
    widths = [max(len(str(row[i])) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).rjust(w) if r else str(c).ljust(w)
                 for c, w, r in zip(cells, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return [line(header), rule, *(line(row) for row in rows)]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   right: Sequence[bool] | None = None) -> list[str]:
    """A GitHub pipe table; ``|`` inside cells is escaped so a test id cannot break it."""
    align = list(right) if right is not None else [False] * len(header)

    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(h) for h in header) + " |",
           "|" + "|".join("---:" if r else "---" for r in align) + "|"]
    out.extend("| " + " | ".join(cell(c) for c in row) + " |" for row in rows)
    return out
