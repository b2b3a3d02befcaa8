"""The counters as an operator reads them: every scope's standing against its caps, now.

The store lists its (scope key, period) pairs; the limit definitions guards
recorded there give each counter its caps and turn its key back into the
scope as the user wrote it. States are read one root scope at a time on
Cluster (one slot per script call), in chunks elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple

from ..definitions import LimitDef, caps_for, label_of
from ..reservation import CounterRef, CounterState
from ..stores import Store
from ..stores.redis.codec import root_tag
from ..units import QUANTITY_NAMES, Quantity, counter_field, format_quantity, to_usd
from ..windows import as_datetime, window_end

__all__ = ["Row", "Standing", "collect", "read_states", "standings", "usd_row"]

_CHUNK = 200


@dataclass(frozen=True, slots=True)
class Row:
    """One counter's standing in one quantity (USD as exact ``Decimal``, counts as ``int``)."""

    scope: str  # as the user wrote it
    key: str  # as stored (values percent-encoded)
    per: str
    quantity: Quantity
    spent: Decimal | int
    reserved: Decimal | int
    cap: Decimal | int | None
    window_start: datetime | None
    resets_at: datetime | None
    spent_raw: int  # nano-dollars or a count, for ranking

    @property
    def remaining(self) -> Decimal | int | None:
        if self.cap is None:
            return None
        left = Decimal(self.cap) - Decimal(self.spent) - Decimal(self.reserved)
        return max(left, Decimal(0)) if self.quantity == "usd" else max(int(left), 0)

    @property
    def used(self) -> float:
        """(spent + reserved) / cap, for the bar only (never for decisions); 0 with no cap."""
        if self.cap is None:
            return 0.0
        if not self.cap:
            return 1.0
        return float((Decimal(self.spent) + Decimal(self.reserved)) / Decimal(self.cap))

    def fmt(self, v: Decimal | int | None) -> str:
        return "-" if v is None else format_quantity(self.quantity, v, unit=False)

    def to_json(self) -> dict[str, object]:
        """JSON-safe: money as strings, counts as integers, times as ISO 8601 (UTC)."""

        def val(v: Decimal | int | None) -> object:
            if v is None:
                return None
            return format(v, "f") if self.quantity == "usd" else int(v)

        return {
            "scope": self.scope,
            "key": self.key,
            "per": self.per,
            "quantity": self.quantity,
            "spent": val(self.spent),
            "reserved": val(self.reserved),
            "cap": val(self.cap),
            "remaining": val(self.remaining),
            "window_start": None if self.window_start is None else self.window_start.isoformat(),
            "resets_at": None if self.resets_at is None else self.resets_at.isoformat(),
        }


def read_states(store: Store, refs: Sequence[CounterRef]) -> list[CounterState]:
    """Current-window states of ``refs``, in order: per root on Cluster, in chunks elsewhere."""
    groups: dict[str, list[int]] = {}
    cluster = bool(getattr(store, "cluster", False))
    for i, ref in enumerate(refs):
        key = root_tag(ref.scope) if cluster else str(i // _CHUNK)
        groups.setdefault(key, []).append(i)
    out: list[CounterState | None] = [None] * len(refs)
    for idx in groups.values():
        for start in range(0, len(idx), _CHUNK):
            part = idx[start : start + _CHUNK]
            for i, st in zip(part, store.status([refs[i] for i in part]), strict=True):
                out[i] = st
    return [st for st in out if st is not None]


class Standing(NamedTuple):
    """One counter now: its scope as written, its key, period, state and caps."""

    scope: str
    key: str
    per: str
    state: CounterState
    caps: dict[Quantity, int]


def standings(
    store: Store, prefix: str | None = None, defs: Sequence[LimitDef] | None = None
) -> list[Standing]:
    """Every counter the store lists (under ``prefix``, as written or as stored), read now."""
    defs = store.limit_definitions() if defs is None else defs
    pairs = []
    for key, per in store.scopes():
        label = label_of(key, defs)
        if prefix is None or label.startswith(prefix) or key.startswith(prefix):
            pairs.append((key, per, label))
    states = read_states(store, [CounterRef(key, per) for key, per, _ in pairs])
    return [
        Standing(label, key, per, st, caps_for(key, per, defs))
        for (key, per, label), st in zip(pairs, states, strict=True)
    ]


def collect(store: Store, prefix: str | None = None, defs: Sequence[LimitDef] | None = None) -> list[Row]:
    """Every counter's rows (one per capped quantity; USD alone for a counter with no known cap)."""
    rows: list[Row] = []
    for s in standings(store, prefix, defs):
        quantities = [q for q in QUANTITY_NAMES if q in s.caps] or ["usd"]
        for q in quantities:
            rows.append(_row(s.scope, s.key, s.per, q, s.caps.get(q), s.state))
    rows.sort(key=lambda r: (r.scope, _PER_ORDER.get(r.per, 9), QUANTITY_NAMES.index(r.quantity)))
    return rows


def usd_row(s: Standing) -> Row:
    """A counter's USD standing, capped or not (``top`` ranks every counter by it)."""
    return _row(s.scope, s.key, s.per, "usd", s.caps.get("usd"), s.state)


_PER_ORDER = {p: i for i, p in enumerate(("minute", "hour", "day", "week", "month", "lifetime"))}


def _row(label: str, key: str, per: str, q: Quantity, cap: int | None, st: CounterState) -> Row:
    f = counter_field(q)
    spent, reserved = st.spent.get(f), st.reserved.get(f)
    conv = to_usd if q == "usd" else int
    return Row(
        scope=label,
        key=key,
        per=per,
        quantity=q,
        spent=conv(spent),
        reserved=conv(reserved),
        cap=None if cap is None else conv(cap),
        window_start=None if per == "lifetime" else as_datetime(st.window_start),
        resets_at=as_datetime(window_end(per, st.window_start)),
        spent_raw=spent,
    )
