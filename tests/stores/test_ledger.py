"""Issue 11, the ledger: every change to spent is one record, written in the same atomic step.

On both stores: each settle (and each expiry, refund and reset) appends one
record naming the counters it changed, and summed per counter the records
equal the spent that ``status`` reads, to the nano-dollar. Retention is
bounded (a ring in memory, MAXLEN and an age on Redis). Guards record their
limit definitions once, after their first reserve, and add no round trip
after it.
"""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from clock import FakeClock
from redis_servers import RedisServer

from budgetguard import BudgetGuard, BudgetStoreUnavailable, Limit
from budgetguard.definitions import LimitDef, definitions_of
from budgetguard.ledger import LedgerNote, LedgerRecord, totals
from budgetguard.pricing import Price
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores import MemoryStore
from budgetguard.stores.base import ReserveRequest, SettleRequest, Store
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

PRICES = {"test-model": Price(input_per_mtok=1, output_per_mtok=2)}
ORG = CounterSpec(CounterRef("org:o", "day"), Caps(nanos=10**12))
USER = CounterSpec(CounterRef("org:o/user:u%40x", "lifetime"), Caps(tokens=10**9))
EST = Amount(50_000, 100, 1)


def new_store(kind: str, server: RedisServer | None, clock: FakeClock, **kw: Any) -> Store:
    if server is None:
        return MemoryStore(clock=clock, **kw)
    prefix = f"lg-{uuid.uuid4().hex[:10]}:"
    return RedisStore.from_url(server.url, prefix=prefix, server_time=False, clock=clock, **kw)


@pytest.fixture(params=["memory", "redis"])
def kind(request: pytest.FixtureRequest) -> tuple[str, RedisServer | None]:
    server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    return request.param, server


def assert_exact(store: Store, records: list[LedgerRecord]) -> None:
    """Summed per counter, the charges equal what status reads (scopes() lists every counter)."""
    sums = totals(records)
    pairs = store.scopes()
    assert pairs, "no counters"
    states = store.status([CounterRef(s, p) for s, p in pairs])
    for (scope, per), st in zip(pairs, states, strict=True):
        assert sums.get((scope, per, st.window_start), Amount()) == st.spent, (scope, per)


def test_every_change_to_spent_is_one_record_and_the_sums_are_exact(kind: Any) -> None:
    name, server = kind
    clock = FakeClock(time.time())
    store = new_store(name, server, clock)
    refs = (ORG.ref, USER.ref)
    specs = (ORG, USER)
    note = LedgerNote("gpt-x", "openai", (("input", 40), ("output", 60)), "run-1")

    def reserve(lid: str) -> None:
        assert store.reserve(ReserveRequest(lid, specs, EST, ttl=5)).admitted

    reserve("a")
    assert store.settle(SettleRequest("a", refs, Amount(30_001, 70, 1), note=note)) == "settled"
    assert store.settle(SettleRequest("a", refs, Amount(30_001, 70, 1))) == "replay"  # no record
    reserve("b")  # used more than reserved: recorded in full, marked estimated
    assert store.settle(SettleRequest("b", refs, Amount(90_000, 150, 1), estimated=True)) == "settled"
    reserve("c")
    reserve("d")
    clock.advance(6)  # c and d run out: charged their estimate by the next operation's sweep
    store.status(list(refs))
    assert store.settle(SettleRequest("c", refs, Amount(7, 3, 1))) == "late"  # replaces the estimate
    assert store.release("d", refs)  # expired and released: refunded
    assert store.settle(SettleRequest("e", refs, Amount(11, 2, 1))) == "unreserved"

    records = store.ledger_records()
    outcomes = [r.outcome for r in records]
    assert sorted(outcomes) == sorted(
        ["settled", "settled", "expired", "expired", "late", "refunded", "unreserved"]
    )
    assert_exact(store, records)

    first = next(r for r in records if r.lease_id == "a")
    assert first.note == note and first.cost == Amount(30_001, 70, 1) and not first.estimated
    assert {(c.scope, c.per) for c in first.charges} == {("org:o", "day"), ("org:o/user:u%40x", "lifetime")}
    assert all(c.amount == Amount(30_001, 70, 1) for c in first.charges)
    late = next(r for r in records if r.outcome == "late")
    assert all(c.amount == Amount(7, 3, 1) - EST for c in late.charges)  # only the difference
    assert next(r for r in records if r.lease_id == "b").estimated

    assert store.reset("org:o/user:u%40x") == 1  # a reset takes back what the counter had spent
    records = store.ledger_records()
    assert records[-1].outcome == "reset"
    assert_exact(store, records)
    assert sum((r.cost.nanos for r in records if r.outcome == "settled"), 0) == 120_001


def test_records_of_guarded_calls_carry_model_tokens_run_and_lease(kind: Any) -> None:
    name, server = kind
    store = new_store(name, server, FakeClock(time.time()))
    guard = BudgetGuard(
        limits=[
            Limit(usd=Decimal(1), per="day", scope="org:{org}"),
            Limit(tokens=10**6, scope="user:{user}"),
        ],
        store=store,
        prices=PRICES,
    )
    model = guard.wrap(
        FakeChatModel(model_name="test-model", input_tokens=10, output_tokens=40, max_tokens=50)
    )
    for i in range(4):
        model.invoke("hi", config={"metadata": {"org": "initech", "user": f"u{i % 2}@x.y"}})
    records = store.ledger_records()
    assert [r.outcome for r in records] == ["settled"] * 4
    rec = records[0]
    assert rec.note.model == "test-model" and dict(rec.note.tokens) == {"input": 10, "output": 40}
    assert rec.note.run_id and rec.lease_id.startswith(guard.engine.tag)
    assert rec.cost.nanos == 10 * 1000 + 40 * 2000
    user_key = next(c.scope for c in rec.charges if c.scope.startswith("user:"))
    assert "%40" in user_key and rec.note.label(user_key) == "user:u0@x.y"  # as written, in the record
    assert rec.note.label("org:initech") is None  # a key that needs no decoding is not repeated
    assert_exact(store, records)  # two roots (org:initech, user:...) on Redis: every stream is read
    spent = guard.remaining(org="initech", user="u0@x.y").rows[0].spent
    assert sum((r.cost.nanos for r in records), 0) == int(Decimal(spent) * 10**9)


def test_since_and_until_select_by_the_records_time(kind: Any) -> None:
    name, server = kind
    clock = FakeClock(int(time.time()))  # whole seconds: record times are in microseconds
    store = new_store(name, server, clock)
    for i in range(3):
        store.settle(SettleRequest(f"l{i}", (ORG.ref,), Amount(i + 1, 1, 1)))
        clock.advance(10)
    t0 = clock.t - 30
    assert [r.lease_id for r in store.ledger_records(t0 + 10)] == ["l1", "l2"]
    assert [r.lease_id for r in store.ledger_records(t0, t0 + 10)] == ["l0"]
    assert store.ledger_records(clock.t + 1) == []


def test_the_memory_ledger_is_a_bounded_ring_and_can_be_off() -> None:
    store = MemoryStore(ledger_cap=3)
    for i in range(5):
        store.settle(SettleRequest(f"l{i}", (ORG.ref,), Amount(1, 1, 1)))
    assert [r.lease_id for r in store.ledger_records()] == ["l2", "l3", "l4"]
    off = MemoryStore(ledger_cap=0)
    off.settle(SettleRequest("x", (ORG.ref,), Amount(1, 1, 1)))
    assert off.ledger_records() == [] and off.status([ORG.ref])[0].spent == Amount(1, 1, 1)
    with pytest.raises(ValueError, match="ledger_cap"):
        MemoryStore(ledger_cap=-1)


def test_the_redis_ledger_is_trimmed_to_its_length_and_age(redis_server: RedisServer) -> None:
    prefix = f"lg-{uuid.uuid4().hex[:10]}:"
    store = RedisStore.from_url(redis_server.url + f"?prefix={prefix}&ledger_maxlen=10&ledger_age=1")
    assert (store.prefix, store.ledger_maxlen, store.ledger_age) == (prefix, 10, 1.0)
    client = redis_server.client()
    key = f"{prefix}{{org:o}}:ledger"
    for i in range(300):
        store.settle(SettleRequest(f"l{i}", (ORG.ref,), Amount(1, 1, 1)))
    assert 10 <= client.xlen(key) < 300  # MAXLEN ~: trimmed by whole stream nodes
    assert 0 < client.pttl(key) <= 1000  # an idle root's stream goes after ledger_age
    time.sleep(1.1)
    store.settle(SettleRequest("last", (ORG.ref,), Amount(1, 1, 1)))
    assert [r.lease_id for r in store.ledger_records()] == ["last"]  # older than the age: trimmed
    off = RedisStore.from_url(redis_server.url, prefix=f"lg-{uuid.uuid4().hex[:10]}:", ledger_maxlen=0)
    off.settle(SettleRequest("x", (ORG.ref,), Amount(1, 1, 1)))
    assert off.ledger_records() == [] and off.status([ORG.ref])[0].spent == Amount(1, 1, 1)
    for bad in ({"ledger_maxlen": -1}, {"ledger_age": 0}, {"ledger_maxlen": True}):
        with pytest.raises(ValueError, match="ledger_"):
            RedisStore.from_url(redis_server.url, **bad)
    with pytest.raises(ValueError, match="ledger_maxlen in the URL"):
        RedisStore.from_url(redis_server.url + "?ledger_maxlen=lots")


class CountingStore(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.defines: list[tuple[LimitDef, ...]] = []

    def define_limits(self, defs: Any) -> None:
        self.defines.append(tuple(defs))
        super().define_limits(defs)


def test_a_guard_records_its_limit_definitions_once_after_its_first_reserve() -> None:
    store = CountingStore()
    limits = [Limit(usd=Decimal("2.5"), tokens=900, per="day", scope="org:{org}"), Limit(requests=5)]
    guard = BudgetGuard(limits=limits, store=store, prices=PRICES)
    model = guard.wrap(FakeChatModel(model_name="test-model", output_tokens=5))
    assert store.defines == []  # constructors do no I/O
    for _ in range(3):
        model.invoke("hi", config={"metadata": {"org": "initech"}})
    assert len(store.defines) == 1
    assert set(store.limit_definitions()) == {
        LimitDef("org:{org}", "day", "usd", 2_500_000_000),
        LimitDef("org:{org}", "day", "tokens", 900),
        LimitDef("global", "lifetime", "requests", 5),
    }
    assert set(definitions_of(limits)) == set(store.limit_definitions())


class FlakyDefines(CountingStore):
    """Its first definitions write fails as an outage would."""

    def define_limits(self, defs: Any) -> None:
        if not self.defines:
            self.defines.append(())
            raise BudgetStoreUnavailable("flaky", None, problem="dropped the write")
        super().define_limits(defs)


def test_a_failed_definitions_write_never_breaks_a_call_and_is_tried_again() -> None:
    store = FlakyDefines()
    guard = BudgetGuard(limits=[Limit(usd=1)], store=store, prices=PRICES)
    model = guard.wrap(FakeChatModel(model_name="test-model", output_tokens=5))
    model.invoke("hi")  # reserved, definitions refused, settled: the call is unaffected
    assert store.limit_definitions() == [] and len(store.ledger_records()) == 1
    assert not guard.engine._sync.state.breaker.is_open()  # nor is the breaker tripped
    model.invoke("hi")
    assert store.limit_definitions() == [LimitDef("global", "lifetime", "usd", 10**9)]
    model.invoke("hi")
    assert len(store.defines) == 2 and len(store.ledger_records()) == 3


def test_on_redis_definitions_cost_one_round_trip_once(redis_server: RedisServer) -> None:
    prefix = f"lg-{uuid.uuid4().hex[:10]}:"
    client = redis_server.client()
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    limits = [Limit(usd=1, per="month", scope="org:{org}", expire_after=3600)]
    guard = BudgetGuard(limits=limits, store=store, prices=PRICES)
    model = guard.wrap(FakeChatModel(model_name="test-model", output_tokens=5))
    model.invoke("hi", config={"metadata": {"org": "a"}})
    assert store.limit_definitions() == [LimitDef("org:{org}", "month", "usd", 10**9, 3600.0)]

    def scripts() -> int:
        stats = client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    before = scripts()
    for _ in range(5):
        model.invoke("hi", config={"metadata": {"org": "a"}})
    assert scripts() - before == 10  # reserve and settle per call: nothing more after the first
    # a second guard with the same limits writes the same fields
    BudgetGuard(limits=limits, store=store, prices=PRICES).wrap(
        FakeChatModel(model_name="test-model")
    ).invoke("hi", config={"metadata": {"org": "b"}})
    assert client.hlen(f"{prefix}limits") == 1


async def test_the_async_path_defines_once_and_writes_the_ledger(kind: Any) -> None:
    name, server = kind
    store = new_store(name, server, FakeClock(time.time()))
    guard = BudgetGuard(limits=[Limit(usd=1, per="hour", scope="team:{team}")], store=store, prices=PRICES)
    model = guard.wrap(FakeChatModel(model_name="test-model", output_tokens=7))
    for _ in range(3):
        await model.ainvoke("hi", config={"metadata": {"team": "t 1"}})
    assert store.limit_definitions() == [LimitDef("team:{team}", "hour", "usd", 10**9)]
    records = store.ledger_records()
    assert [r.outcome for r in records] == ["settled"] * 3
    assert_exact(store, records)
