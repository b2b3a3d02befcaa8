"""One fake clock for every test that injects time into a store (``clock=``).

``FakeClock()`` is a callable returning epoch seconds, like ``time.time``;
the test moves it with ``advance(seconds)`` or by setting ``.t``.
"""

from __future__ import annotations

#: 2023-11-14 22:13:20 UTC: a fixed, unremarkable instant.
DEFAULT_T = 1_700_000_000.0


class FakeClock:
    """A mutable clock: ``clock()`` is ``clock.t``; nothing moves it but the test."""

    def __init__(self, t: float = DEFAULT_T) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> float:
        """Move the clock forward (never back) and return the new time."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward, got advance({seconds})")
        self.t += seconds
        return self.t

    def __repr__(self) -> str:
        return f"FakeClock(t={self.t!r})"
