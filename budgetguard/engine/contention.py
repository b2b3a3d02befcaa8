"""Waiting out contention: a call refused only because of other calls' reservations in flight.

A reservation is a call's worst case, held until it settles at its actual
cost (usually far less). When the budget is nearly used, those reservations,
not spent money, can be what refuses a call that will fit once they settle.
Such a call waits and retries (``contention_wait`` seconds at most) instead of
being refused. The test is exact: it waits only if it would fit every hard cap
with spent money as it is, the waiting caller's own reservations still held
(they cannot settle while it waits: a stream it holds open, say), and every
other reservation settled at zero. A call that spent money alone stands in
the way of is refused at once: no wait can help it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..reservation import Amount, CounterRef, CounterSpec, CounterState, exceeds
from ..stores.base import ReserveRequest, ReserveResult
from . import ops
from .ops import Flow
from .pending import PendingRuns

if TYPE_CHECKING:
    from .flows import Begun

__all__ = ["DEFAULT_CONTENTION_WAIT", "FIRST_DELAY", "MAX_DELAY", "Contention", "Waiter", "fits_once_settled"]

#: The default bound (seconds): about one LLM call (a few hundred tokens at 50-100 tokens/s),
#: the time the reservations in its way take to settle; well under common 30-60 s request timeouts.
DEFAULT_CONTENTION_WAIT = 10.0

#: The first pause (seconds): calls in flight settle on their own schedule, often within milliseconds.
FIRST_DELAY = 0.01
#: The longest pause between retries: each retry is one reserve on the store.
MAX_DELAY = 0.25


def fits_once_settled(
    specs: Sequence[CounterSpec],
    states: Sequence[CounterState],
    own: Sequence[Amount],
    request: Amount,
) -> bool:
    """Whether ``request`` would fit every hard cap once others' reservations settled at zero.

    ``own``: what the waiting caller itself holds on each counter (it stays).
    Soft caps (``degrade_at``) are not waited for: a fallback serves instead.
    """
    if len(states) != len(specs) or len(own) != len(specs):
        return False
    for spec, st, mine in zip(specs, states, own, strict=True):
        for j in (0, 1, 2):
            if exceeds(spec.caps[j], st.spent[j], mine[j], request[j]):
                return False
    return True


class Waiter:
    """The pauses of one call's wait: exponential from ``FIRST_DELAY`` to ``MAX_DELAY``, jittered,
    and never past the deadline."""

    __slots__ = ("_deadline", "_delay")

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds
        self._delay = FIRST_DELAY

    def next_delay(self) -> float | None:
        """The next pause in seconds, or ``None`` once the wait is over."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            return None
        # jittered (half to all of the step), so callers that were refused together retry apart
        delay = min(self._delay * (0.5 + random.random() / 2), left)
        self._delay = min(self._delay * 2, MAX_DELAY)
        return delay

    def stop(self) -> None:
        """End the wait now (the driver cannot pause here)."""
        self._deadline = 0.0


class Contention:
    """The flows' part that waits out contention (``Flows`` is one)."""

    pending: PendingRuns
    contention_wait: float
    min_output: int
    lease_ttl: float

    if TYPE_CHECKING:

        def _fit(self, begun: Begun, refused: ReserveResult) -> Flow[ReserveResult | None]: ...

        def _reserve_or_spool(
            self, req: ReserveRequest, refs: tuple[CounterRef, ...]
        ) -> Flow[ReserveResult | None]: ...

    def _refused(self, begun: Begun, result: ReserveResult) -> Flow[ReserveResult | None]:
        """A refused call: wait while only others' reservations stand in the way (bounded), and fit.

        While the full call would fit once the others settle, it waits and
        retries at its full cap. Then it is fitted (``fit_max_tokens``), and
        waits on while its fitted form (``min_output_tokens``) would fit once they settle.
        """
        p = begun.pending
        waiter = Waiter(self.contention_wait) if p.wait and self.contention_wait > 0 else None
        while True:
            target = None if waiter is None else self._wait_target(begun, result)
            if target == "full" and waiter is not None:
                again = yield from self._pause_and_retry(begun, waiter, result)
                if again is not result:
                    if again is None or again.admitted:
                        return again
                    result = again
                    continue
            if p.fit:
                fitted = yield from self._fit(begun, result)
                if fitted is None or fitted.admitted:
                    return fitted
                result = fitted
            if target is None or waiter is None:
                return result
            again = yield from self._pause_and_retry(begun, waiter, result)
            if again is result or again is None or again.admitted:
                return again
            result = again

    def _wait_target(self, begun: Begun, result: ReserveResult) -> str | None:
        """What waiting could admit: the call at its full cap (``"full"``), its fitted form, or nothing."""
        _, p, plan = begun
        if result.violation is None or result.violation.soft:  # a soft cap: a fallback serves
            return None
        own = self.pending.held_here(plan.refs)
        if fits_once_settled(plan.specs, result.states, own, p.amount):
            return "full"
        if p.fit:
            cap = min(self.min_output, p.output_cap)
            least = Amount(p.rates.worst_nanos(p.input_est, cap), p.input_est + cap, 1)
            if fits_once_settled(plan.specs, result.states, own, least):
                return "fitted"
        return None

    def _pause_and_retry(
        self, begun: Begun, waiter: Waiter, last: ReserveResult
    ) -> Flow[ReserveResult | None]:
        """Pause, then reserve the full call again; ``last`` itself once the wait is over."""
        delay = waiter.next_delay()
        if delay is None or not (yield from ops.sleep(delay)):
            waiter.stop()
            return last
        p, plan = begun.pending, begun.plan
        req = ReserveRequest(p.lease_id, plan.specs, p.amount, self.lease_ttl)
        return (yield from self._reserve_or_spool(req, plan.refs))
