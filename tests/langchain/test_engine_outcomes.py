"""What the guard does and reports, through the public API only.

These tests pin behaviour that used to pass unnoticed when it was broken:
the fail-fast breaker after a store failure, the ``late`` and ``replay``
outcomes handed to ``on_record``, and one reservation per call when the same
guard is attached to a model and to the chain around it. They use only
``BudgetGuard``, ``Limit``, ``MemoryStore``, ``RedisStore``, ``on_record``,
``remaining()`` and ``FakeChatModel``, so they hold across the engine's
internal restructuring. Redis is always a real redis-server.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from clock import FakeClock
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from redis_servers import RedisServer
from stall_proxy import StallProxy

from budgetguard import (
    BudgetExceeded,
    BudgetGuard,
    BudgetStoreUnavailable,
    CallRecord,
    Limit,
    MemoryStore,
    RedisStore,
    Store,
)
from budgetguard.testing import FakeChatModel

LIMITS = [Limit(usd=100, tokens=10**9, requests=10**6)]


def held(guard: BudgetGuard) -> dict[str, tuple[Decimal | int, Decimal | int]]:
    """quantity -> (spent, reserved) of the guard's global counter, now."""
    return {r.quantity: (r.spent, r.reserved) for r in guard.remaining().rows}


def later_than(t0: float) -> float:
    return time.monotonic() - t0


# ------------------------------------------------------------------ a: the fail-fast breaker


def test_after_a_store_failure_the_guard_refuses_at_once_without_asking_the_store(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    """Once the store failed, calls are refused at once for about one store timeout.

    The refusal says nothing was sent (``sent is False``) and is immediate.
    That the store is not asked is shown by bringing the server back right
    away: inside the window the guard still refuses; after it, calls pass.
    """
    timeout = 3.0  # the window: long enough to restart a redis-server inside it
    guard = BudgetGuard(limits=LIMITS, store=fresh_redis.url, spool_dir=tmp_path, store_timeout=timeout)
    llm = FakeChatModel(input_tokens=50, output_tokens=10, max_tokens=64)
    guarded = guard.wrap(llm)
    guarded.invoke("warm the connection pool")

    fresh_redis.kill()
    with pytest.raises(BudgetStoreUnavailable) as first:
        guarded.invoke("the store is gone")
    t_fault = time.monotonic()
    assert first.value.sent is True, "the failed call did try the store"

    t0 = time.monotonic()
    with pytest.raises(BudgetStoreUnavailable) as fast:
        guarded.invoke("inside the window")
    took = later_than(t0)
    print(f"\n[breaker] refusal inside the window took {took * 1000:.1f} ms")
    assert fast.value.sent is False, (
        "right after a store failure the guard must refuse without contacting the store "
        f"(sent=False); it sent the call and failed with: {fast.value}"
    )
    assert took < 0.1, f"a refusal inside the fail-fast window took {took:.3f}s: the store was asked"

    fresh_redis.start()  # the server is back (empty), but the window is not over
    assert later_than(t_fault) < timeout / 2, "the restart took too long for this test to mean anything"
    with pytest.raises(BudgetStoreUnavailable) as still:
        guarded.invoke("the store is up again, the window is not over")
    assert still.value.sent is False, "inside the window the guard asked the (restarted) store"
    assert llm.calls.count == 1, "no refused call reached the model"

    while later_than(t_fault) < timeout * 1.05:  # past the window: the store is asked again
        time.sleep(0.05)
    guarded.invoke("after the window")
    assert llm.calls.count == 2
    assert held(guard)["requests"] == (1, 0), "the restarted (empty) server holds the one call since"


# ------------------------------------------------------------------ b: late and replay outcomes


def _redis_store(server: RedisServer, clock: FakeClock) -> RedisStore:
    return RedisStore.from_url(
        server.url, prefix=f"outcomes-{os.urandom(4).hex()}:", server_time=False, clock=clock
    )


@pytest.fixture(params=["memory", "redis"])
def store_and_clock(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> Iterator[tuple[Store, FakeClock]]:
    clock = FakeClock(time.time() + 10 * 86400)  # ahead of now: Redis expires keys on its own clock
    if request.param == "memory":
        yield MemoryStore(clock=clock), clock
    else:
        store = _redis_store(redis_server, clock)
        yield store, clock
        store.close()


@pytest.mark.parametrize("usage_reported", [False, True], ids=["usage-missing", "usage-reported"])
def test_a_stream_that_outlives_its_lease_is_recorded_late(
    store_and_clock: tuple[Store, FakeClock], tmp_path: Path, usage_reported: bool
) -> None:
    """The call outlives its lease (lease_ttl=5 s, the clock moves 6 s mid-stream).

    The store charged the lease its worst case at expiry; the late settle
    replaces that charge with the call's cost, and ``on_record`` says "late",
    also when the provider reported no usage (the record is then estimated).
    """
    store, clock = store_and_clock
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=LIMITS, store=store, lease_ttl=5, on_record=records.append, spool_dir=tmp_path)
    llm = FakeChatModel(
        input_tokens=50,
        output_tokens=10,
        max_tokens=64,
        responses=["a reply long enough for several chunks"],
        usage_on_stream=usage_reported,
    )
    chunks = 0
    for _ in guard.wrap(llm).stream("hi"):
        chunks += 1
        if chunks == 1:
            reserved = held(guard)["tokens"][1]
            assert reserved > 0, "the call holds a reservation while it streams"
            clock.advance(6)  # the lease (5 s) runs out while the call still streams
            assert held(guard)["tokens"] == (reserved, 0), "an expired lease is charged its worst case"
    assert chunks > 2
    (rec,) = records
    assert rec.outcome == "late", (
        f"a settle after the lease expired must reach on_record as 'late', got {rec.outcome!r}"
    )
    assert rec.estimated is (not usage_reported)
    spent = held(guard)
    assert spent["tokens"] == (rec.usage.total_tokens, 0), "the late settle replaced the expiry charge"
    assert spent["usd"] == (rec.cost_usd, 0)
    assert spent["requests"] == (1, 0)


def test_a_call_slower_than_its_lease_is_recorded_late_on_real_time(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Real clocks (Redis server time): lease_ttl=0.2 s, the model takes 0.6 s, no usage reported."""
    records: list[CallRecord] = []
    store = RedisStore.from_url(redis_server.url, prefix=f"outcomes-{os.urandom(4).hex()}:")
    try:
        guard = BudgetGuard(
            limits=LIMITS, store=store, lease_ttl=0.2, on_record=records.append, spool_dir=tmp_path
        )
        guard.wrap(FakeChatModel(latency=0.6, usage_on_invoke=False, max_tokens=64)).invoke("hi")
        (rec,) = records
        assert rec.outcome == "late", f"a call that outlived its lease was recorded {rec.outcome!r}"
        assert rec.estimated
        assert held(guard)["usd"] == (rec.cost_usd, 0)
    finally:
        store.close()


def test_a_call_slower_than_its_lease_is_recorded_late_in_memory() -> None:
    """MemoryStore on the real clock: lease_ttl=0.05 s, the model takes 0.3 s, no usage reported."""
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=LIMITS, store=MemoryStore(), lease_ttl=0.05, on_record=records.append)
    guard.wrap(FakeChatModel(latency=0.3, usage_on_invoke=False, max_tokens=64)).invoke("hi")
    (rec,) = records
    assert (rec.outcome, rec.estimated) == ("late", True)
    assert held(guard)["usd"] == (rec.cost_usd, 0)


class RedeliveringMemoryStore(MemoryStore):
    """Delivers every settle twice, as a client that retries after losing the reply does.

    The first delivery is applied; the guard hears the answer to the second.
    """

    def settle(self, req):  # type: ignore[no-untyped-def]
        super().settle(req)
        return super().settle(req)


class RedeliveringRedisStore(RedisStore):
    """The same at-least-once delivery, on a real redis-server."""

    def settle(self, req):  # type: ignore[no-untyped-def]
        super().settle(req)
        return super().settle(req)


@pytest.mark.parametrize("kind", ["memory", "redis"])
@pytest.mark.parametrize("usage_reported", [False, True], ids=["usage-missing", "usage-reported"])
def test_a_settle_the_store_already_applied_is_recorded_replay(
    redis_server: RedisServer, tmp_path: Path, kind: str, usage_reported: bool
) -> None:
    """The store had already applied this settle: ``on_record`` says "replay", never "estimated".

    The record still carries the call's cost, which the store charged once
    (by the delivery it applied), whether or not the provider reported usage.
    """
    store: Store
    if kind == "memory":
        store = RedeliveringMemoryStore()
    else:
        store = RedeliveringRedisStore.from_url(redis_server.url, prefix=f"outcomes-{os.urandom(4).hex()}:")
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=LIMITS, store=store, on_record=records.append, spool_dir=tmp_path)
    llm = FakeChatModel(input_tokens=50, output_tokens=10, max_tokens=64, usage_on_invoke=usage_reported)
    guarded = guard.wrap(llm)
    for i in range(3):
        guarded.invoke(f"call {i}")
    assert [r.outcome for r in records] == ["replay"] * 3, (
        "settles the store had already applied must reach on_record as 'replay', got "
        f"{[r.outcome for r in records]}"
    )
    assert all(r.estimated is (not usage_reported) for r in records)
    # each call was charged once, by the first delivery
    assert held(guard)["requests"] == (3, 0)
    assert held(guard)["usd"] == (sum((r.cost_usd for r in records), Decimal(0)), 0)
    store.close()


@pytest.mark.parametrize("usage_reported", [False, True], ids=["usage-missing", "usage-reported"])
def test_a_settle_whose_reply_was_lost_and_retried_is_recorded_replay(
    fresh_redis: RedisServer, tmp_path: Path, usage_reported: bool
) -> None:
    """Real Redis behind a proxy: the settle is applied, its reply is lost, the store retries.

    store_timeout=3 s: each attempt waits 1 s for its reply. Replies are held
    from the first chunk on; the first settle attempt times out after the
    server applied it, the retry (a new connection) is answered once the
    network heals 1.5 s later, and Redis says it already had that settle.
    """
    proxy = StallProxy(fresh_redis.port).start()
    records: list[CallRecord] = []
    try:
        guard = BudgetGuard(
            limits=LIMITS, store=proxy.url, store_timeout=3.0, on_record=records.append, spool_dir=tmp_path
        )
        llm = FakeChatModel(input_tokens=50, output_tokens=10, max_tokens=64, usage_on_stream=usage_reported)
        guarded = guard.wrap(llm)
        guarded.invoke("warm up: the pool's connections and the store's scripts are loaded")
        (warm,) = records
        stream = iter(guarded.stream("hi"))
        next(stream)
        proxy.stall_replies()
        healer = threading.Timer(1.5, proxy.resume)
        healer.start()
        t0 = time.monotonic()
        try:
            for _ in stream:  # the last chunk ends the call: the settle goes out now
                pass
        finally:
            healer.join()
        took = later_than(t0)
        (_, rec) = records
        print(f"\n[lost reply] settle answered after {took:.2f}s: {rec.outcome}")
        assert rec.outcome == "replay", (
            f"the retried settle was answered 'already applied' by Redis, but on_record got {rec.outcome!r}"
        )
        assert rec.estimated is (not usage_reported)
        assert 1.0 <= took < 3.0, f"the settle took {took:.2f}s: it was not one lost reply and one retry"
        assert held(guard) == {
            "usd": (warm.cost_usd + rec.cost_usd, 0),
            "tokens": (warm.usage.total_tokens + rec.usage.total_tokens, 0),
            "requests": (2, 0),
        }, "each call was charged once"
    finally:
        proxy.close()


# ------------------------------------------------------------------ c: one reservation per call


def _model_and_chain(guard: BudgetGuard, llm: FakeChatModel):  # type: ignore[no-untyped-def]
    """The same guard on the model and on the chain around it."""
    prompt = ChatPromptTemplate.from_messages([("human", "{q}")])
    return guard.wrap(prompt | guard.wrap(llm))


def _profiled(**kw: object) -> FakeChatModel:
    # a model profile: the model's own handler knows its output cap, the chain's does not
    return FakeChatModel(
        input_tokens=5,
        output_tokens=5,
        responses=["one two three four five six"],
        profile={"max_output_tokens": 100},
        **kw,  # type: ignore[arg-type]
    )


def test_same_guard_on_model_and_chain_records_the_reservation_it_holds() -> None:
    """The record's ``reserved_usd`` is what the store really held for the call.

    Both handlers see the call start. Only one may reserve: were the second
    to plan the call again, the store (idempotent by lease id) would keep the
    first reservation while the guard priced and recorded the second.
    """
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=LIMITS, on_record=records.append)
    chain = _model_and_chain(guard, _profiled())
    during: list[dict[str, tuple[Decimal | int, Decimal | int]]] = []
    for _ in chain.stream({"q": "hi"}):
        if not during:
            during.append(held(guard))
    (rec,) = records
    reserved_usd = during[0]["usd"][1]
    assert during[0]["requests"] == (0, 1), "one reservation while the call runs"
    assert rec.reserved_usd == reserved_usd, (
        f"the record says ${rec.reserved_usd} was reserved, but the store held ${reserved_usd}: "
        "the guard planned the call twice and recorded the plan the store never saw"
    )
    assert held(guard)["requests"] == (1, 0)


def test_same_guard_on_model_and_chain_charges_an_abandoned_stream_what_it_reserved() -> None:
    """A stream abandoned after its first chunk is charged the worst case it reserved (README)."""
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=LIMITS, on_record=records.append)
    chain = _model_and_chain(guard, _profiled(usage_on_stream=False))
    stream = iter(chain.stream({"q": "hi"}))
    next(stream)
    reserved = held(guard)
    stream.close()  # the consumer walks away
    (rec,) = records
    assert rec.outcome == "estimated"
    spent = held(guard)
    assert spent["tokens"] == (reserved["tokens"][1], 0), (
        f"the abandoned stream reserved {reserved['tokens'][1]} tokens but was charged "
        f"{spent['tokens'][0]}: its charge came from a plan the store never held"
    )
    assert spent["requests"] == (1, 0)


def test_same_guard_on_model_and_chain_reserves_and_records_once_per_call() -> None:
    """A budget that fits exactly N calls admits N calls through model + chain, one record each."""
    records: list[CallRecord] = []
    n = 4
    guard = BudgetGuard(limits=[Limit(requests=n, tokens=10**6)], on_record=records.append)
    llm = FakeChatModel(input_tokens=5, output_tokens=5, max_tokens=64)
    chain = guard.wrap(RunnableLambda(lambda x: guard.wrap(llm).invoke(x)))
    admitted = 0
    with pytest.raises(BudgetExceeded):
        for i in range(n + 2):
            chain.invoke(f"call {i}")
            admitted += 1
    assert admitted == n, f"a budget of {n} requests admitted {admitted} calls"
    assert llm.calls.count == n
    assert [r.outcome for r in records] == ["settled"] * n + ["refused"]  # the refusal, recorded once
    assert held(guard) == {"tokens": (10 * n, 0), "requests": (n, 0)}
