"""What the command line prints: tables for people, JSON for scripts (``--json``).

Nothing in a table is cut: a table is printed at its natural width however narrow the
terminal, so every id in it can be copied into the next command.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console(highlight=False)
# Tables render at their natural width (no table of ours is this wide): nothing is cut.
_tables = Console(highlight=False, width=10_000)


def group(help: str) -> typer.Typer:
    """A command group: plain help (no markup markers, types or panels to decode),
    defaults shown, no pretty tracebacks (expected errors are one line anyway)."""
    return typer.Typer(
        help=help, no_args_is_help=True, rich_markup_mode=None, pretty_exceptions_enable=False
    )


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    return value


def as_json(value: object) -> str:
    return json.dumps(value, default=_plain, ensure_ascii=False, indent=2)


def emit(
    rows: Sequence[Mapping[str, object]],
    *,
    columns: Sequence[str],
    json_out: bool,
    empty: str = "nothing to show",
) -> None:
    """``rows`` as a table (``columns`` in order) or, with ``json_out``, as a JSON list."""
    if json_out:
        typer.echo(as_json([dict(row) for row in rows]))
        return
    if not rows:
        console.print(empty)
        return
    table = Table(*[], box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*(_cell(row.get(column)) for column in columns))
    _tables.print(table)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value)) or "-"
    return str(_plain(value))
