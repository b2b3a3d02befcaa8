"""``ledger export``: the ledger's records as CSV or JSON lines, exact to the nano-dollar.

CSV has one row per counter a record charged (``charged_usd`` is what that
record added to that scope's window: summed per scope and window it equals
the spent ``status`` shows). JSON lines have one object per record, with its
charges listed under ``scopes``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from ..definitions import LimitDef, label_of
from ..ledger import TOKEN_KINDS, LedgerRecord
from ..units import to_usd
from .common import EXIT_OK, CliError, money, open_store, store_parent

__all__ = ["add_commands", "parse_time", "record_rows", "records_json"]

_CSV = [
    "time",
    "scope",
    "per",
    "window_start",
    "outcome",
    "model",
    "provider",
    *(f"tokens_{k}" for k in TOKEN_KINDS),
    "charged_usd",
    "charged_tokens",
    "charged_requests",
    "cost_usd",
    "estimated",
    "lease_id",
    "run_id",
    "id",
]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def add_commands(sub: Any) -> None:
    p = sub.add_parser("ledger", help="the ledger of every change to spent")
    inner = p.add_subparsers(dest="ledger_command", required=True, metavar="{export}")
    e = inner.add_parser(
        "export",
        parents=[store_parent()],
        help="write the ledger as CSV or JSON lines",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument(
        "--since", metavar="WHEN", help="ISO 8601 time (UTC if no offset), epoch seconds, or an age: 24h, 7d"
    )
    e.add_argument("--until", metavar="WHEN", help="same forms as --since (exclusive)")
    e.add_argument(
        "--scope", metavar="PREFIX", help="only charges to scopes that begin with PREFIX (as written)"
    )
    e.add_argument("--format", choices=("csv", "jsonl"), required=True)
    e.add_argument("--output", "-o", metavar="FILE", help="write there instead of stdout")
    e.set_defaults(run=export)


def parse_time(text: str | None, now: float | None = None) -> float | None:
    """``--since``/``--until``: ISO 8601, epoch seconds, or an age (``90m``, ``24h``, ``7d``)."""
    if text is None:
        return None
    t = text.strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", t)
    if m:
        return (time.time() if now is None else now) - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return float(t)
    except ValueError:
        pass
    try:
        d = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"cannot read the time {text!r}; use ISO 8601 (2026-12-01 or 2026-12-01T09:00:00Z), "
            "epoch seconds, or an age such as 24h or 7d"
        ) from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return d.timestamp()


def _iso(t_us: int) -> str:
    return datetime.fromtimestamp(t_us / 1_000_000, timezone.utc).isoformat()


def record_rows(
    records: Sequence[LedgerRecord], defs: Sequence[LimitDef], prefix: str | None = None
) -> Iterator[dict[str, Any]]:
    """One CSV row per charge (per record and counter), the scope as written."""
    for rec in records:
        tokens = dict(rec.note.tokens)
        for c in rec.charges:
            scope = rec.note.label(c.scope) or label_of(c.scope, defs)
            if prefix is not None and not scope.startswith(prefix):
                continue
            yield {
                "time": _iso(rec.time_us),
                "scope": scope,
                "per": c.per,
                "window_start": "" if c.per == "lifetime" else _iso(c.window_start * 1_000_000),
                "outcome": rec.outcome,
                "model": rec.note.model,
                "provider": rec.note.provider or "",
                **{f"tokens_{k}": tokens.get(k, 0) for k in TOKEN_KINDS},
                "charged_usd": money(to_usd(c.amount.nanos)),
                "charged_tokens": c.amount.tokens,
                "charged_requests": c.amount.requests,
                "cost_usd": money(to_usd(rec.cost.nanos)),
                "estimated": str(rec.estimated).lower(),
                "lease_id": rec.lease_id,
                "run_id": rec.note.run_id or "",
                "id": rec.id,
            }


def records_json(
    records: Sequence[LedgerRecord], defs: Sequence[LimitDef], prefix: str | None = None
) -> Iterator[dict[str, Any]]:
    """One object per record (with its charges to matching scopes), money as strings."""
    for rec in records:
        charged = []
        for c in rec.charges:
            scope = rec.note.label(c.scope) or label_of(c.scope, defs)
            if prefix is None or scope.startswith(prefix):
                charged.append(
                    {
                        "scope": scope,
                        "per": c.per,
                        "window_start": None if c.per == "lifetime" else _iso(c.window_start * 1_000_000),
                        "usd": money(to_usd(c.amount.nanos)),
                        "tokens": c.amount.tokens,
                        "requests": c.amount.requests,
                    }
                )
        if not charged:
            continue
        yield {
            "time": _iso(rec.time_us),
            "outcome": rec.outcome,
            "model": rec.note.model,
            "provider": rec.note.provider,
            "tokens": dict(rec.note.tokens),
            "cost_usd": money(to_usd(rec.cost.nanos)),
            "cost_tokens": rec.cost.tokens,
            "cost_requests": rec.cost.requests,
            "estimated": rec.estimated,
            "lease_id": rec.lease_id,
            "run_id": rec.note.run_id,
            "id": rec.id,
            "scopes": charged,
        }


def write(
    out: TextIO, fmt: str, records: Sequence[LedgerRecord], defs: Sequence[LimitDef], prefix: str | None
) -> int:
    """Write the export; how many lines (rows or objects) were written."""
    n = 0
    if fmt == "csv":
        w = csv.DictWriter(out, fieldnames=_CSV, lineterminator="\n")
        w.writeheader()
        for row in record_rows(records, defs, prefix):
            w.writerow(row)
            n += 1
        return n
    for obj in records_json(records, defs, prefix):
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        n += 1
    return n


def export(args: argparse.Namespace) -> int:
    since, until = parse_time(args.since), parse_time(args.until)
    store = open_store(args)
    records = store.ledger_records(since, until)
    defs = store.limit_definitions()
    if args.output:
        with open(args.output, "w", encoding="utf-8", newline="") as f:
            n = write(f, args.format, records, defs, args.scope)
        sys.stderr.write(f"wrote {n} {'rows' if args.format == 'csv' else 'records'} to {args.output}\n")
    else:
        write(sys.stdout, args.format, records, defs, args.scope)
    return EXIT_OK
