"""The memory store's ledger ring: records kept as plain tuples, made ``LedgerRecord``s when read.

A settle appends one tuple under the store's lock; the charges per counter
(``Charge``) and the record itself are built only when ``ledger_records``
reads them, since most records are never read.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..ledger import Charge, LedgerNote, LedgerRecord
from ..reservation import Amount
from .memory_keys import Key

__all__ = ["Gains", "Kept", "as_record"]

_new = tuple.__new__  # a NamedTuple from all its fields, without its Python-level __new__

#: what each counter gained (``None``: the record's cost, once per time the change named the counter)
Gains = Sequence[Amount] | None
#: a record as kept: time, outcome, lease id, estimated, cost, the counters' keys, their gains, the note
Kept = tuple[float, str, str, bool, Amount, Sequence[Key], Gains, LedgerNote | None]


def as_record(fields: Kept) -> LedgerRecord:
    """A kept record as read, its charges made."""
    now, outcome, lease_id, estimated, c, keys, gains, note = fields
    if gains is None:  # each counter gained the cost, once per time the change named it
        gains = [c if n == 1 else Amount(c[0] * n, c[1] * n, c[2] * n) for n in map(keys.count, keys)]
    charges = tuple(_new(Charge, (k[0], k[1], k[2], g)) for k, g in zip(keys, gains, strict=True))
    return LedgerRecord(int(now * 1_000_000), outcome, lease_id, estimated, c, charges, note or LedgerNote())
