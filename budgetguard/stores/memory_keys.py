"""How the memory store files a reserve's counters: their keys, and the root a lease is closed under.

A static plan sends the same ``CounterSpec`` tuple on every call, so its
``Shape`` (refs, deadlines, root, and the keys of the current windows) is
worked out once and reused until a window turns over.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from ..reservation import Amount, CounterRef, CounterSpec
from ..windows import window_end, window_start

__all__ = ["Key", "Lease", "Shape", "lease_root"]

Key = tuple[str, str, int]  # scope, per, window start


class Lease(NamedTuple):
    """A live reservation as filed: never changed (a tuple), made without its Python-level ``__new__``."""

    keys: tuple[Key, ...]
    amount: Amount
    expires_at: float
    expire_after: tuple[float | None, ...]  # each counter's, as its CounterRef says


def lease_root(refs: Sequence[CounterRef]) -> str:
    """Where a lease's closed id is filed: the first counter's root scope (as RedisStore does)."""
    return refs[0].scope.split("/", 1)[0] if refs else "global"


class Shape:
    """A reserve's counters as the store files them, and their keys in the current windows."""

    __slots__ = ("eas", "hi", "kept", "keys", "lo", "refs", "root", "specs")

    def __init__(self, specs: tuple[CounterSpec, ...]) -> None:
        self.specs = specs  # (held: the cache is keyed by its id)
        self.refs = tuple(spec.ref for spec in specs)
        self.eas = tuple(ref.expire_after for ref in self.refs)
        self.kept = all(ea is None for ea in self.eas)  # no counter's deadline moves when it is used
        self.root = lease_root(self.refs)
        self.keys: tuple[Key, ...] = ()
        self.lo, self.hi = math.inf, -math.inf  # the span of time the keys hold for (none yet)

    def window(self, now: float) -> None:
        """The keys at ``now`` (``MemoryStore._key``), and until when they hold: every window's."""
        self.keys = tuple([(ref.scope, ref.per, window_start(ref.per, now)) for ref in self.refs])
        ends = [window_end(k[1], k[2]) for k in self.keys]
        self.lo = max((k[2] for k in self.keys), default=-math.inf)
        self.hi = min((math.inf if e is None else e for e in ends), default=math.inf)
