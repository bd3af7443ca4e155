"""Tables for the CLI: a rich table on a terminal, aligned plain columns when piped.

Piped output keeps one row per line with the last (longest) column unpadded, so it
greps and diffs well; cells are text, never markup (a reason may hold brackets).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text


def print_table(console: Console, columns: Sequence[str], rows: Sequence[Sequence[str]], *,
                title: str | None = None, right: frozenset[str] = frozenset(),
                style: Callable[[str, str], str] = lambda column, cell: "") -> None:
    if console.is_terminal:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column, justify="right" if column in right else "left", overflow="fold")
        for row in rows:
            table.add_row(*(Text(cell, style=style(column, cell)) for column, cell in zip(columns, row)))
        console.print(table)
        return
    if title:
        console.print(title, markup=False, highlight=False)
    widths = [max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns[:-1])]
    for row in [columns, *rows]:
        cells = [cell.rjust(w) if column in right else cell.ljust(w)
                 for column, cell, w in zip(columns, row, widths)]
        console.print("  ".join([*cells, row[-1]]).rstrip(), markup=False, highlight=False, soft_wrap=True)
