"""The ``BudgetExceeded`` a refused reservation becomes: which limit, by how much, and what helps.

``retry_after`` follows one rule. When the call would fit but for the
reservations in flight (``spent + request <= cap``), they settle within
seconds, or their lease expires: retry after ``RETRY_RESERVED`` seconds.
When spent money stands in the way, retry when the window resets (``None``
for a lifetime limit). A call that never fits (its minimal form, one output
token, exceeds the whole cap) has ``retry_after=None``: waiting cannot help.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING

from ..errors import BudgetExceeded, DegradeRequired
from ..limits import Limit
from ..pricing import Rates
from ..reservation import Amount, CounterState, Violation
from ..units import format_quantity, format_usd, quantity_of, to_usd
from ..usage import TokenUsage
from ..windows import as_datetime, window_end
from .plans import Plan

if TYPE_CHECKING:
    from .flows import Flows
    from .pending import Pending

__all__ = ["RETRY_RESERVED", "CallShape", "minimal_amount", "refusal", "show_refusal", "states_before"]

logger = logging.getLogger("budgetguard")

#: Seconds to wait when only reservations in flight stand in the way (they settle or expire).
RETRY_RESERVED = 1.0
#: The output of a call's minimal form: what decides that a call can never fit.
MIN_OUTPUT_TOKENS = 1


class CallShape:
    """What a refused call's estimate assumed: input tokens, output cap, and the rates."""

    __slots__ = ("input_tokens", "output_tokens", "rates")

    def __init__(self, input_tokens: int, output_tokens: int, rates: Rates) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.rates = rates


def minimal_amount(rates: Rates, input_tokens: int, output_tokens: int = MIN_OUTPUT_TOKENS) -> Amount:
    """A call with ``output_tokens`` of output at most (one request)."""
    return Amount(rates.worst_nanos(input_tokens, output_tokens), input_tokens + output_tokens, 1)


def refusal(
    plan: Plan,
    states: Sequence[CounterState],
    violation: Violation | None,
    amount: Amount,
    model: str | None,
    shape: CallShape | None = None,
    now: float | None = None,
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
    limit = _limit_behind(plan, violation.index, q, hard)
    conv: Callable[[int], Decimal | int] = to_usd if q == "nanos" else int
    spent, reserved = st.spent.get(q), st.reserved.get(q)
    note = None
    if violation.soft:
        shown = format_quantity(quantity, conv(cap))
        note = f"it would pass degrade_at ({shown}); a fallback serves if one fits"
    requested = amount.get(q)
    never = _never_fits(shape, q, hard)
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
        input_tokens=None if shape is None else shape.input_tokens,
        output_tokens=None if shape is None else shape.output_tokens,
        never_fits=never,
        retry_after=None if never else _retry_after(spec.ref.per, st, q, cap, requested, now),
        fix=_fix(shape, never) if shape and q != "requests" else None,
    )


def show_refusal(flows: Flows, p: Pending, exc: BudgetExceeded) -> None:
    """A refusal made visible: logged once at INFO on the ``budgetguard`` logger with its scope and
    reason, told to the watchers (telemetry) and, unless a fallback may serve it, to ``on_record``."""
    model = p.rates.model or exc.model or ""
    degrade = isinstance(exc, DegradeRequired)
    if logger.isEnabledFor(logging.INFO):
        what = "passes degrade_at; a fallback may serve it" if degrade else "refused"
        logger.info("budgetguard: %s call %s for %s: %s", model or "a", what, exc.scope, exc.reason())
    if flows.watch is not None:
        flows.watch.refused(p, exc)
    if not degrade and flows.on_record is not None:
        flows._emit(p, TokenUsage(), 0, "refused", model, why=exc.reason())


def _limit_behind(plan: Plan, index: int, q: str, hard: int) -> Limit:
    """The limit behind the tightest cap of a counter."""
    return next(
        lim for lim in plan.groups[index] if (lim.usd_nanos if q == "nanos" else getattr(lim, q)) == hard
    )


def _never_fits(shape: CallShape | None, q: str, hard: int) -> bool:
    """Whether even the call's minimal form (one output token) is more than the whole cap."""
    return shape is not None and minimal_amount(shape.rates, shape.input_tokens).get(q) > hard


def _retry_after(
    per: str, st: CounterState, q: str, cap: int, requested: int, now: float | None
) -> float | None:
    """Seconds until a retry may fit: see the module's rule."""
    if st.spent.get(q) + requested <= cap:
        return RETRY_RESERVED
    end = window_end(per, st.window_start)
    if end is None:
        return None
    return max(end - (time.time() if now is None else now), 0.0)


def _fix(shape: CallShape, never: bool) -> str:
    """What the estimate assumed, and the settings that change it."""
    out_usd = format_usd(to_usd(shape.rates.worst_nanos(0, shape.output_tokens)))
    text = (
        f"The estimate assumed {shape.input_tokens:,} input tokens and an output cap of "
        f"{shape.output_tokens:,} tokens (up to {out_usd} of output)"
    )
    if never:
        return text + "; even with 1 output token it is more than the whole limit: shorten the prompt."
    return (
        text + "; to change the cap, pass max_tokens to the call or the model, "
        "or set the guard's min_output_tokens or default_max_output_tokens."
    )


def states_before(states: Sequence[CounterState], amount: Amount) -> list[CounterState]:
    """The states a forced reservation reported, as they were before it."""
    return [
        CounterState(
            st.window_start, st.spent, (st.reserved - amount).floor0(), st.overshoot_count, st.overshoot
        )
        for st in states
    ]
