"""The engine's layers: flows that do no I/O, and the two drivers that do it all.

The store here is the real ``MemoryStore``, or a ``Store`` of our own that
fails on purpose (the interface is ours; no Redis client is faked). Redis
behaviour is covered against real servers elsewhere.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from budgetguard import BudgetGuard, BudgetStoreUnavailable, Limit, MemoryStore
from budgetguard.engine import ops
from budgetguard.engine.drivers import AsyncDriver, DriverState, SyncDriver
from budgetguard.engine.ops import Flow, Op
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.spool import Spool
from budgetguard.stores.base import ReserveRequest, ReserveResult, SettleOutcome, SettleRequest
from budgetguard.testing import FakeChatModel

REF = CounterRef("global", "lifetime")
SPEC = CounterSpec(REF, Caps(nanos=10**12))


class DownStore(MemoryStore):
    """A store whose every operation fails as a dead network store would; counts the attempts."""

    blocking = True
    timeout = 30.0

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def _fail(self) -> BudgetStoreUnavailable:
        self.attempts += 1
        return BudgetStoreUnavailable("down-store", ConnectionError("refused"))

    def reserve(self, req: ReserveRequest) -> ReserveResult:
        raise self._fail()

    def settle(self, req: SettleRequest) -> SettleOutcome:
        raise self._fail()

    def status(self, refs: Any) -> Any:
        raise self._fail()


def test_flows_yield_typed_operations_and_do_no_io() -> None:
    """A flow is a plain generator: stepping it by hand touches no store and no file."""
    guard = BudgetGuard(limit_usd=1, store=MemoryStore())
    flow = guard.engine.flows.status({})
    assert isinstance(next(flow), ops.Replay), "what waits in the spool is counted before the read"
    op = flow.send(None)
    assert isinstance(op, ops.Status) and op.refs == (REF,)
    with pytest.raises(StopIteration) as stop:
        flow.send([guard.store.status([REF])[0]])
    assert stop.value.value.rows[0].scope == "global"


def test_a_store_fault_is_thrown_into_the_flow() -> None:
    def flow() -> Flow[str]:
        try:
            yield from ops.reserve(ReserveRequest("L", (SPEC,), Amount(1, 1, 1), 60))
        except BudgetStoreUnavailable as exc:
            return f"caught sent={exc.sent}"
        return "no fault"

    driver = SyncDriver(DriverState(DownStore(), None))
    assert driver.run(flow()) == "caught sent=True"
    assert driver.run(flow()) == "caught sent=False", "the breaker answers without sending"


def test_the_breaker_stops_asking_a_failed_store_for_every_operation() -> None:
    store = DownStore()
    guard = BudgetGuard(limit_usd=1, store=store)
    llm = guard.wrap(FakeChatModel())
    with pytest.raises(BudgetStoreUnavailable) as first:
        llm.invoke("hi")
    assert first.value.sent and store.attempts == 1
    for _ in range(3):
        with pytest.raises(BudgetStoreUnavailable) as again:
            llm.invoke("hi")
        assert not again.value.sent
    with pytest.raises(BudgetStoreUnavailable) as status:
        guard.remaining()
    assert not status.value.sent, "remaining() goes through the same driver and breaker"
    assert store.attempts == 1


async def test_the_async_driver_does_spool_io_off_the_event_loop(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    threads: list[int] = []
    append = spool.append

    def spy(entry: dict[str, Any]) -> None:
        threads.append(threading.get_ident())
        append(entry)

    spool.append = spy  # type: ignore[method-assign]

    def flow() -> Flow[None]:
        yield from ops.spool_append({"op": "release", "lease": "L", "counters": [["global", "lifetime"]]})

    await AsyncDriver(DriverState(MemoryStore(), spool)).run(flow())
    assert threads and threads[0] != threading.get_ident()
    assert len(spool.path.read_bytes().splitlines()) == 1


def test_constructors_do_no_io(tmp_path: Path) -> None:
    where = tmp_path / "not-yet"
    guard = BudgetGuard(limit_usd=1, store="redis://127.0.0.1:1/0", spool_dir=where, store_timeout=0.2)
    assert not where.exists(), "the spool directory is made on first use, not by the constructor"
    with pytest.raises(BudgetStoreUnavailable):
        guard.wrap(FakeChatModel()).invoke("hi")  # the first operation prepares the spool
    assert where.exists()


def test_a_spool_left_by_another_process_is_replayed_before_the_first_read(tmp_path: Path) -> None:
    store = MemoryStore()
    earlier = Spool(tmp_path / store.spool_key)  # the guard keeps one spool directory per store
    earlier.append(
        {
            "op": "settle",
            "lease": "L1",
            "counters": [["global", "lifetime"]],
            "actual": [5, 7, 1],
            "estimated": False,
            "overshoot": False,
        }
    )
    guard = BudgetGuard(limit_tokens=100, store=store, spool_dir=tmp_path)
    assert guard.engine.spool is not None and guard.engine.spool.dirty is False
    (tokens,) = guard.remaining().rows
    assert tokens.spent == 7


def test_unknown_operations_are_a_bug_not_a_silent_success() -> None:
    class Bogus:
        pass

    def flow() -> Flow[None]:
        yield Bogus()  # type: ignore[misc]

    with pytest.raises((AttributeError, KeyError)):
        SyncDriver(DriverState(MemoryStore(), None)).run(flow())


def test_async_and_sync_drivers_share_one_breaker() -> None:
    state = DriverState(DownStore(), None)

    def flow() -> Flow[ReserveResult]:
        return (yield from ops.reserve(ReserveRequest("L", (SPEC,), Amount(1, 1, 1), 60)))

    with pytest.raises(BudgetStoreUnavailable):
        SyncDriver(state).run(flow())
    with pytest.raises(BudgetStoreUnavailable) as exc:
        asyncio.run(AsyncDriver(state).run(flow()))
    assert exc.value.sent is False


def _typed(op: Op) -> str:
    return type(op).__name__


def test_every_store_operation_has_a_type() -> None:
    names = {
        _typed(o)
        for o in (
            ops.Reserve(ReserveRequest("L", (SPEC,), Amount(), 1)),
            ops.Settle(SettleRequest("L", (REF,), Amount())),
            ops.Release("L", (REF,)),
            ops.Status((REF,)),
            ops.SpoolAppend({}),
            ops.Replay(),
        )
    }
    assert names == {"Reserve", "Settle", "Release", "Status", "SpoolAppend", "Replay"}
    assert Limit(usd=1).usd_nanos == 10**9
