"""What every command shares: exit codes, opening the store, and printing (rich when installed).

Exit codes: 0 ok; 1 a finding or problem (doctor found one, reset not
confirmed, unknown model price); 2 a usage error (bad arguments, no or bad
store URL, a store the CLI cannot read); 3 the store is unavailable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, TextIO

from ..errors import BudgetStoreUnavailable, ConfigError
from ..stores import ENV_VAR, MemoryStore, Store, store_from_url

__all__ = [
    "EXIT_OK",
    "EXIT_PROBLEM",
    "EXIT_STORE",
    "EXIT_USAGE",
    "CliError",
    "bar",
    "money",
    "open_store",
    "store_parent",
    "table",
]

EXIT_OK, EXIT_PROBLEM, EXIT_USAGE, EXIT_STORE = 0, 1, 2, 3


class CliError(Exception):
    """A message for the user and the exit code that goes with it."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def store_parent() -> argparse.ArgumentParser:
    """The ``--store`` option of every command that reads the store."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--store",
        metavar="URL",
        help=f"the store the guarded app uses, e.g. redis://host:6379/0 (default: ${ENV_VAR})",
    )
    p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="seconds per store operation")
    return p


def open_store(args: argparse.Namespace) -> Store:
    """The store named by ``--store``, else ``$BUDGETGUARD_STORE``; a clear error for anything else."""
    url = getattr(args, "store", None) or os.environ.get(ENV_VAR)
    if not url:
        raise CliError(
            f"no store given: pass --store redis://host:6379/0 or set ${ENV_VAR} to the URL the app uses"
        )
    try:
        store = store_from_url(url, timeout=args.timeout)
    except ConfigError as e:
        raise CliError(str(e)) from None
    except BudgetStoreUnavailable as e:
        raise CliError(str(e), EXIT_STORE) from None
    if isinstance(store, MemoryStore):
        raise CliError(
            "memory:// keeps budgets inside the guarded app's own process, so no other process (this CLI "
            "included) can see them; point --store or $BUDGETGUARD_STORE at the Redis the app uses"
        )
    return store


def money(v: Decimal) -> str:
    """Exact dollars as plain text (never an exponent): what ``--json`` and exports write."""
    return format(v, "f")


def bar(fraction: float, width: int = 20) -> str:
    """A plain-text usage bar: ``[#######.............]  35%``."""
    f = min(max(fraction, 0.0), 1.0)
    filled = round(f * width)
    return f"[{'#' * filled}{'.' * (width - filled)}] {fraction * 100:4.0f}%"


def _rich() -> Any:
    try:
        import rich.box
        import rich.console
        import rich.table
    except ImportError:
        return None
    return rich


def table(
    out: TextIO,
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[str] = (),
    title: str | None = None,
    bars: Sequence[float] | None = None,
) -> None:
    """Print rows under ``columns``: a rich table when rich is installed, aligned text otherwise.

    ``bars`` adds a usage column, one fraction per row.
    """
    rich = _rich()
    if rich is not None:
        from rich.console import Console
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        t = Table(title=title, box=rich.box.SIMPLE_HEAD)
        widths = [max([len(c), *(len(r[j]) for r in rows)]) for j, c in enumerate(columns)]
        for c, w in zip(columns, widths, strict=True):
            first = c == columns[0]  # the scope: folded rather than cut when the terminal is narrow
            t.add_column(
                c,
                justify="right" if c in right else "left",
                no_wrap=not first,
                overflow="fold" if first else "ellipsis",
                min_width=min(w, 24) if first else w,
            )
        if bars is not None:
            t.add_column("used", no_wrap=True, min_width=_BAR + 5)
        for i, r in enumerate(rows):
            cells: list[Any] = list(r)
            if bars is not None:
                f = bars[i]
                style = "red" if f >= 1 else "yellow" if f >= 0.8 else "green"
                cells.append(_bar_cell(ProgressBar, f, style))
            t.add_row(*cells)
        needed = sum(w + 3 for w in widths) + (_BAR + 8 if bars is not None else 0) + 2
        width = _width(out) or needed  # a pipe or a file: as wide as the rows need
        Console(file=out, width=width).print(t)
        return
    cols = [*columns, *(["used"] if bars is not None else [])]
    body = [[*r, *([bar(bars[i])] if bars is not None else [])] for i, r in enumerate(rows)]
    widths = [max([len(c), *(len(r[j]) for r in body)]) for j, c in enumerate(cols)]
    if title:
        out.write(title + "\n")

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if name in right else c.ljust(w)
            for c, w, name in zip(cells, widths, cols, strict=True)
        ]
        return "  ".join(parts).rstrip() + "\n"

    out.write(line(cols))
    out.write(line(["-" * w for w in widths]))
    for r in body:
        out.write(line(r))


def _bar_cell(progress_bar: Any, fraction: float, style: str) -> Any:
    from rich.table import Table

    grid = Table.grid(padding=(0, 1))
    grid.add_row(
        progress_bar(total=1.0, completed=min(fraction, 1.0), width=_BAR, complete_style=style),
        f"{fraction * 100:.0f}%",
    )
    return grid


_BAR = 16  # characters of a rich usage bar


def _width(out: TextIO) -> int:
    """The terminal's width, or 0 when ``out`` is no terminal."""
    try:
        return os.get_terminal_size(out.fileno()).columns if out.isatty() else 0
    except (AttributeError, OSError, ValueError):
        return 0
