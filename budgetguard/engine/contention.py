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

from ..reservation import Amount, CounterSpec, CounterState, exceeds

__all__ = ["DEFAULT_CONTENTION_WAIT", "FIRST_DELAY", "MAX_DELAY", "Waiter", "fits_once_settled"]

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
