"""The ``BudgetExceeded`` a refused reservation becomes: which limit, and by how much."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal

from ..errors import BudgetExceeded, DegradeRequired
from ..reservation import Amount, CounterState, Violation
from ..units import format_quantity, quantity_of, to_usd
from ..windows import as_datetime, window_end
from .plans import Plan

__all__ = ["refusal", "states_before"]


def refusal(
    plan: Plan,
    states: Sequence[CounterState],
    violation: Violation | None,
    amount: Amount,
    model: str | None,
) -> BudgetExceeded:
    """The error for ``violation``: a ``DegradeRequired`` when only a soft cap (``degrade_at``) broke."""
    assert violation is not None
    spec = plan.specs[violation.index]
    st = states[violation.index]
    q = violation.quantity
    quantity = quantity_of(q)
    hard = spec.caps.get(q)
    cap = (spec.soft if violation.soft and spec.soft else spec.caps).get(q)
    assert cap is not None and hard is not None
    # the limit behind the tightest cap of this counter
    limit = next(
        lim
        for lim in plan.groups[violation.index]
        if (lim.usd_nanos if q == "nanos" else getattr(lim, q)) == hard
    )
    conv: Callable[[int], Decimal | int] = to_usd if q == "nanos" else int
    spent, reserved = st.spent.get(q), st.reserved.get(q)
    note = None
    if violation.soft:
        shown = format_quantity(quantity, conv(cap))
        note = f"it would pass degrade_at ({shown}); a fallback serves if one fits"
    cls = DegradeRequired if violation.soft else BudgetExceeded
    return cls(
        scope=plan.labels[violation.index],
        limit=limit,
        quantity=quantity,
        window=spec.ref.per,
        spent=conv(spent),
        reserved=conv(reserved),
        requested=conv(amount.get(q)),
        remaining=conv(max(hard - spent - reserved, 0)),
        resets_at=as_datetime(window_end(spec.ref.per, st.window_start)),
        model=model,
        note=note,
    )


def states_before(states: Sequence[CounterState], amount: Amount) -> list[CounterState]:
    """The states a forced reservation reported, as they were before it."""
    return [
        CounterState(
            st.window_start, st.spent, (st.reserved - amount).floor0(), st.overshoot_count, st.overshoot
        )
        for st in states
    ]
