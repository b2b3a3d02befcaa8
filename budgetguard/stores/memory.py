"""The default store: counters in this process, under one lock.

Good for one process. Every operation holds a ``threading.Lock`` for a few
microseconds and never awaits, so it is safe from threads and from asyncio
alike.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import replace

from ..definitions import LimitDef
from ..errors import ConfigError
from ..ledger import DEFAULT_MAXLEN, LedgerNote, LedgerRecord, charges_between
from ..reservation import (
    Amount,
    CounterRef,
    CounterSpec,
    CounterState,
    apply_expire,
    apply_release,
    apply_reserve,
    apply_settle,
    first_violation,
)
from ..windows import window_end, window_start
from .base import Connector, ReserveRequest, ReserveResult, SettleOutcome, SettleRequest, Store
from .memory_keys import Key as _Key
from .memory_keys import Lease as _Lease
from .memory_keys import Shape as _Shape
from .memory_keys import lease_root as _root
from .memory_ledger import Gains as _Gains
from .memory_ledger import Kept as _RecordFields
from .memory_ledger import as_record as _as_record

__all__ = ["MemoryConnector", "MemoryStore"]

_new = tuple.__new__  # a NamedTuple from all its fields, without its Python-level __new__


class MemoryStore(Store):
    """In-process counters and leases.

    ``clock`` returns epoch seconds (inject one in tests). Expired leases
    are remembered for ``tombstone_ttl`` seconds, and closed (settled or
    released) lease ids for that long too, at most the newest ``settled_cap``
    per root scope: a replayed or late settle is never counted twice within
    those bounds, and memory never grows with the number of calls.

    The ledger (``budgetguard.ledger``) is a ring of the newest ``ledger_cap``
    records (0: none kept).
    """

    blocking = False

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        tombstone_ttl: float = 86400,
        settled_cap: int = 10_000,
        ledger_cap: int = DEFAULT_MAXLEN,
    ) -> None:
        if isinstance(settled_cap, bool) or not isinstance(settled_cap, int) or settled_cap < 1:
            raise ConfigError(f"settled_cap must be a positive number of lease ids, got {settled_cap!r}")
        if isinstance(ledger_cap, bool) or not isinstance(ledger_cap, int) or ledger_cap < 0:
            raise ConfigError(f"ledger_cap must be a number of records (0: no ledger), got {ledger_cap!r}")
        self._clock = clock
        self._tombstone_ttl = tombstone_ttl
        self._settled_cap = settled_cap
        self._lock = threading.Lock()
        self._counters: dict[_Key, CounterState] = {}
        self._forget_at: dict[_Key, float] = {}  # when each counter goes (inf: never)
        self._leases: dict[str, _Lease] = {}
        self._expired: dict[str, tuple[_Lease, float]] = {}
        self._settled: dict[str, OrderedDict[str, float]] = {}  # root -> closed ids, oldest first
        self._lease_heap: list[tuple[float, str]] = []
        self._gc_heap: list[tuple[float, int, str, object]] = []
        self._gc_seq = 0
        self._alerts: dict[str, float] = {}  # claimed alert key -> when the claim lapses (inf: never)
        #: records as plain tuples (made LedgerRecords when read: no dataclass or Charge per call)
        self._ledger: deque[_RecordFields] | None = deque(maxlen=ledger_cap) if ledger_cap else None
        self._defs: dict[LimitDef, float] = {}
        self._shapes: dict[int, _Shape] = {}  # by id: each holds its specs, so no id is reused
        self._last_shape: _Shape | None = None  # the last reserve's: a static plan sends the same specs
        self._roots: dict[int, tuple[tuple[CounterRef, ...], str]] = {}

    def __repr__(self) -> str:
        return f"MemoryStore(counters={len(self._counters)}, leases={len(self._leases)})"

    # ---------------------------------------------------------------- internals

    def _key(self, ref: CounterRef, now: float) -> _Key:
        return (ref.scope, ref.per, window_start(ref.per, now))

    def _state(self, key: _Key, now: float, expire_after: float | None = None) -> CounterState:
        """The counter (made if new), to be changed now: forget it a day after its window
        closes, or ``expire_after`` seconds from now, whichever comes first."""
        st = self._counters.get(key)
        if st is not None and expire_after is None:
            return st  # its deadline stands (the common case: nothing to look up)
        old = self._forget_at.get(key, math.inf)
        if st is None:
            st = self._counters[key] = CounterState(window_start=key[2])
            end = window_end(key[1], key[2])
            old = math.inf
            self._forget_at[key] = math.inf if end is None else end + 86400
        at = self._forget_at[key]
        if expire_after is not None:
            end = window_end(key[1], key[2])
            at = min(math.inf if end is None else end + 86400, now + expire_after)
            self._forget_at[key] = at
        if at < old:  # (a later deadline is found when the earlier entry comes due)
            self._later(at, "counter", key)
        return st

    def _forget(self, key: _Key, now: float) -> None:
        at = self._forget_at.get(key)
        if at is None:
            return  # already gone (reset)
        if at > now:
            self._later(at, "counter", key)  # used again since: not yet
            return
        del self._forget_at[key]
        self._counters.pop(key, None)

    def _track(self, lease_id: str, lease: _Lease) -> None:
        """A new live lease; the expiry heap drops closed leases' entries once they are half of it."""
        self._leases[lease_id] = lease
        heapq.heappush(self._lease_heap, (lease.expires_at, lease_id))
        if len(self._lease_heap) > 2 * len(self._leases) + 64:
            self._lease_heap = [(x.expires_at, lid) for lid, x in self._leases.items()]
            heapq.heapify(self._lease_heap)

    def _shape(self, specs: tuple[CounterSpec, ...]) -> _Shape:
        """The reserve's counters as filed here, by identity: a static plan sends one tuple each call."""
        shape = self._last_shape  # a static plan, or a tenant calling again: no look-up
        if shape is not None and shape.specs is specs:
            return shape
        shape = self._shapes.get(id(specs))
        if shape is None or shape.specs is not specs:
            if len(self._shapes) >= 256:
                self._shapes.clear()
            shape = self._shapes[id(specs)] = _Shape(specs)
        self._last_shape = shape
        return shape

    def _root_of(self, refs: tuple[CounterRef, ...]) -> str:
        """``_root(refs)``, by identity (a settle names the same refs tuple as its plan)."""
        found = self._roots.get(id(refs))
        if found is None or found[0] is not refs:
            if len(self._roots) >= 256:
                self._roots.clear()
            found = self._roots[id(refs)] = (refs, _root(refs))
        return found[1]

    def _closed(self, root: str, lease_id: str, now: float) -> bool:
        ids = self._settled.get(root)
        t = None if ids is None else ids.get(lease_id)
        return t is not None and t > now - self._tombstone_ttl

    def _close(self, root: str, lease_id: str, now: float) -> None:
        """Remember a closed lease id: the newest ``settled_cap`` per root, for tombstone_ttl."""
        ids = self._settled.get(root)
        if ids is None:
            ids = self._settled[root] = OrderedDict()
            self._later(now + self._tombstone_ttl, "settled", root)
        if lease_id in ids:
            ids.move_to_end(lease_id)
        ids[lease_id] = now
        while len(ids) > self._settled_cap:
            ids.popitem(last=False)

    def _age_out(self, root: str, now: float) -> None:
        ids = self._settled.get(root)
        if ids is None:
            return
        while ids and next(iter(ids.values())) <= now - self._tombstone_ttl:
            ids.popitem(last=False)
        if ids:
            self._later(next(iter(ids.values())) + self._tombstone_ttl, "settled", root)
        else:
            del self._settled[root]

    def _later(self, when: float, kind: str, item: object) -> None:
        self._gc_seq += 1
        heapq.heappush(self._gc_heap, (when, self._gc_seq, kind, item))

    def _record(
        self,
        outcome: str,
        lease_id: str,
        keys: Sequence[_Key],
        befores: Sequence[Amount],
        now: float,
        cost: Amount,
        estimated: bool = False,
        note: LedgerNote | None = None,
    ) -> None:
        """Append a ledger record: what this change added to each counter's spent (since ``befores``)."""
        if self._ledger is not None:
            gains = [after - before for after, before in zip(self._spent(keys), befores, strict=True)]
            self._log(outcome, lease_id, keys, now, cost, estimated, note, gains)

    def _log(
        self,
        outcome: str,
        lease_id: str,
        keys: Sequence[_Key],
        now: float,
        cost: Amount,
        estimated: bool = False,
        note: LedgerNote | None = None,
        gains: _Gains = None,
    ) -> None:
        """Append a ledger record; without ``gains``, each counter named gained exactly ``cost``
        (a live settle, an unreserved one, an expiry: each adds it to spent, with no floor)."""
        if self._ledger is not None:
            self._ledger.append((now, outcome, lease_id, estimated, cost, keys, gains, note))

    def _spent(self, keys: Sequence[_Key]) -> list[Amount]:
        out = []
        for key in keys:
            st = self._counters.get(key)
            out.append(st.spent if st is not None else Amount())
        return out

    def _sweep(self, now: float) -> None:
        heap = self._lease_heap
        while heap and heap[0][0] <= now:
            _, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is None or lease.expires_at > now:
                continue
            del self._leases[lease_id]
            for key, ea in zip(lease.keys, lease.expire_after, strict=True):
                apply_expire(self._state(key, now, ea), lease.amount)  # even after a reset
            self._log("expired", lease_id, lease.keys, now, lease.amount, True)
            self._expired[lease_id] = (lease, now)
            self._later(now + self._tombstone_ttl, "expired", lease_id)
        gc = self._gc_heap
        while gc and gc[0][0] <= now:
            _, _, kind, item = heapq.heappop(gc)
            if kind == "counter":
                self._forget(item, now)  # type: ignore[arg-type]
            elif kind == "expired":
                self._expired.pop(item, None)  # type: ignore[call-overload]
            elif kind == "alert":
                if self._alerts.get(item, now + 1) <= now:  # type: ignore[call-overload]
                    del self._alerts[item]  # type: ignore[arg-type]
            else:
                self._age_out(item, now)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- operations

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        with self._lock:
            now = self._clock()
            self._sweep(now)
            shape = self._shape(req.counters)
            lease_id = req.lease_id
            ids = self._settled.get(shape.root)  # (a new id is in none of these: no call to _closed)
            if (
                lease_id in self._leases
                or lease_id in self._expired
                or (ids is not None and lease_id in ids and self._closed(shape.root, lease_id, now))
            ):
                # a replayed reserve: the lease is live, expired or closed already; never reserve twice
                return ReserveResult(True, (), None)
            if not shape.lo <= now < shape.hi:
                shape.window(now)
            keys, eas = shape.keys, shape.eas
            counters = self._counters
            found = list(map(counters.get, keys))  # (no comprehension frame)
            known = True  # (``None not in found`` would call CounterState.__eq__ on each)
            for st in found:
                if st is None:
                    known = False
            states: list[CounterState] = (
                found  # type: ignore[assignment]
                if known
                else [st or CounterState(k[2]) for st, k in zip(found, keys, strict=True)]
            )
            violation = first_violation(req.counters, states, req.amount)
            if violation is not None and not req.force:
                return ReserveResult(False, tuple(replace(s) for s in states), violation)
            amount = req.amount
            if known and shape.kept:  # every counter exists and keeps its deadline: _state has nothing to do
                for state in states:
                    apply_reserve(state, amount)
            else:
                for i, k in enumerate(keys):
                    st = found[i]
                    ea = eas[i]
                    if st is None or ea is not None:  # new, or its deadline moves: _state's slow path
                        st = states[i] = self._state(k, now, ea)
                    apply_reserve(st, amount)
            expires = now + req.ttl
            self._track(req.lease_id, _new(_Lease, (keys, amount, expires, eas)))
            # Callers read states only to explain a refusal or a forced record.
            snapshot = tuple(replace(s) for s in states) if req.force else ()
            return _new(ReserveResult, (True, snapshot, violation))

    def settle(self, req: SettleRequest) -> SettleOutcome:
        with self._lock:
            now = self._clock()
            self._sweep(now)
            lease_id = req.lease_id
            root = self._root_of(req.counters)
            ids = self._settled.get(root)  # (a first settle is not among them: no call to _closed)
            if ids is not None and lease_id in ids and self._closed(root, lease_id, now):
                return "replay"
            outcome: SettleOutcome
            lease = self._leases.pop(lease_id, None)
            if lease is None:
                outcome = self._settle_unleased(req, now)
            else:
                actual, amount, counters = req.actual, lease.amount, self._counters
                for key, ea in zip(lease.keys, lease.expire_after, strict=True):
                    st = counters.get(key) if ea is None else None
                    if st is None:
                        st = self._state(key, now, ea)
                    apply_settle(st, amount, None, actual, req.estimated, req.count_overshoot)
                self._log("settled", lease_id, lease.keys, now, actual, req.estimated, req.note)
                outcome = "settled"
            self._close(root, lease_id, now)
            return outcome

    def _settle_unleased(self, req: SettleRequest, now: float) -> SettleOutcome:
        """A settle with no live lease: it expired (``late``: the actual replaces the estimate
        it was charged) or this store never saw it (``unreserved``: charged in full)."""
        expired = self._expired.pop(req.lease_id, None)
        if expired is not None:
            old = expired[0]
            befores = self._spent(old.keys)
            for key, ea in zip(old.keys, old.expire_after, strict=True):
                st = self._state(key, now, ea)
                apply_settle(st, None, old.amount, req.actual, req.estimated, req.count_overshoot)
            self._record("late", req.lease_id, old.keys, befores, now, req.actual, req.estimated, req.note)
            return "late"
        keys = tuple([self._key(ref, now) for ref in req.counters])
        for ref, key in zip(req.counters, keys, strict=True):
            apply_settle(self._state(key, now, ref.expire_after), None, None, req.actual, req.estimated)
        self._log("unreserved", req.lease_id, keys, now, req.actual, req.estimated, req.note)
        return "unreserved"

    def release(self, lease_id: str, counters: tuple[CounterRef, ...] = ()) -> bool:
        with self._lock:
            now = self._clock()
            self._sweep(now)
            root = _root(counters)
            if self._closed(root, lease_id, now):
                return False
            lease = self._leases.pop(lease_id, None)
            expired = self._expired.pop(lease_id, None) if lease is None else None
            # closed either way: a reserve that arrives late (after a timeout) must not reserve
            self._close(root, lease_id, now)
            if expired is not None:
                old = expired[0]  # charged at expiry, but the call never ran: refund
                befores = self._spent(old.keys)
                for key, ea in zip(old.keys, old.expire_after, strict=True):
                    apply_settle(self._state(key, now, ea), None, old.amount, Amount(), False, False)
                self._record("refunded", lease_id, old.keys, befores, now, Amount())
            elif lease is not None:
                for key, ea in zip(lease.keys, lease.expire_after, strict=True):
                    if key in self._counters:
                        apply_release(self._state(key, now, ea), lease.amount)
            return lease is not None or expired is not None

    def status(self, refs: Sequence[CounterRef]) -> list[CounterState]:
        with self._lock:
            now = self._clock()
            self._sweep(now)
            out = []
            for ref in refs:
                key = self._key(ref, now)
                st = self._counters.get(key)
                out.append(replace(st) if st is not None else CounterState(window_start=key[2]))
            return out

    def reset(self, scope: str) -> int:
        with self._lock:
            doomed = [k for k in self._counters if k[0] == scope]
            befores = self._spent(doomed)
            for k in doomed:
                del self._counters[k]
                self._forget_at.pop(k, None)
            if doomed:
                self._record("reset", "", doomed, befores, self._clock(), Amount())
            return len(doomed)

    supports_alerts = True

    def claim_alert(self, key: str, ttl: float | None) -> bool:
        with self._lock:
            now = self._clock()
            self._sweep(now)
            if self._alerts.get(key, now) > now:
                return False
            self._alerts[key] = float("inf") if ttl is None else now + ttl
            if ttl is not None:
                self._later(now + ttl, "alert", key)
            return True

    # ---------------------------------------------------------------- operators' reads

    def define_limits(self, defs: Sequence[LimitDef]) -> None:
        with self._lock:
            now = self._clock()
            for d in defs:
                self._defs.pop(d, None)
                self._defs[d] = now

    def limit_definitions(self) -> list[LimitDef]:
        """Newest first (a definition written again moves to the front)."""
        with self._lock:
            return sorted(self._defs, key=lambda d: -self._defs[d])

    def ledger_records(self, since: float | None = None, until: float | None = None) -> list[LedgerRecord]:
        with self._lock:
            kept = list(self._ledger or ())  # (immutable tuples: made records outside the lock)
        return list(charges_between(map(_as_record, kept), since, until))

    def scopes(self) -> list[tuple[str, str]]:
        with self._lock:
            self._sweep(self._clock())
            return sorted({(k[0], k[1]) for k in self._counters})

    def active_leases(self) -> int:
        """How many reservations are open (for tests and soak checks)."""
        with self._lock:
            self._sweep(self._clock())
            return len(self._leases)


class MemoryConnector(Connector):
    """``memory://``: counters in this process (the default)."""

    schemes = ("memory",)

    @classmethod
    def connect(cls, url: str, *, timeout: float) -> Store:
        return MemoryStore()
