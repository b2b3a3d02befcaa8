"""What an operator reads: each limit's spent, reserved and remaining budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TypeAlias

from .limits import Limit
from .reservation import Amount, CounterState
from .units import Quantity, counter_field, format_quantity, to_usd
from .windows import as_datetime, window_end

__all__ = ["MINIMAL_CALL_TOKENS", "BudgetStatus", "LimitStatus", "json_quantity"]

#: The minimal call's tokens: a near-empty prompt (8) and one output token.
MINIMAL_CALL_TOKENS = 9
_UNPRICED_MINIMAL_CALL = Amount(1, MINIMAL_CALL_TOKENS, 1)

#: What ``to_dict`` holds: str, int, bool, None, and lists and dicts of them (never a float).
JSONValue: TypeAlias = str | int | bool | list["JSONValue"] | dict[str, "JSONValue"] | None


def json_quantity(quantity: Quantity, v: Decimal | int) -> str | int:
    """A value for JSON: dollars as an exact fixed-point string (``"0.000123"``), counts as ``int``.

    JSON numbers become floats in most clients (FastAPI's encoder turns ``Decimal`` into one),
    so money never travels as a number.
    """
    if quantity == "usd":
        return format(Decimal(v).normalize(), "f")
    return int(v)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


@dataclass(frozen=True, slots=True)
class LimitStatus:
    """One limit's standing in one quantity (USD ``Decimal`` or an ``int`` count)."""

    scope: str
    limit: Limit
    quantity: Quantity
    per: str
    cap: Decimal | int
    spent: Decimal | int
    reserved: Decimal | int
    remaining: Decimal | int
    window_start: datetime | None
    resets_at: datetime | None
    overshoots: int
    estimated: int

    @property
    def used_fraction(self) -> float:
        """(spent + reserved) / cap, for dashboards; not used for decisions."""
        if not self.cap:
            return 1.0
        return float((Decimal(self.spent) + Decimal(self.reserved)) / Decimal(self.cap))

    def fmt(self, v: Decimal | int) -> str:
        return format_quantity(self.quantity, v, unit=False)

    def to_dict(self) -> dict[str, JSONValue]:
        """This row for JSON: money as strings, counts as ints, datetimes ISO 8601 (UTC), no floats."""
        q = self.quantity
        return {
            "scope": self.scope,
            "template": self.limit.scope,
            "quantity": q,
            "per": self.per,
            "cap": json_quantity(q, self.cap),
            "spent": json_quantity(q, self.spent),
            "reserved": json_quantity(q, self.reserved),
            "remaining": json_quantity(q, self.remaining),
            "window_start": _iso(self.window_start),
            "resets_at": _iso(self.resets_at),
            "overshoots": self.overshoots,
            "estimated": self.estimated,
        }

    def fits(self, amount: Amount) -> bool:
        """Whether a call of ``amount`` (nano-dollars, tokens, requests) fits this row now."""
        need = to_usd(amount.nanos) if self.quantity == "usd" else amount.get(counter_field(self.quantity))
        return need <= self.remaining


def row(scope: str, limit: Limit, quantity: Quantity, st: CounterState) -> LimitStatus:
    """Build a row from a counter, with the same arithmetic enforcement uses."""
    q = counter_field(quantity)
    cap_raw = limit.usd_nanos if quantity == "usd" else limit.value(quantity)
    assert isinstance(cap_raw, int)
    spent, reserved = st.spent.get(q), st.reserved.get(q)
    remaining = max(cap_raw - spent - reserved, 0)
    conv = to_usd if quantity == "usd" else int
    end = window_end(limit.per, st.window_start)
    return LimitStatus(
        scope=scope,
        limit=limit,
        quantity=quantity,
        per=limit.per,
        cap=limit.value(quantity),
        spent=conv(spent),
        reserved=conv(reserved),
        remaining=conv(remaining),
        window_start=None if limit.per == "lifetime" else as_datetime(st.window_start),
        resets_at=as_datetime(end),
        overshoots=st.overshoot_count,
        estimated=st.estimated_count,
    )


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Every limit that applies to some metadata, one row per limit and quantity.

    ``skipped`` names limits whose scope needs metadata that was not given.
    ``minimal_call`` is the smallest call the guard could admit: one request,
    ``MINIMAL_CALL_TOKENS`` tokens, and those tokens at the worst rates of the
    cheapest model the guard knows (the models it wrapped, its fallbacks,
    ``model=``); 1 nano-dollar when it knows none.
    """

    rows: tuple[LimitStatus, ...]
    skipped: tuple[str, ...] = ()
    minimal_call: Amount = _UNPRICED_MINIMAL_CALL

    @property
    def remaining_usd(self) -> Decimal | None:
        """The tightest USD headroom, or ``None`` if no USD limit applies."""
        vals = [Decimal(r.remaining) for r in self.rows if r.quantity == "usd"]
        return min(vals) if vals else None

    @property
    def can_fit_minimal_call(self) -> bool:
        """Whether the next minimal call (``minimal_call``) fits every limit now."""
        return all(r.fits(self.minimal_call) for r in self.rows)

    @property
    def exhausted(self) -> bool:
        """True when not even the minimal call fits: every call is refused until something frees."""
        return not self.can_fit_minimal_call

    def to_dict(self) -> dict[str, JSONValue]:
        """The status for JSON (an HTTP answer, ``--json``): see ``LimitStatus.to_dict``."""
        remaining = self.remaining_usd
        m = self.minimal_call
        return {
            "rows": [r.to_dict() for r in self.rows],
            "skipped": list(self.skipped),
            "remaining_usd": None if remaining is None else json_quantity("usd", remaining),
            "exhausted": self.exhausted,
            "minimal_call": {
                "usd": json_quantity("usd", to_usd(m.nanos)),
                "tokens": m.tokens,
                "requests": m.requests,
            },
        }

    def for_scope(self, scope: str) -> Sequence[LimitStatus]:
        return [r for r in self.rows if r.scope == scope]

    def __str__(self) -> str:
        head = f"{'scope':<24} {'window':<9} {'limit':>14} {'spent':>14} {'reserved':>12} {'remaining':>14}"
        lines = [head + "  resets"]
        for r in self.rows:
            resets = f"{r.resets_at:%Y-%m-%d %H:%M}" if r.resets_at else "never"
            lines.append(
                f"{r.scope:<24} {r.per:<9} {r.fmt(r.cap):>14} {r.fmt(r.spent):>14} "
                f"{r.fmt(r.reserved):>12} {r.fmt(r.remaining):>14}  {resets}"
            )
        for s in self.skipped:
            lines.append(f"(not shown: {s}, its scope needs more metadata)")
        return "\n".join(lines)
