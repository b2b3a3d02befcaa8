"""Reserve and settle arithmetic, as pure functions over plain values.

Stores only move state; every decision is made here (and mirrored, line for
line, by the Redis scripts). One comparison decides everything::

    refuse  <=>  spent + reserved + request > cap

so a call that exactly reaches a limit is admitted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "Amount",
    "Caps",
    "CounterRef",
    "CounterSpec",
    "CounterState",
    "Violation",
    "exceeds",
    "first_violation",
    "apply_reserve",
    "apply_settle",
    "apply_expire",
    "apply_release",
    "QUANTITIES",
]

QUANTITIES = ("nanos", "tokens", "requests")
_INDEX = {"nanos": 0, "tokens": 1, "requests": 2}
_new = tuple.__new__  # a NamedTuple from three ints, without its Python-level __new__ (hot path)


class Amount(NamedTuple):
    """USD in nano-dollars, tokens and requests: what a call reserves or costs."""

    nanos: int = 0
    tokens: int = 0
    requests: int = 0

    def __add__(self, o: Amount) -> Amount:  # type: ignore[override]
        return _new(Amount, (self[0] + o[0], self[1] + o[1], self[2] + o[2]))

    def __sub__(self, o: Amount) -> Amount:
        return _new(Amount, (self[0] - o[0], self[1] - o[1], self[2] - o[2]))

    def get(self, q: str) -> int:
        return int(self[_INDEX[q]])

    def floor0(self) -> Amount:
        if self[0] >= 0 and self[1] >= 0 and self[2] >= 0:
            return self
        return _new(Amount, (max(self[0], 0), max(self[1], 0), max(self[2], 0)))

    def exceeds(self, o: Amount) -> bool:
        """True if any quantity is larger than in ``o``."""
        return self[0] > o[0] or self[1] > o[1] or self[2] > o[2]


class Caps(NamedTuple):
    """A counter's caps; ``None`` leaves that quantity unlimited."""

    nanos: int | None = None
    tokens: int | None = None
    requests: int | None = None

    def get(self, q: str) -> int | None:
        return self[_INDEX[q]]

    def tightest(self, o: Caps) -> Caps:
        def m(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return Caps(m(self.nanos, o.nanos), m(self.tokens, o.tokens), m(self.requests, o.requests))

    def scaled(self, fraction_ppm: int) -> Caps:
        """The soft caps at ``fraction_ppm`` parts per million of these."""

        def s(v: int | None) -> int | None:
            return None if v is None else v * fraction_ppm // 1_000_000

        return Caps(s(self.nanos), s(self.tokens), s(self.requests))


class CounterRef(NamedTuple):
    """One counter: a scope key and a window period.

    ``expire_after`` (seconds): forget the counter that long after its last
    reserve or settle (ephemeral scopes such as a run); ``None`` keeps it for
    its window (forever for ``lifetime``).
    """

    scope: str
    per: str
    expire_after: float | None = None


class CounterSpec(NamedTuple):
    """A counter with the caps a reservation must fit, and optional soft caps (degrade)."""

    ref: CounterRef
    caps: Caps
    soft: Caps | None = None


@dataclass(slots=True)
class CounterState:
    """A counter's totals in its current window."""

    window_start: int = 0
    spent: Amount = field(default_factory=Amount)
    reserved: Amount = field(default_factory=Amount)
    overshoot_count: int = 0
    overshoot: Amount = field(default_factory=Amount)
    estimated_count: int = 0


@dataclass(frozen=True, slots=True)
class Violation:
    """Which counter and quantity refused a reservation; ``soft`` for a degrade."""

    index: int
    quantity: str
    soft: bool = False


def exceeds(cap: int | None, spent: int, reserved: int, request: int) -> bool:
    """THE refusal rule. Used by every check, in Python and in Lua."""
    return cap is not None and spent + reserved + request > cap


def first_violation(
    specs: Sequence[CounterSpec], states: Sequence[CounterState], request: Amount
) -> Violation | None:
    """The first cap the request would break; hard caps before soft ones.

    The rule is ``exceeds``, written out inline: this runs on every reserve.
    """
    if len(specs) != len(states):
        raise ValueError(f"{len(specs)} counters but {len(states)} states")
    r0, r1, r2 = request
    soft_too = False
    for i, spec in enumerate(specs):
        st = states[i]
        c0, c1, c2 = spec.caps
        spent, reserved = st.spent, st.reserved
        if c0 is not None and spent[0] + reserved[0] + r0 > c0:
            return Violation(i, "nanos")
        if c1 is not None and spent[1] + reserved[1] + r1 > c1:
            return Violation(i, "tokens")
        if c2 is not None and spent[2] + reserved[2] + r2 > c2:
            return Violation(i, "requests")
        soft_too = soft_too or spec.soft is not None
    if not soft_too:
        return None
    for i, (spec, st) in enumerate(zip(specs, states, strict=True)):
        soft = spec.soft
        if soft is None:
            continue
        for j in (0, 1, 2):
            if exceeds(soft[j], st.spent[j], st.reserved[j], request[j]):
                return Violation(i, QUANTITIES[j], soft=True)
    return None


def apply_reserve(st: CounterState, amount: Amount) -> None:
    st.reserved = st.reserved + amount


def apply_release(st: CounterState, amount: Amount) -> None:
    st.reserved = (st.reserved - amount).floor0()


def apply_expire(st: CounterState, amount: Amount) -> None:
    """An unsettled lease ran out: charge its estimate (the provider probably billed)."""
    st.reserved = (st.reserved - amount).floor0()
    st.spent = st.spent + amount
    st.estimated_count += 1


def apply_settle(
    st: CounterState,
    reserved: Amount | None,
    charged: Amount | None,
    actual: Amount,
    estimated: bool,
    count_overshoot: bool = True,
) -> None:
    """Replace a reservation with the actual cost.

    ``reserved``: the live lease's amount, or ``None`` if there is none.
    ``charged``: what an expired lease already charged, to reconcile against.
    """
    if reserved is not None:
        st.reserved = (st.reserved - reserved).floor0()
    basis = reserved if reserved is not None else charged
    if count_overshoot and basis is not None and actual.exceeds(basis):
        st.overshoot_count += 1
        st.overshoot = st.overshoot + (actual - basis).floor0()
    if charged is not None:
        st.spent = (st.spent - charged + actual).floor0()
        st.estimated_count = max(st.estimated_count - 1, 0)
    else:
        st.spent = st.spent + actual
    if estimated:
        st.estimated_count += 1
