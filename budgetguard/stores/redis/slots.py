"""Operations whose counters live in several Redis Cluster slots: one atomic script per slot.

On Cluster a script may only touch keys of one slot, and every root scope
(``global``, ``user:u1``, ``org:o``) hashes to its own. A reservation across
roots is therefore taken slot by slot, in a FIXED order (ascending slot
number, so two callers never wait on each other in opposite orders), each
step the ordinary reserve script on that slot's counters, under the same
lease id. When a later slot refuses, the earlier slots' parts are undone
(``unreserve.lua``: like a release, but without a tombstone, so the caller may
reserve again under the same id, e.g. with a smaller output cap).

Each counter is still checked and reserved atomically in its slot, so no
counter is ever overspent. The one cost: while a reservation is held in an
earlier slot and a later one refuses it, that hold (a round trip long) may
refuse a concurrent caller that would otherwise have fit.

Settles and releases go to every slot, each exactly once by its own lease
record; a slot that cannot be reached does not stop the others, and the
error is raised afterwards (the engine spools the operation; a replay is a
no-op in the slots that already applied it). A slot that never saw the lease
(or lost it) records the settle as ``unreserved`` on its current windows, so
nothing is lost; a slot whose part was never settled charges it when its
lease runs out, by itself.

The flows here are generators that yield ``(script, keys, args)`` and are
sent each reply (or thrown the call's error), so the sync and the asyncio
store drive the very same logic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Sequence
from typing import Any, NamedTuple, TypeVar

from redis.crc import key_slot

from ...errors import BudgetError
from ...reservation import CounterRef, CounterState, Violation, first_violation
from ..base import ReserveRequest, ReserveResult, SettleRequest
from . import codec

__all__ = ["Group", "Slotted", "groups"]

logger = logging.getLogger("budgetguard")

Step = tuple[str, list[str], list[Any]]
T = TypeVar("T")
Flow = Generator[Step, Any, T]

#: When the slots disagree (a slot lost its lease, or a replay finished a settle), the outcome told.
_RANK: dict[str, int] = {"replay": 0, "settled": 1, "late": 2, "unreserved": 3}


class Group(NamedTuple):
    """The counters of one slot: their positions in the request, and that slot's bases."""

    slot: int
    positions: tuple[int, ...]
    bases: list[str]
    indices: list[int]


def groups(prefix: str, scopes: Sequence[str]) -> list[Group] | None:
    """The scopes split by Cluster slot, in slot order; ``None`` when they share one slot."""
    by_slot: dict[int, list[int]] = {}
    for pos, scope in enumerate(scopes):
        base = codec.key_base(prefix, scope)
        by_slot.setdefault(key_slot(base.encode()), []).append(pos)
    if len(by_slot) < 2:
        return None
    out = []
    for slot in sorted(by_slot):
        positions = tuple(by_slot[slot])
        bases, index = codec.key_bases(prefix, [scopes[p] for p in positions], False)
        out.append(Group(slot, positions, bases, index))
    return out


class Slotted:
    """The multi-slot flows of one store (its options: time, tombstones, the settled cap)."""

    def __init__(
        self,
        now: Callable[[], str],
        tombstone_ttl: int,
        grace: int,
        settled_cap: int,
        ledger: Sequence[int] = (),
    ) -> None:
        self.now = now
        self.tombstone_ttl = tombstone_ttl
        self.grace = grace
        self.settled_cap = settled_cap
        self.ledger = tuple(ledger)  # the ledger's retention (maxlen, age in ms), passed to every script

    # ------------------------------------------------------------ reserve

    def reserve(self, req: ReserveRequest, plan: list[Group]) -> Flow[ReserveResult]:
        """Reserve slot by slot; undo the earlier slots when one refuses or fails."""
        taken: list[Group] = []
        parts: list[tuple[Group, ReserveResult]] = []
        for g in plan:
            sub = ReserveRequest(req.lease_id, _pick(req.counters, g), req.amount, req.ttl, req.force)
            tail = codec.reserve_tail(sub.counters, g.indices, self.tombstone_ttl, self.grace, self.ledger)
            try:
                reply = yield ("reserve", g.bases, codec.reserve_head(sub, self.now()) + tail)
            except BudgetError:
                yield from self._undo(req.lease_id, taken)  # this slot's part may land: the engine
                raise  # releases (closed) or replays the reserve (open), in every slot
            res = codec.decode_reserve(reply)
            if not res.admitted:
                yield from self._undo(req.lease_id, taken)
                return (yield from self._refusal(req, plan, g, res))
            taken.append(g)
            parts.append((g, res))
        return _combine(req, parts)

    def _undo(self, lease_id: str, taken: list[Group]) -> Flow[None]:
        """Compensate: drop this lease's part in the slots already taken (best effort: a part left
        behind only holds its room until its lease runs out, then is charged like any lease)."""
        for g in reversed(taken):
            try:
                yield (
                    "unreserve",
                    g.bases,
                    [self.now(), lease_id, self.tombstone_ttl, self.grace, *self.ledger],
                )
            except BudgetError as e:
                logger.warning("budgetguard: could not undo lease %s in slot %s: %s", lease_id, g.slot, e)

    def _refusal(
        self, req: ReserveRequest, plan: list[Group], refused: Group, res: ReserveResult
    ) -> Flow[ReserveResult]:
        """The refusal explained on every counter: the refusing slot's states, the others read now.

        The violation is the reference's (``first_violation`` over all counters, hard caps before
        soft ones); the refusing slot's own one if the others moved meanwhile.
        """
        states: list[CounterState] = [CounterState() for _ in req.counters]
        for pos, st in zip(refused.positions, res.states, strict=True):
            states[pos] = st
        for g in plan:
            if g is refused:
                continue
            try:
                got = yield from self.status([s.ref for s in req.counters], g)
            except BudgetError:
                continue  # the refusal stands; those counters are shown empty
            for pos, st in zip(g.positions, got, strict=True):
                states[pos] = st
        violation = first_violation(req.counters, states, req.amount)
        if violation is None and res.violation is not None:
            violation = _global(res.violation, refused)
        return ReserveResult(False, tuple(states), violation)

    # ------------------------------------------------------------ settle, release, status

    def settle(self, req: SettleRequest, plan: list[Group], mode: codec.SettleMode) -> Flow[str]:
        """Settle (or release) in every slot; then raise the first failure, if any."""
        outcomes: list[str] = []
        error: BudgetError | None = None
        for g in plan:
            sub = req._replace(counters=_pick(req.counters, g))
            args = codec.settle_args(
                sub,
                mode,
                g.indices,
                self.now(),
                self.tombstone_ttl,
                self.grace,
                self.settled_cap,
                self.ledger,
            )
            try:
                outcomes.append(codec.decode_text((yield ("settle", g.bases, args))))
            except BudgetError as e:
                error = error or e
        if error is not None:
            raise error
        if mode == "release":
            return "released" if "released" in outcomes else "none"
        return max(outcomes, key=lambda o: _RANK.get(o, 0))

    def status(self, refs: Sequence[CounterRef], g: Group) -> Flow[tuple[CounterState, ...]]:
        """The states of one slot's counters (``refs`` is the whole request's list)."""
        sub = _pick(refs, g)
        args = codec.status_args(sub, g.indices, self.now(), self.tombstone_ttl, self.grace, self.ledger)
        return codec.decode_states((yield ("status", g.bases, args)), 0)

    def status_all(self, refs: Sequence[CounterRef], plan: list[Group]) -> Flow[list[CounterState]]:
        states: list[CounterState] = [CounterState() for _ in refs]
        for g in plan:
            got = yield from self.status(refs, g)
            for pos, st in zip(g.positions, got, strict=True):
                states[pos] = st
        return states


def _pick(items: Sequence[T], g: Group) -> tuple[T, ...]:
    return tuple(items[p] for p in g.positions)


def _global(v: Violation, g: Group) -> Violation:
    """A slot's violation, its counter index made the request's."""
    return Violation(g.positions[v.index], v.quantity, v.soft)


def _combine(req: ReserveRequest, parts: list[tuple[Group, ReserveResult]]) -> ReserveResult:
    """Every slot admitted (or was forced): the request's result, as one script would give it.

    A forced reserve reports every counter's state and the first violation over all of them,
    hard caps before soft ones; a slot that replayed (its part already there) reports none.
    """
    found = [_global(res.violation, g) for g, res in parts if res.violation is not None]
    hard = [v for v in found if not v.soft]
    pick = min(hard or found, key=lambda v: v.index) if found else None
    if not all(res.states for _, res in parts):
        return ReserveResult(True, (), pick)
    states: list[CounterState] = [CounterState() for _ in req.counters]
    for g, res in parts:
        for pos, st in zip(g.positions, res.states, strict=True):
            states[pos] = st
    return ReserveResult(True, tuple(states), pick)
