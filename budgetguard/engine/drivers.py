"""The only code that performs I/O: one sync and one async driver for the flows.

A driver runs a flow (``flows.py``), carrying out each operation it yields
against the store or the spool and sending back the result, or throwing
``BudgetStoreUnavailable`` into it. Both drivers share one ``DriverState``:
the fail-fast breaker and the spool's replay. The async driver awaits the
store's async twins (redis.asyncio) and does file I/O in a worker thread,
never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ..errors import BudgetStoreUnavailable
from ..spool import Spool
from ..stores.base import Store
from .ops import (
    ClaimAlert,
    Define,
    Flow,
    Op,
    Release,
    Replay,
    Reserve,
    Reset,
    Settle,
    Sleep,
    SpoolAppend,
    Status,
)

__all__ = ["AsyncDriver", "Breaker", "DriverState", "SyncDriver"]

T = TypeVar("T")

logger = logging.getLogger("budgetguard")


class Breaker:
    """After a store failure, refuse at once for one store timeout instead of waiting on it again.

    An outage is logged once, when it begins, and once when the store answers
    again, never once per call: every call of a busy app would otherwise log it.
    """

    __slots__ = ("_down_until", "cooldown", "label", "tripped")

    def __init__(self, label: str, cooldown: float) -> None:
        self.label = label
        self.cooldown = cooldown
        self._down_until = 0.0  # monotonic
        #: failed since it last answered: ``admit`` and ``answered`` have work to do (one look per call)
        self.tripped = False

    def is_open(self) -> bool:
        return bool(self._down_until) and time.monotonic() < self._down_until

    def check(self, operation: str = "reserve") -> None:
        """Raise (nothing sent, so nothing can land late) while the store is known to be down."""
        if self._down_until and time.monotonic() < self._down_until:
            raise BudgetStoreUnavailable(
                self.label, None, problem="is down (it failed moments ago)", sent=False, operation=operation
            )

    def admit(self, operation: str) -> None:
        """Before an operation: refuse at once while the store is known to be down."""
        if self._down_until:
            self.check(operation)

    def failed(self, exc: BudgetStoreUnavailable, operation: str) -> BudgetStoreUnavailable:
        """After a failed operation: trip, and the error to raise, naming the operation."""
        self.trip(exc)
        return exc.during(operation)

    def answered(self) -> None:
        """After an operation the store answered: close the breaker if it was open."""
        if self.tripped:  # (a down time is set only while tripped)
            self.reset()

    def trip(self, error: BaseException | None = None) -> None:
        self._down_until = time.monotonic() + self.cooldown
        if not self.tripped:
            self.tripped = True
            logger.warning(
                "budgetguard: store %s unavailable: %s (logged once, until it answers again)",
                self.label,
                error,
            )

    def reset(self) -> None:
        self._down_until = 0.0
        if self.tripped:
            self.tripped = False
            logger.warning("budgetguard: store %s answers again", self.label)


class DriverState:
    """What both drivers share: the store, the spool and the breaker."""

    def __init__(self, store: Store, spool: Spool | None) -> None:
        self.store = store
        self.spool = spool
        self.breaker = Breaker(repr(store), getattr(store, "timeout", 1.0))
        self.started = spool is None  # a spool is looked at on the first operation, not at construction
        #: how often to look for spool files that processes which died have left (seconds)
        self.scan_every = 10.0
        self.next_scan = time.monotonic() + self.scan_every

    def start(self) -> None:
        """Replay what an earlier process left in the spool (blocking file and store I/O)."""
        self.started = True
        if self.spool is not None:
            self.spool.prepare()
            if self.spool.pending():
                self.spool.try_replay(self.store)

    def wants_replay(self) -> bool:
        """Whether the spool holds lines to replay, or it is time to look for ones a dead process left."""
        if self.spool is None or self.breaker.is_open():
            return False
        return self.spool.dirty or time.monotonic() >= self.next_scan

    def replay(self) -> None:
        """Replay spooled writes (blocking); a failure trips the breaker."""
        spool = self.spool
        if spool is None or not self.wants_replay():
            return
        if not spool.dirty:
            self.next_scan = time.monotonic() + self.scan_every
            if not spool.orphaned():
                return
        try:
            spool.replay(self.store)
        except BudgetStoreUnavailable as exc:
            spool.dirty = True
            self.breaker.trip(exc)

    def replay_all(self) -> int:
        """Replay every spool file now, whatever the breaker says; how many lines were applied."""
        if self.spool is None:
            return 0
        applied = self.spool.replay(self.store)
        self.breaker.reset()  # the store answered: calls need not wait out the cooldown
        return applied

    def define(self, write: Callable[[], Any]) -> bool:
        """Record the limit definitions (``Define``); quietly ``False`` if the store cannot now.

        The CLI's view only: a failure neither trips the breaker nor reaches the call.
        """
        if self.breaker.is_open():
            return False
        try:
            write()
        except BudgetStoreUnavailable:
            return False
        return True

    def append(self, entry: dict[str, Any]) -> None:
        assert self.spool is not None, "a flow spools only when the guard has a spool"
        self.spool.append(entry)


def _calls(store: Store) -> dict[type, Callable[[Any], Any]]:
    """The store method each store operation calls, by the operation's type."""
    return {
        Reserve: lambda op: store.reserve(op.request),
        Settle: lambda op: store.settle(op.request),
        Release: lambda op: store.release(op.lease_id, op.counters),
        Status: lambda op: store.status(list(op.refs)),
        Reset: lambda op: store.reset(op.scope),
        ClaimAlert: lambda op: store.claim_alert(op.key, op.ttl),
    }


def _sleep(seconds: float) -> bool:
    """A contention wait on the sync path; never on an event loop's thread, which it would block."""
    if asyncio._get_running_loop() is not None:
        return False
    time.sleep(seconds)
    return True


class SyncDriver:
    """Runs flows with the store's sync methods, in the caller's thread."""

    def __init__(self, state: DriverState) -> None:
        self.state = state
        self._calls = _calls(state.store)
        self._store = state.store  # the hot pair is called on it without a lambda between

    def run(self, flow: Flow[T]) -> T:
        """Run ``flow`` to its end (``resume``'s loop, begun with ``send(None)``: one frame less a call).

        A reserve or a settle (every call's pair) goes to ``_stored`` without ``_do``'s frame."""
        do, stored = self._do, self._stored
        outcome: Any = None
        step: Callable[[Any], Op] = flow.send
        while True:
            try:
                op = step(outcome)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
            try:
                kind = type(op)
                outcome = stored(op, kind) if kind is Reserve or kind is Settle else do(op)
                step = flow.send
            except BudgetStoreUnavailable as exc:
                outcome = exc
                step = flow.throw

    def resume(self, flow: Flow[T], op: Op) -> T:
        """Carry out ``op``, which ``flow`` has just yielded, and run the flow on to its end."""
        do = self._do
        while True:
            try:
                outcome = do(op)
                step: Callable[[Any], Op] = flow.send
            except BudgetStoreUnavailable as exc:
                outcome = exc
                step = flow.throw
            try:
                op = step(outcome)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]

    def _do(self, op: Op) -> Any:
        """Carry out one operation: a reserve or a settle (every call's pair) is tested for first."""
        kind = type(op)
        if kind is Reserve or kind is Settle:
            return self._stored(op, kind)
        state = self.state
        if kind is SpoolAppend:
            return state.append(op.entry)  # type: ignore[union-attr]
        if kind is Replay:
            return state.replay()
        if kind is Define:
            return state.define(lambda: self._store.define_limits(op.defs))  # type: ignore[union-attr]
        if kind is Sleep:
            return _sleep(op.seconds)  # type: ignore[union-attr]
        return self._stored(op, kind)

    def _stored(self, op: Op, kind: type) -> Any:
        """A store operation, through the breaker; a spool left from an outage is replayed after it."""
        state = self.state
        if not state.started:
            state.start()
        breaker, name, store = state.breaker, op.operation, self._store  # type: ignore[union-attr]
        if breaker.tripped:  # (``admit``, without its frame while the store answers)
            breaker.admit(name)
        out: Any
        try:
            if kind is Reserve:
                out = store.reserve(op.request)  # type: ignore[union-attr,arg-type]
            elif kind is Settle:
                out = store.settle(op.request)  # type: ignore[union-attr,arg-type]
            else:
                out = self._calls[kind](op)
        except BudgetStoreUnavailable as exc:
            raise breaker.failed(exc, name) from None
        if breaker.tripped:  # (``answered``, likewise)
            breaker.answered()
        if state.spool is not None:
            state.replay()
        return out


class AsyncDriver:
    """Runs flows with the store's async twins; file I/O goes to a worker thread."""

    def __init__(self, state: DriverState) -> None:
        self.state = state
        store = state.store
        self._calls: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Reserve: lambda op: store.areserve(op.request),
            Settle: lambda op: store.asettle(op.request),
            Release: lambda op: store.arelease(op.lease_id, op.counters),
            Status: lambda op: store.astatus(list(op.refs)),
            Reset: lambda op: store.areset(op.scope),
            ClaimAlert: lambda op: store.aclaim_alert(op.key, op.ttl),
        }

    async def run(self, flow: Flow[T]) -> T:
        try:
            op = flow.send(None)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        return await self.resume(flow, op)

    async def resume(self, flow: Flow[T], op: Op) -> T:
        """Carry out ``op``, which ``flow`` has just yielded, and run the flow on to its end."""
        while True:
            try:
                outcome: object = await self._do(op)
            except BudgetStoreUnavailable as exc:
                outcome = exc
            try:  # a store fault is thrown into the flow, anything else sent
                op = (
                    flow.throw(outcome) if isinstance(outcome, BudgetStoreUnavailable) else flow.send(outcome)
                )
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]

    async def _do(self, op: Op) -> Any:
        state = self.state
        kind = type(op)
        if type(op) is SpoolAppend:
            return await asyncio.to_thread(state.append, op.entry)
        if kind is Replay:
            return await self._replay()
        if kind is Define:
            return await self._define(op)  # type: ignore[arg-type]
        if kind is Sleep:
            await asyncio.sleep(op.seconds)  # type: ignore[union-attr]
            return True
        if not state.started:
            await asyncio.to_thread(state.start)
        breaker, name = state.breaker, op.operation  # type: ignore[union-attr]
        breaker.admit(name)
        try:
            out = await self._calls[kind](op)
        except BudgetStoreUnavailable as exc:
            raise breaker.failed(exc, name) from None
        breaker.answered()
        if state.spool is not None:
            await self._replay()
        return out

    async def _define(self, op: Define) -> bool:
        state = self.state
        if state.breaker.is_open():
            return False
        try:
            await state.store.adefine_limits(op.defs)
        except BudgetStoreUnavailable:
            return False
        return True

    async def _replay(self) -> None:
        if self.state.wants_replay():
            await asyncio.to_thread(self.state.replay)  # file I/O and fsync: off the event loop
