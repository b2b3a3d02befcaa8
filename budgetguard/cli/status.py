"""``status``, ``top``, ``scopes`` and ``reset``: the counters, read and zeroed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from ..definitions import keys_for, label_of
from ..units import format_usd, to_usd
from .common import EXIT_OK, EXIT_PROBLEM, CliError, open_store, store_parent, table
from .counters import Row, collect, standings, usd_row

__all__ = ["add_commands"]


def add_commands(sub: Any) -> None:
    parent = store_parent()
    p = sub.add_parser(
        "status",
        parents=[parent],
        help="every scope's spent, reserved, cap and remaining budget, now",
        description="One row per scope, window and quantity: spent, reserved, cap, remaining, when it "
        "resets, and a usage bar. Caps come from the limit definitions the guards recorded in the store.",
    )
    p.add_argument("--scope", metavar="PREFIX", help="only scopes that begin with PREFIX (as written)")
    p.add_argument("--json", action="store_true", help="machine-readable rows, money as strings")
    p.set_defaults(run=status)

    p = sub.add_parser(
        "top",
        parents=[parent],
        help="the scopes with the most spend in their current windows",
        description="Counters ranked by USD spent in their current window (then tokens, requests).",
    )
    p.add_argument("-n", type=int, default=10, metavar="N", help="how many (default 10)")
    p.add_argument("--json", action="store_true", help="machine-readable rows, money as strings")
    p.set_defaults(run=top)

    p = sub.add_parser("scopes", parents=[parent], help="list the scopes and their windows")
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.set_defaults(run=scopes)

    p = sub.add_parser(
        "reset",
        parents=[parent],
        help="zero a scope's counters (every window); asks first",
        description="Zero every counter of SCOPE (written as in messages, e.g. user:alice@example.com) "
        "in all its periods. The ledger records the reset. Asks for confirmation unless --yes.",
    )
    p.add_argument("scope", metavar="SCOPE")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.set_defaults(run=reset)


def _rows_table(out: TextIO, rows: list[Row], title: str | None = None) -> None:
    cells = []
    for r in rows:
        resets = f"{r.resets_at:%Y-%m-%d %H:%M}" if r.resets_at else "never"
        cells.append(
            [
                r.scope,
                r.per,
                r.quantity,
                r.fmt(r.spent),
                r.fmt(r.reserved),
                r.fmt(r.cap),
                r.fmt(r.remaining),
                resets,
            ]
        )
    table(
        out,
        ["scope", "window", "quantity", "spent", "reserved", "cap", "remaining", "resets (UTC)"],
        cells,
        right=["spent", "reserved", "cap", "remaining"],
        title=title,
        bars=[r.used for r in rows],
    )


def status(args: argparse.Namespace) -> int:
    store = open_store(args)
    rows = collect(store, args.scope)
    out = sys.stdout
    if args.json:
        json.dump([r.to_json() for r in rows], out, indent=2)
        out.write("\n")
        return EXIT_OK
    if not rows:
        where = f" under {args.scope!r}" if args.scope else ""
        out.write(f"no counters{where} in {store!r} (a guard writes them on its first call)\n")
        return EXIT_OK
    _rows_table(out, rows)
    if not store.limit_definitions():
        out.write(
            "(no limit definitions in the store: caps unknown; they are written by guards of this "
            "version on their first call)\n"
        )
    return EXIT_OK


def top(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise CliError(f"-n must be at least 1, got {args.n}")
    store = open_store(args)
    ranked = sorted(standings(store), key=lambda s: tuple(s.state.spent), reverse=True)[: args.n]
    if args.json:
        rows = [
            {**usd_row(s).to_json(), "tokens": s.state.spent.tokens, "requests": s.state.spent.requests}
            for s in ranked
        ]
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    cells = []
    for s in ranked:
        r = usd_row(s)
        cells.append(
            [
                r.scope,
                r.per,
                r.fmt(r.spent),
                f"{s.state.spent.tokens:,}",
                f"{s.state.spent.requests:,}",
                r.fmt(r.cap),
            ]
        )
    table(
        sys.stdout,
        ["scope", "window", "spent", "tokens", "requests", "USD cap"],
        cells,
        right=["spent", "tokens", "requests", "USD cap"],
        title=f"top {len(ranked)} by USD spent in the current window",
        bars=[usd_row(s).used for s in ranked],
    )
    return EXIT_OK


def scopes(args: argparse.Namespace) -> int:
    store = open_store(args)
    defs = store.limit_definitions()
    periods: dict[str, list[str]] = {}
    for key, per in store.scopes():
        periods.setdefault(label_of(key, defs), []).append(per)
    if args.json:
        json.dump([{"scope": s, "periods": p} for s, p in sorted(periods.items())], sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    table(sys.stdout, ["scope", "windows"], [[s, ", ".join(p)] for s, p in sorted(periods.items())])
    return EXIT_OK


def reset(args: argparse.Namespace) -> int:
    store = open_store(args)
    defs = store.limit_definitions()
    keys = keys_for(args.scope, defs)
    known = {key for key, _ in store.scopes()}
    found = [k for k in keys if k in known]
    if not found:
        sys.stdout.write(
            f"no counters for scope {args.scope!r}; nothing to reset (see `budgetguard scopes`)\n"
        )
        return EXIT_PROBLEM
    spent = sum((r.spent_raw for r in collect(store, defs=defs) if r.key in found and r.quantity == "usd"), 0)
    if not args.yes:
        prompt = (
            f"Reset scope {args.scope!r} ({format_usd(to_usd(spent))} spent in its current windows)? "
            "This zeroes its counters in every period. [y/N] "
        )
        try:
            answer = input(prompt)
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            sys.stdout.write("not reset (pass --yes to skip this question)\n")
            return EXIT_PROBLEM
    n = sum(store.reset(k) for k in found)
    sys.stdout.write(f"reset {n} counter(s) of scope {args.scope!r}\n")
    return EXIT_OK
