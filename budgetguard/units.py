"""The quantities a limit caps, and how money is counted and written.

Limits and refusals speak of ``usd``; counters hold integer nano-dollars
(``nanos``) so that no float ever touches money. This module is the one
place that maps one to the other and formats dollars for people.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

__all__ = [
    "NANOS_PER_USD",
    "QUANTITY_NAMES",
    "Quantity",
    "counter_field",
    "format_quantity",
    "format_usd",
    "quantity_of",
    "to_usd",
]

#: What a limit can cap, as users write it.
Quantity = Literal["usd", "tokens", "requests"]
QUANTITY_NAMES: tuple[Quantity, ...] = ("usd", "tokens", "requests")

NANOS_PER_USD = 1_000_000_000
_NANOS = Decimal(NANOS_PER_USD)

# counter amounts (budgetguard.reservation.Amount) name USD "nanos"
_FIELD: dict[Quantity, str] = {"usd": "nanos", "tokens": "tokens", "requests": "requests"}
_QUANTITY: dict[str, Quantity] = {v: k for k, v in _FIELD.items()}


def counter_field(quantity: Quantity) -> str:
    """The ``Amount``/``Caps`` field that counts ``quantity``."""
    return _FIELD[quantity]


def quantity_of(field: str) -> Quantity:
    """The user-facing quantity of an ``Amount``/``Caps`` field."""
    return _QUANTITY[field]


def to_usd(nanos: int) -> Decimal:
    """Nano-dollars as exact dollars."""
    return Decimal(nanos) / _NANOS


def format_usd(v: Decimal | int) -> str:
    """Dollars for people: ``$0.50``, ``$0.000123``; at least 2 decimals, at most as many as needed."""
    s = format(Decimal(v).normalize(), "f")
    if "." not in s:
        return f"${s}.00"
    whole, frac = s.split(".")
    return f"${whole}.{frac.ljust(2, '0')}"


def format_quantity(quantity: Quantity, v: Decimal | int, unit: bool = True) -> str:
    """A value of ``quantity`` for people: ``$1.25``, ``1,200 tokens`` (``1,200`` without ``unit``)."""
    if quantity == "usd":
        return format_usd(v)
    return f"{v:,} {quantity}" if unit else f"{v:,}"
