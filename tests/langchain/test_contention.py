"""Contention waits (``contention_wait``): a call refused only by other calls' reservations in flight
waits for them to settle, bounded, and is admitted; one that spent money blocks is refused at once.

The budgets here: gpt-4o ($2.50 / $10 per million tokens) with ``max_tokens=1000``
reserves about $0.01 a call, and settles at about $0.001 (100 output tokens).
A $0.015 budget holds one such reservation but not two, while the actual costs
of a dozen fit.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from redis_servers import RedisServer

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, ConfigError
from budgetguard.engine.contention import DEFAULT_CONTENTION_WAIT, Waiter, fits_once_settled
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec, CounterState
from budgetguard.stores import Store
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel


def _gpt4o(**kw: Any) -> FakeChatModel:
    return FakeChatModel(model_name="gpt-4o", **{"max_tokens": 1000, "output_tokens": 100, **kw})


def _spent_and_reserved(guard: BudgetGuard) -> tuple[Decimal, Decimal]:
    row = next(r for r in guard.remaining().rows if r.quantity == "usd")
    return Decimal(row.spent), Decimal(row.reserved)


@pytest.fixture()
def redis_store(redis_server: RedisServer) -> Iterator[RedisStore]:
    store = RedisStore.from_url(redis_server.url, prefix=f"contention-{os.urandom(4).hex()}:")
    yield store
    store.close()


# ------------------------------------------------------------------ the decision


def test_the_wait_condition_is_exact() -> None:
    spec = CounterSpec(CounterRef("global", "lifetime"), Caps(nanos=100))
    st = CounterState(spent=Amount(40, 0, 0), reserved=Amount(50, 0, 0))
    # 40 spent + 60 requested fits once the 50 in flight settle at zero; 61 never does
    assert fits_once_settled([spec], [st], [Amount()], Amount(60, 0, 0))
    assert not fits_once_settled([spec], [st], [Amount()], Amount(61, 0, 0))
    # what the caller itself holds stays while it waits: 40 + 10 own + 60 > 100
    assert not fits_once_settled([spec], [st], [Amount(10, 0, 0)], Amount(60, 0, 0))
    assert fits_once_settled([spec], [st], [Amount(10, 0, 0)], Amount(50, 0, 0))
    # every counter must fit, not only the one that refused
    tight = CounterSpec(CounterRef("user:a", "lifetime"), Caps(requests=3))
    full = CounterState(spent=Amount(0, 0, 3))
    assert not fits_once_settled([spec, tight], [st, full], [Amount(), Amount()], Amount(10, 0, 1))
    # soft caps (degrade_at) are not waited for
    soft = CounterSpec(CounterRef("global", "lifetime"), Caps(nanos=100), Caps(nanos=10))
    assert fits_once_settled([soft], [st], [Amount()], Amount(60, 0, 0))


def test_the_pauses_back_off_and_end_at_the_deadline() -> None:
    waiter = Waiter(0.3)
    delays = []
    while (d := waiter.next_delay()) is not None:
        delays.append(d)
        time.sleep(d)
    assert delays and sum(delays) <= 0.3 + 0.05
    assert delays[0] <= 0.01 and max(delays) <= 0.25
    assert delays[3] > delays[0]  # exponential: 10, 20, 40, 80 ms (jittered down to half)


@pytest.mark.parametrize("bad", [-1, True, "1", float("nan"), float("inf"), 3601])
def test_contention_wait_must_be_a_sane_number_of_seconds(bad: Any) -> None:
    with pytest.raises(ConfigError, match="contention_wait must be a number of seconds"):
        BudgetGuard(limit_usd=1, contention_wait=bad)


def test_the_default_wait_is_bounded_and_on() -> None:
    assert BudgetGuard(limit_usd=1).engine.flows.contention_wait == DEFAULT_CONTENTION_WAIT == 10.0


# ------------------------------------------------------------------ sync callers, memory and Redis


def _held_elsewhere(llm: Any, hold: float) -> threading.Thread:
    """A stream opened in another thread, holding its reservation for ``hold`` seconds."""
    opened = threading.Event()

    def run() -> None:
        stream = llm.stream("hold")
        next(stream)
        opened.set()
        time.sleep(hold)
        for _ in stream:
            pass

    t = threading.Thread(target=run)
    t.start()
    assert opened.wait(5)
    return t


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_caller_refused_by_a_reservation_in_flight_is_admitted_once_it_settles(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store: Store | None = request.getfixturevalue("redis_store") if backend == "redis" else None
    records: list[CallRecord] = []
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015", store=store, on_record=records.append)
    llm = guard.wrap(_gpt4o())
    holder = _held_elsewhere(llm, 0.3)
    started = time.monotonic()
    llm.invoke("q")  # refused while the stream holds $0.01, admitted once it settles
    waited = time.monotonic() - started
    holder.join()
    assert waited >= 0.2, "it was admitted only after the stream settled"
    assert len(records) == 2
    spent, reserved = _spent_and_reserved(guard)
    assert reserved == 0 and spent == sum(r.cost_usd for r in records) <= Decimal("0.015")


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_sixteen_one_shot_callers_all_fit_and_never_overspend(
    backend: str, request: pytest.FixtureRequest
) -> None:
    """The race of bench/peers.py: 16 calls fit by their actual cost, not by their reservations."""
    store: Store | None = request.getfixturevalue("redis_store") if backend == "redis" else None
    records: list[CallRecord] = []
    call = _gpt4o(latency=0.02)
    # two $0.01 reservations fit at a time; the 16th call fits after 15 actual costs of $0.001
    budget = Decimal("0.026")
    guard = BudgetGuard(fit_max_tokens=False, limit_usd=budget, store=store, on_record=records.append)
    llm = guard.wrap(call)
    barrier = threading.Barrier(16)
    refused: list[BudgetExceeded] = []

    def one() -> None:
        barrier.wait()
        try:
            llm.invoke("q")
        except BudgetExceeded as exc:
            refused.append(exc)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not refused, [e.reason() for e in refused]
    assert call.calls.count == len(records) == 16
    spent, reserved = _spent_and_reserved(guard)
    assert reserved == 0 and spent == sum(r.cost_usd for r in records) <= budget


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_caller_blocked_by_spent_money_is_refused_at_once(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store: Store | None = request.getfixturevalue("redis_store") if backend == "redis" else None
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015", store=store, contention_wait=60)
    llm = guard.wrap(_gpt4o(output_tokens=1000))
    llm.invoke("q")  # spends about $0.01: the next $0.01 can never fit, whatever settles
    holder = _held_elsewhere(guard.wrap(_gpt4o(max_tokens=10, output_tokens=10)), 1.0)
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("q")
    elapsed = time.monotonic() - started
    holder.join()
    assert elapsed < 0.5, f"refused after {elapsed:.2f} s: it waited for nothing"  # not the 60 s bound
    assert info.value.retry_after is None  # a lifetime limit: waiting cannot help


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_the_wait_is_bounded(backend: str, request: pytest.FixtureRequest) -> None:
    store: Store | None = request.getfixturevalue("redis_store") if backend == "redis" else None
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015", store=store, contention_wait=0.3)
    llm = guard.wrap(_gpt4o())
    holder = _held_elsewhere(llm, 1.5)  # holds its reservation past the wait
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("q")
    elapsed = time.monotonic() - started
    holder.join()
    assert 0.3 <= elapsed < 1.2, elapsed
    assert info.value.retry_after == 1.0  # still contention: retry shortly


def test_no_wait_when_contention_wait_is_zero() -> None:
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015", contention_wait=0)
    llm = guard.wrap(_gpt4o())
    holder = _held_elsewhere(llm, 0.5)
    started = time.monotonic()
    with pytest.raises(BudgetExceeded):
        llm.invoke("q")
    assert time.monotonic() - started < 0.3
    holder.join()


def test_a_caller_does_not_wait_for_its_own_reservations() -> None:
    """A stream this very thread holds open cannot settle while it waits: refused at once."""
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015", contention_wait=60)
    llm = guard.wrap(_gpt4o())
    stream = llm.stream("q")
    next(stream)
    started = time.monotonic()
    with pytest.raises(BudgetExceeded) as info:
        llm.invoke("q")
    assert time.monotonic() - started < 0.5
    assert info.value.retry_after == 1.0
    for _ in stream:
        pass


def test_fitting_still_applies_when_the_wait_ends_without_room() -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limit_usd="0.015", contention_wait=0.2, min_output_tokens=100, on_record=records.append
    )
    llm = guard.wrap(_gpt4o())
    holder = _held_elsewhere(llm, 1.0)  # $0.01 held past the wait
    started = time.monotonic()
    llm.invoke("q")  # the full $0.01 waited for in vain; about $0.005 of output cap fits now
    elapsed = time.monotonic() - started
    holder.join()
    fitted = [r for r in records if r.output_cap_fitted is not None]
    assert elapsed >= 0.2, "it waited for its full cap first"
    assert len(fitted) == 1 and 100 <= fitted[0].output_cap_fitted < 1000  # type: ignore[operator]
    spent, reserved = _spent_and_reserved(guard)
    assert reserved == 0 and spent <= Decimal("0.015")


def test_a_fallback_serves_at_once_instead_of_waiting() -> None:
    """With fallback=, the primary does not wait: the next candidate is tried; the last one waits."""
    mini = FakeChatModel(model_name="gpt-4o-mini", max_tokens=1000, output_tokens=100)
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015", fallback=mini, contention_wait=60)
    primary = _gpt4o()
    llm = guard.wrap(primary)
    holder = _held_elsewhere(guard.wrap(_gpt4o()), 0.5)
    started = time.monotonic()
    llm.invoke("q")
    assert time.monotonic() - started < 0.4
    holder.join()
    assert primary.calls.count == 0 and mini.calls.count == 1


# ------------------------------------------------------------------ asyncio: memory and Redis


async def _hold_async(llm: Any, hold: float, opened: asyncio.Event) -> None:
    stream = llm.astream("hold")
    await stream.__anext__()
    opened.set()
    await asyncio.sleep(hold)
    async for _ in stream:
        pass


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_async_callers_wait_without_blocking_the_event_loop(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store: Store | None = request.getfixturevalue("redis_store") if backend == "redis" else None
    records: list[CallRecord] = []
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015", store=store, on_record=records.append)
    llm = guard.wrap(_gpt4o())

    async def main() -> int:
        opened = asyncio.Event()
        holder = asyncio.create_task(_hold_async(llm, 0.3, opened))
        await opened.wait()
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        await llm.ainvoke("q")  # waits for the stream in the other task to settle
        ticker.cancel()
        await holder
        return ticks

    ticks = asyncio.run(main())
    assert ticks >= 10, "the loop kept running while the call waited"
    assert len(records) == 2
    spent, reserved = _spent_and_reserved(guard)
    assert reserved == 0 and spent <= Decimal("0.015")


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_call_cancelled_while_it_waits_leaves_nothing_reserved(
    backend: str, request: pytest.FixtureRequest
) -> None:
    store: Store | None = request.getfixturevalue("redis_store") if backend == "redis" else None
    guard = BudgetGuard(fit_max_tokens=False, limit_usd="0.015", store=store, contention_wait=60)
    waiter_model = _gpt4o()
    llm = guard.wrap(waiter_model)
    held = guard.wrap(_gpt4o())

    async def main() -> tuple[Decimal, Decimal]:
        opened = asyncio.Event()
        holder = asyncio.create_task(_hold_async(held, 0.5, opened))
        await opened.wait()
        _, holding = _spent_and_reserved(guard)
        call = asyncio.create_task(llm.ainvoke("q"))
        await asyncio.sleep(0.15)  # it is waiting now
        assert not call.done()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await guard.engine.drain()
        _, during = _spent_and_reserved(guard)
        await holder
        return holding, during

    holding, during = asyncio.run(main())
    assert during == holding, "only the holder's reservation is left"
    spent, reserved = _spent_and_reserved(guard)
    assert reserved == 0 and waiter_model.calls.count == 0
    assert spent > 0  # the holder's actual cost
