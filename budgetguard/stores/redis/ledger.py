"""The ledger on Redis: which streams hold it, and reading them back (the scripts write them).

Each root scope's records are a stream ``<prefix>{<root>}:ledger``, in the
root's Cluster slot, written by the settle script (and the sweep and reset)
in the same step as the counters. ``<prefix>ledgerz`` lists the roots that
have one (member the key base, score the epoch second after which its stream
has expired), written by the client beside ``rootz`` (``roots.py``), since on
Cluster a script cannot reach another slot. Limit definitions are the hash
``<prefix>limits``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ...ledger import LedgerRecord
from .calls import FAILURES
from .codec import decode_record, decode_text, key_base

__all__ = ["PAGE", "LedgerRoots", "read_all", "read_stream"]

#: Entries read per XRANGE call.
PAGE = 1000
#: A listing is written again when older than this (seconds), and outlives the stream by twice it.
_RELIST = 3600.0


class LedgerRoots:
    """This process's view of ``<prefix>ledgerz``: which roots it listed, and when."""

    def __init__(self, prefix: str, age: float | None) -> None:
        self.key = f"{prefix}ledgerz"
        self.prefix = prefix
        self.age = age  # seconds a stream is kept (None: no age bound, listed for ever)
        self._listed: dict[str, float] = {}  # base -> when this process last wrote it

    def due(self, scopes: Iterable[str], now: float) -> dict[str, float]:
        """The roots of ``scopes`` whose listing must be (re)written now, with their scores."""
        out: dict[str, float] = {}
        for scope in scopes:
            base = key_base(self.prefix, scope)
            if base not in out and now - self._listed.get(base, -math.inf) > _RELIST:
                out[base] = math.inf if self.age is None else now + self.age + 2 * _RELIST
        if len(self._listed) > 10_000:
            self._listed.clear()
        for base in out:
            self._listed[base] = now
        return out

    def failed(self, due: dict[str, float]) -> None:
        for base in due:
            self._listed.pop(base, None)

    def list_now(self, client: Any, scopes: Iterable[str], now: float) -> None:
        """List these roots now if due (a settle of a root this process never reserved)."""
        due = self.due(scopes, now)
        if due and client is not None:
            try:
                self.write(client.pipeline(transaction=False), due, now).execute()
            except FAILURES:
                self.failed(due)  # listing only; retry next time

    async def alist_now(self, async_client: Any, client: Any, scopes: Iterable[str], now: float) -> None:
        if async_client is None:
            self.list_now(client, scopes, now)  # the store has only a sync client: this one write blocks
            return
        due = self.due(scopes, now)
        if due:
            try:
                await self.write(async_client.pipeline(transaction=False), due, now).execute()
            except FAILURES:
                self.failed(due)

    def write(self, pipe: Any, due: dict[str, float], now: float) -> Any:
        """Queue the write on a pipeline: raise the scores, drop streams that have expired."""
        pipe.zadd(self.key, {b: ("inf" if math.isinf(t) else t) for b, t in due.items()}, gt=True)
        pipe.zremrangebyscore(self.key, "-inf", f"({now}")
        return pipe


def read_all(
    client: Any, listings: Sequence[str], now: float, since: float | None, until: float | None
) -> list[LedgerRecord]:
    """The records of every root in ``listings`` (``ledgerz``, ``rootz``), oldest first."""
    bases: set[Any] = set()
    for key in listings:
        bases |= set(client.zrangebyscore(key, now, "+inf"))
    out: list[LedgerRecord] = []
    for base in sorted(decode_text(b) for b in bases):
        out += read_stream(client, f"{base}ledger", since, until)
    out.sort(key=lambda r: (r.time_us, r.id))
    return out


def read_stream(client: Any, key: str, since: float | None, until: float | None) -> Iterator[LedgerRecord]:
    """The records of one stream with ``since <= time < until``, oldest first, a page at a time.

    Entry ids are the server's clock; the filter is each record's own time (its script's clock).
    """
    start = "-"
    while True:
        page = client.xrange(key, start, "+", count=PAGE)
        for entry_id, fields in page:
            rec = decode_record(entry_id, fields)
            if (since is None or rec.time >= since) and (until is None or rec.time < until):
                yield rec
        if len(page) < PAGE:
            return
        start = "(" + decode_text(page[-1][0])
