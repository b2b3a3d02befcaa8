"""Why each candidate of a fallback chain was refused, told by the error the caller gets.

``primary.with_fallbacks(...)`` tries each candidate and, when every one is
refused, raises the *first* error (the primary's) from ``invoke`` and
``stream``, and the *last* from ``batch``. Each candidate's handler sees the
same parent run (the ``RunnableWithFallbacks``), so the later refusals are
added to that first error, and the last refusal gets the whole story too:
whichever the caller reads tells why each candidate was refused.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple
from uuid import UUID

from ..errors import BudgetExceeded, CandidateRefusal, DegradeRequired

__all__ = [
    "FALLBACK",
    "FITTED_PRIMARY",
    "LAST_FALLBACK",
    "LAST_RESORT",
    "PRIMARY",
    "Candidates",
    "Role",
    "candidates",
]


class Role(NamedTuple):
    """A guarded model's place in a fallback chain."""

    name: str
    first: bool = False
    last: bool = False
    #: tried only because the primary passed degrade_at: its refusal matters only then
    last_resort: bool = False


PRIMARY = Role("primary", first=True)
FALLBACK = Role("fallback")
LAST_FALLBACK = Role("fallback", last=True)
LAST_RESORT = Role("primary, ignoring degrade_at", last=True, last_resort=True)
#: With no degrade_at: the primary again, last, with its output cap fitted (``fit_max_tokens``).
FITTED_PRIMARY = Role("primary, output cap fitted", last=True, last_resort=True)

#: Chains whose outcome is still open, at most this many (a chain broken off is forgotten in turn).
_MAX_OPEN = 256


class Candidates:
    """The first refusal of each open fallback chain, by the chain's run id."""

    __slots__ = ("_first", "_lock")

    def __init__(self) -> None:
        self._first: OrderedDict[UUID, BudgetExceeded] = OrderedDict()
        self._lock = threading.Lock()

    def refused(self, role: Role | None, parent: UUID | None, exc: BudgetExceeded) -> None:
        if role is None or parent is None:
            return
        with self._lock:
            if role.first:
                self._first[parent] = exc
                while len(self._first) > _MAX_OPEN:
                    self._first.popitem(last=False)
                return
            first = self._first.pop(parent, None) if role.last else self._first.get(parent)
        if first is None or first is exc:
            return
        reason = exc.reason()
        if role.last:  # batch raises the last error: it tells the whole story as well
            story = [CandidateRefusal(PRIMARY.name, first.model, first.reason()), *first.candidates]
            for c in story:
                if c.reason != reason:
                    exc.add_candidate(c)
        # a primary refused outright says nothing new when it is refused again
        if not role.last_resort or isinstance(first, DegradeRequired):
            first.add_candidate(CandidateRefusal(role.name, exc.model, reason))

    def admitted(self, role: Role | None, parent: UUID | None) -> None:
        if role is not None and parent is not None and not role.first:
            with self._lock:
                self._first.pop(parent, None)


#: One registry per process: run ids are unique.
candidates = Candidates()
