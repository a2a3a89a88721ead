"""Tables, the one way the package writes them: Markdown (run summaries, the sweep's results, query analyses, the
official mapping) and plain text for the terminal (cache listings), from already formatted cells, through
`tabulate`."""

from __future__ import annotations

from collections.abc import Sequence

from tabulate import tabulate


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence], align: Sequence[str] | None = None) -> str:
    """A Markdown (pipe) table of already formatted cells; ``align`` per column (``"left"``, ``"right"``)."""
    return tabulate(rows, headers=headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def text_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A plain, column-aligned table of already formatted cells, for a terminal."""
    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)
