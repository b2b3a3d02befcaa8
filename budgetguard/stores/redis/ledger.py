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
from collections.abc import Iterator, Sequence
from typing import Any

from ...ledger import LedgerRecord
from ...reservation import CounterSpec
from .codec import decode_record, decode_text, root_tag

__all__ = ["PAGE", "LedgerRoots", "read_stream"]

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

    def due(self, counters: Sequence[CounterSpec], now: float) -> dict[str, float]:
        """The roots whose listing must be (re)written now, with their scores."""
        out: dict[str, float] = {}
        for spec in counters:
            base = f"{self.prefix}{{{root_tag(spec.ref.scope)}}}:"
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

    def write(self, pipe: Any, due: dict[str, float], now: float) -> Any:
        """Queue the write on a pipeline: raise the scores, drop streams that have expired."""
        pipe.zadd(self.key, {b: ("inf" if math.isinf(t) else t) for b, t in due.items()}, gt=True)
        pipe.zremrangebyscore(self.key, "-inf", f"({now}")
        return pipe


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
