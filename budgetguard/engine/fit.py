"""Fitting a call's output cap to what its budget affords (``fit_max_tokens``).

When a call's worst case is refused, the largest output cap whose worst case
fits every hard cap is found from the counter states the refusal reported
(a binary search over the exact worst-case price, which only grows with the
output). The call is then reserved again at that cap, and the model sends it
as the request's ``max_tokens`` (``adapter/fit.py``): the provider enforces it.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..pricing import Rates
from ..reservation import Amount, CounterSpec, CounterState, Violation, exceeds

__all__ = ["affordable_output"]


def _fits(specs: Sequence[CounterSpec], states: Sequence[CounterState], amount: Amount) -> bool:
    for spec, st in zip(specs, states, strict=True):
        for j in (0, 1, 2):
            if exceeds(spec.caps[j], st.spent[j], st.reserved[j], amount[j]):
                return False
    return True


def affordable_output(
    specs: Sequence[CounterSpec],
    states: Sequence[CounterState],
    violation: Violation | None,
    rates: Rates,
    input_tokens: int,
    output_cap: int,
    minimum: int,
) -> int | None:
    """The largest output cap below ``output_cap``, and at least ``minimum``, that fits; else None.

    Only hard caps are fitted: a soft cap (``degrade_at``) refusal lets a fallback serve instead.
    """
    if violation is None or violation.soft or len(states) != len(specs):
        return None

    def amount(out: int) -> Amount:
        return Amount(rates.worst_nanos(input_tokens, out), input_tokens + out, 1)

    lo, hi = minimum, output_cap - 1
    if hi < lo or not _fits(specs, states, amount(lo)):
        return None
    while lo < hi:  # invariant: lo fits
        mid = (lo + hi + 1) // 2
        if _fits(specs, states, amount(mid)):
            lo = mid
        else:
            hi = mid - 1
    return lo
