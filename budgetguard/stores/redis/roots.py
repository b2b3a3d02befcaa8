"""The list of root scopes, ``<prefix>rootz``: what ``store.scopes()`` walks, without KEYS or SCAN.

A sorted set: member a root's key base, score the epoch second after which
nothing of that root is left to list: ``inf`` once any permanent counter was
used under it, else the last use of an expiring one plus its ``expire_after``
plus ``SLACK``. Written by the client (on Cluster the scripts cannot reach
another slot), only raised (``ZADD GT``), and trimmed of lapsed roots as it is
written, so ephemeral roots (``run:{run_id}``) never pile up. ``SLACK`` covers
clock skew between app servers and Redis: a root listed a little longer than
its counters costs nothing (its own scope list is filtered by time too).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ...reservation import CounterSpec
from .codec import key_base

__all__ = ["SLACK", "Roots"]

SLACK = 60.0


class Roots:
    """This process's view of ``<prefix>rootz``: which roots it listed, until when."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.key = f"{prefix}rootz"
        self._listed: dict[str, float] = {}  # base -> the score this process last wrote

    def due(self, counters: Sequence[CounterSpec], now: float) -> dict[str, float]:
        """The roots whose score must be written after these counters were used at ``now``
        (claimed now; give them back with ``failed`` if the write fails)."""
        want: dict[str, float] = {}
        for spec in counters:
            base = key_base(self.prefix, spec.ref.scope)
            ea = spec.ref.expire_after
            until = math.inf if ea is None else now + ea + SLACK
            want[base] = max(want.get(base, until), until)
        out = {b: t for b, t in want.items() if t > self._listed.get(b, -math.inf) + SLACK / 2}
        if len(self._listed) > 10_000:
            self._listed.clear()
        self._listed.update(out)
        return out

    def failed(self, due: dict[str, float]) -> None:
        """A write that did not reach Redis: list those roots again next time."""
        for base in due:
            self._listed.pop(base, None)

    def write(self, pipe: Any, due: dict[str, float], now: float) -> Any:
        """Queue the write on a pipeline (sync or asyncio): raise the scores, drop lapsed roots."""
        pipe.zadd(self.key, {b: _score(t) for b, t in due.items()}, gt=True)
        pipe.zremrangebyscore(self.key, "-inf", f"({now}")
        return pipe


def _score(t: float) -> float | str:
    return "inf" if math.isinf(t) else t
