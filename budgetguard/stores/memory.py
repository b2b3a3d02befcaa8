"""The default store: counters in this process, under one lock.

Good for one process. Every operation holds a ``threading.Lock`` for a few
microseconds and never awaits, so it is safe from threads and from asyncio
alike.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from ..reservation import (
    Amount,
    CounterRef,
    CounterState,
    apply_expire,
    apply_release,
    apply_reserve,
    apply_settle,
    first_violation,
)
from ..windows import window_end, window_start
from .base import Connector, ReserveRequest, ReserveResult, SettleOutcome, SettleRequest, Store

__all__ = ["MemoryConnector", "MemoryStore"]

_Key = tuple[str, str, int]  # scope, per, window start


@dataclass(slots=True)
class _Lease:
    keys: tuple[_Key, ...]
    amount: Amount
    expires_at: float


class MemoryStore(Store):
    """In-process counters and leases.

    ``clock`` returns epoch seconds (inject one in tests). Settled lease ids
    and expired leases are remembered for ``tombstone_ttl`` seconds, so a
    replayed or late settle is never counted twice within that time.
    """

    blocking = False

    def __init__(self, *, clock: Callable[[], float] = time.time, tombstone_ttl: float = 86400) -> None:
        self._clock = clock
        self._tombstone_ttl = tombstone_ttl
        self._lock = threading.Lock()
        self._counters: dict[_Key, CounterState] = {}
        self._leases: dict[str, _Lease] = {}
        self._expired: dict[str, tuple[_Lease, float]] = {}
        self._settled: dict[str, float] = {}
        self._lease_heap: list[tuple[float, str]] = []
        self._gc_heap: list[tuple[float, int, str, object]] = []
        self._gc_seq = 0

    def __repr__(self) -> str:
        return f"MemoryStore(counters={len(self._counters)}, leases={len(self._leases)})"

    # ---------------------------------------------------------------- internals

    def _key(self, ref: CounterRef, now: float) -> _Key:
        return (ref.scope, ref.per, window_start(ref.per, now))

    def _state(self, key: _Key) -> CounterState:
        st = self._counters.get(key)
        if st is None:
            st = self._counters[key] = CounterState(window_start=key[2])
            end = window_end(key[1], key[2])
            if end is not None:  # forget a window a day after it closes
                self._later(end + 86400, "counter", key)
        return st

    def _later(self, when: float, kind: str, item: object) -> None:
        self._gc_seq += 1
        heapq.heappush(self._gc_heap, (when, self._gc_seq, kind, item))

    def _sweep(self, now: float) -> None:
        heap = self._lease_heap
        while heap and heap[0][0] <= now:
            _, lease_id = heapq.heappop(heap)
            lease = self._leases.get(lease_id)
            if lease is None or lease.expires_at > now:
                continue
            del self._leases[lease_id]
            for key in lease.keys:  # charged even if the counter was reset meanwhile
                apply_expire(self._state(key), lease.amount)
            self._expired[lease_id] = (lease, now)
            self._later(now + self._tombstone_ttl, "expired", lease_id)
        gc = self._gc_heap
        while gc and gc[0][0] <= now:
            _, _, kind, item = heapq.heappop(gc)
            if kind == "counter":
                self._counters.pop(item, None)  # type: ignore[call-overload]
            elif kind == "expired":
                self._expired.pop(item, None)  # type: ignore[call-overload]
            else:
                self._settled.pop(item, None)  # type: ignore[call-overload]

    # ---------------------------------------------------------------- operations

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        with self._lock:
            now = self._clock()
            self._sweep(now)
            if req.lease_id in self._leases or req.lease_id in self._settled or req.lease_id in self._expired:
                # a replayed reserve: the lease exists (or was closed) already; never reserve twice
                return ReserveResult(True, (), None)
            keys = tuple(self._key(spec.ref, now) for spec in req.counters)
            states = [self._state(k) for k in keys]
            violation = first_violation(req.counters, states, req.amount)
            if violation is not None and not req.force:
                return ReserveResult(False, tuple(replace(s) for s in states), violation)
            for st in states:
                apply_reserve(st, req.amount)
            expires = now + req.ttl
            self._leases[req.lease_id] = _Lease(keys, req.amount, expires)
            heapq.heappush(self._lease_heap, (expires, req.lease_id))
            # Callers read states only to explain a refusal or a forced record.
            snapshot = tuple(replace(s) for s in states) if req.force else ()
            return ReserveResult(True, snapshot, violation)

    def settle(self, req: SettleRequest) -> SettleOutcome:
        with self._lock:
            now = self._clock()
            self._sweep(now)
            if req.lease_id in self._settled:
                return "replay"
            outcome: SettleOutcome
            lease = self._leases.pop(req.lease_id, None)
            if lease is not None:
                for key in lease.keys:
                    apply_settle(
                        self._state(key), lease.amount, None, req.actual, req.estimated, req.count_overshoot
                    )
                outcome = "settled"
            elif req.lease_id in self._expired:
                old, _ = self._expired.pop(req.lease_id)
                for key in old.keys:
                    apply_settle(
                        self._state(key), None, old.amount, req.actual, req.estimated, req.count_overshoot
                    )
                outcome = "late"
            else:
                for ref in req.counters:
                    apply_settle(self._state(self._key(ref, now)), None, None, req.actual, req.estimated)
                outcome = "unreserved"
            self._settled[req.lease_id] = now
            self._later(now + self._tombstone_ttl, "settled", req.lease_id)
            return outcome

    def release(self, lease_id: str, counters: tuple[CounterRef, ...] = ()) -> bool:
        with self._lock:
            self._sweep(self._clock())
            lease = self._leases.pop(lease_id, None)
            if lease is None:
                expired = self._expired.pop(lease_id, None)
                if expired is None:
                    # remember it: a reserve that arrives late (after a timeout) must not reserve
                    self._settled[lease_id] = self._clock()
                    self._later(self._clock() + self._tombstone_ttl, "settled", lease_id)
                    return False
                for key in expired[0].keys:  # charged at expiry, but the call never ran: refund
                    apply_settle(self._state(key), None, expired[0].amount, Amount(), False, False)
            else:
                for key in lease.keys:
                    if key in self._counters:
                        apply_release(self._counters[key], lease.amount)
            self._settled[lease_id] = self._clock()
            self._later(self._clock() + self._tombstone_ttl, "settled", lease_id)
            return True

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
            for k in doomed:
                del self._counters[k]
            return len(doomed)

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
