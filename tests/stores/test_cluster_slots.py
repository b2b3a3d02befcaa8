"""Reservations across Redis Cluster slots, on a real Cluster with replicas.

A limit set whose scopes have different roots (``global`` and ``user:{user_id}``,
user and org) is reserved slot by slot, in slot order, with compensation
(``budgetguard/stores/redis/slots.py``). These tests check that it works through
the guard (sync and asyncio), that a refusal in one slot leaves nothing held in
the others, that racing callers never overspend any counter, and that a primary
killed mid-reservation leaves nothing locked and loses nothing.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from redis_servers import Cluster

from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, Limit, Price
from budgetguard.errors import BudgetStoreUnavailable
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores.base import ReserveRequest, SettleRequest
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

pytestmark = pytest.mark.redis

PRICES = {"test-model": Price(input_per_mtok=1, output_per_mtok=2)}
ACT_INPUT, ACT_OUTPUT = 10, 40
ACT_NANOS = ACT_INPUT * 1_000 + ACT_OUTPUT * 2_000  # 90,000 nano-dollars a call
NANOS = Decimal(1_000_000_000)


def fake() -> FakeChatModel:
    return FakeChatModel(
        model_name="test-model", input_tokens=ACT_INPUT, output_tokens=ACT_OUTPUT, max_tokens=50
    )


def new_prefix() -> str:
    return f"cs-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(autouse=True)
def _private_spool(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUDGETGUARD_SPOOL_DIR", str(tmp_path / "spool"))


@pytest.fixture()
def store(redis_cluster: Cluster) -> Iterator[RedisStore]:
    s = RedisStore.from_url(redis_cluster.url, prefix=new_prefix())
    yield s
    s.close()


def spans_slots(store: RedisStore, *scopes: str) -> bool:
    plan = store._plan(list(scopes))
    return plan is not None and len(plan) == len({s.split("/")[0] for s in scopes})


async def test_a_global_limit_with_a_per_user_limit_works_sync_and_async(store: RedisStore) -> None:
    """The limit set issue 12 names: tokens per minute for everyone, USD per user."""
    records: list[CallRecord] = []
    limits = [Limit(tokens=100_000, per="minute"), Limit(usd=1, scope="user:{user_id}")]
    guard = BudgetGuard(limits=limits, store=store, prices=PRICES, on_record=records.append)
    model = guard.wrap(fake())
    users = [f"u{i}" for i in range(4)]
    assert spans_slots(store, "global", *(f"user:{u}" for u in users))
    for u in users:
        cfg: Any = {"metadata": {"user_id": u}}
        model.invoke("hi", config=cfg)
        await model.ainvoke("hi", config=cfg)
        assert [c async for c in model.astream("hi", config=cfg)]
        status = guard.remaining(user_id=u)
        assert status == await guard.aremaining(user_id=u)
        by = {(r.scope, r.quantity): r for r in status.rows}
        assert by[(f"user:{u}", "usd")].spent == 3 * ACT_NANOS / NANOS
        assert all(r.reserved == 0 for r in status.rows)
    (tokens,) = [r for r in guard.remaining(user_id="u0").rows if r.quantity == "tokens"]
    assert tokens.scope == "global" and tokens.spent == 3 * len(users) * (ACT_INPUT + ACT_OUTPUT)
    assert len(records) == 3 * len(users) and {r.outcome for r in records} == {"settled"}
    assert ("global", "minute") in store.scopes() and ("user:u0", "lifetime") in store.scopes()


def test_user_and_org_limits_work_and_a_refusal_in_one_slot_holds_nothing_in_another(
    store: RedisStore,
) -> None:
    limits = [
        Limit(usd=1, scope="org:{org_id}"),
        Limit(requests=2, scope="user:{user_id}"),
    ]
    guard = BudgetGuard(limits=limits, store=store, prices=PRICES)
    model = guard.wrap(fake())
    cfg: Any = {"metadata": {"org_id": "acme", "user_id": "ann"}}
    assert spans_slots(store, "org:acme", "user:ann")
    model.invoke("hi", config=cfg)
    model.invoke("hi", config=cfg)
    with pytest.raises(BudgetExceeded) as info:
        model.invoke("hi", config=cfg)
    assert "user:ann" in str(info.value)
    by = {(r.scope, r.quantity): r for r in guard.remaining(org_id="acme", user_id="ann").rows}
    assert by[("org:acme", "usd")].spent == 2 * ACT_NANOS / NANOS
    assert by[("org:acme", "usd")].reserved == 0  # the refused call's org part was undone
    assert by[("user:ann", "requests")].spent == 2
    # another user of the same org still fits
    model.invoke("hi", config={"metadata": {"org_id": "acme", "user_id": "bob"}})


def test_a_refused_reservation_may_be_reserved_again_smaller_under_the_same_lease(store: RedisStore) -> None:
    """The engine's fit path reserves again under the same id: the undo leaves no tombstone."""
    g, u = CounterRef("global", "day"), CounterRef("user:z", "lifetime")
    specs = (CounterSpec(g, Caps(tokens=1_000)), CounterSpec(u, Caps(tokens=100)))
    assert spans_slots(store, "global", "user:z")
    big = store.reserve(ReserveRequest("L1", specs, Amount(0, 150, 1), 60))
    assert not big.admitted and big.violation is not None
    assert (big.violation.index, big.violation.quantity) == (1, "tokens")
    assert [s.reserved for s in big.states] == [Amount(), Amount()]  # explained on both counters
    assert [s.reserved for s in store.status([g, u])] == [Amount(), Amount()]
    small = store.reserve(ReserveRequest("L1", specs, Amount(0, 80, 1), 60))
    assert small.admitted
    assert [s.reserved for s in store.status([g, u])] == [Amount(0, 80, 1)] * 2
    assert store.settle(SettleRequest("L1", (g, u), Amount(5, 70, 1))) == "settled"
    assert store.settle(SettleRequest("L1", (g, u), Amount(5, 70, 1))) == "replay"
    assert [s.spent for s in store.status([g, u])] == [Amount(5, 70, 1)] * 2


def test_racing_threads_across_slots_never_overspend(store: RedisStore) -> None:
    """Eight threads, six users in different slots, a global cap and per-user caps: every cap holds
    exactly, and the totals are the sum of what was admitted."""
    g_cap, u_cap = 3_000, 700
    users = [f"user:r{i}" for i in range(6)]
    assert spans_slots(store, "global", *users)
    admitted: list[tuple[str, int]] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        for n in range(40):
            user = rnd.choice(users)
            refs = (CounterRef("global", "day"), CounterRef(user, "lifetime"))
            specs = (CounterSpec(refs[0], Caps(tokens=g_cap)), CounterSpec(refs[1], Caps(tokens=u_cap)))
            want = rnd.randint(20, 120)
            lease = f"r{seed}-{n}"
            if store.reserve(ReserveRequest(lease, specs, Amount(0, want, 1), 60)).admitted:
                # at most what was reserved, as with a provider that honours its cap (a larger actual
                # is recorded in full, above the cap: the overshoot the guard reports, not overspend)
                got = rnd.randint(want // 4, want)
                assert store.settle(SettleRequest(lease, refs, Amount(0, got, 1))) == "settled"
                with lock:
                    admitted.append((user, got))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refs = [CounterRef("global", "day"), *(CounterRef(u, "lifetime") for u in users)]
    states = store.status(refs)
    assert all(s.reserved == Amount() for s in states)
    assert states[0].spent.tokens == sum(n for _, n in admitted) <= g_cap
    for u, st in zip(users, states[1:], strict=True):
        assert st.spent.tokens == sum(n for who, n in admitted if who == u) <= u_cap
    refused = 8 * 40 - len(admitted)
    assert refused > 0, "the caps never bit: the race proved nothing"
    print(f"\n{len(admitted)} admitted, {refused} refused; global {states[0].spent.tokens}/{g_cap}")


async def test_racing_asyncio_callers_through_the_guard_never_overspend(store: RedisStore) -> None:
    cap_requests = 20
    limits = [Limit(requests=cap_requests, per="hour"), Limit(usd=Decimal("0.0005"), scope="user:{user_id}")]
    guard = BudgetGuard(limits=limits, store=store, prices=PRICES)
    model = guard.wrap(fake())
    users = [f"a{i}" for i in range(5)]

    async def one(i: int) -> bool:
        try:
            await model.ainvoke("hi", config={"metadata": {"user_id": users[i % len(users)]}})
        except BudgetExceeded:
            return False
        return True

    ok = await asyncio.gather(*(one(i) for i in range(60)))
    status = {u: guard.remaining(user_id=u) for u in users}
    (req,) = [r for r in status[users[0]].rows if r.quantity == "requests"]
    assert req.spent == sum(ok) <= cap_requests
    for u in users:
        (usd,) = [r for r in status[u].rows if r.quantity == "usd"]
        assert usd.spent <= Decimal("0.0005") and usd.reserved == 0
    assert sum(ok) < 60


def test_a_primary_killed_mid_reservation_locks_nothing_and_loses_nothing(tmp_path: Any) -> None:
    """The primary of one slot dies after another slot's part was taken: the reserve fails, the
    part taken is undone; after the replica takes over, a settle of a lease reserved before the
    kill reaches every slot, and a lease never settled is charged by each slot when it runs out."""
    cluster = Cluster(3, replicas=1, node_timeout=1000).start()
    try:
        store = RedisStore.from_url(cluster.url, prefix=new_prefix(), timeout=0.5)
        g, u = CounterRef("global", "day"), CounterRef("user:k", "lifetime")
        specs = (CounterSpec(g, Caps(tokens=10_000)), CounterSpec(u, Caps(tokens=10_000)))
        plan = store._plan(["global", "user:k"])
        assert plan is not None and len(plan) == 2
        later = plan[1].bases[0]
        early = store.status([g, u])  # warm: both slots answer
        assert all(s.reserved == Amount() for s in early)
        # reserved before the kill: one to settle afterwards, one never settled (short lease)
        assert store.reserve(ReserveRequest("settle-me", specs, Amount(0, 100, 1), 60)).admitted
        assert store.reserve(ReserveRequest("forgotten", specs, Amount(0, 30, 1), 3)).admitted
        cluster.primary_for(later).kill()
        with pytest.raises(BudgetStoreUnavailable):
            store.reserve(ReserveRequest("mid", specs, Amount(0, 50, 1), 60))
        first = plan[0].positions[0]
        still = store._drive(store._slotted.status([g, u], plan[0]), "status")
        assert still[0].reserved == Amount(0, 130, 2), f"slot {plan[0].slot} kept the failed part"
        cluster.wait_ok()  # the replica was promoted
        deadline = time.monotonic() + 20
        failed = False  # an attempt that raised may still have landed (its reply lost): then 'replay'
        while True:
            try:
                outcome = store.settle(SettleRequest("settle-me", (g, u), Amount(0, 70, 1)))
                break
            except BudgetStoreUnavailable:
                failed = True
                assert time.monotonic() < deadline, "the cluster never served the slot again"
                time.sleep(0.2)
        # 'unreserved': the replica had not got the lease; the totals below prove it counted once
        assert outcome in ("settled", "unreserved", *(("replay",) if failed else ()))
        time.sleep(3.2)  # 'forgotten' runs out in every slot, by itself
        states = store.status([g, u])
        assert all(s.reserved == Amount() for s in states), states
        for s in states:  # settled 70, and the forgotten lease charged its 30: nothing lost
            assert s.spent.tokens in (100, 70), s  # 70 alone if the promoted replica never had it
        assert states[first].spent == Amount(0, 100, 2)  # the surviving slot saw all of it
        assert store.reserve(ReserveRequest("after", specs, Amount(0, 50, 1), 60)).admitted
        store.close()
    finally:
        cluster.stop()


def test_scopes_under_one_root_still_take_one_script_call(store: RedisStore, redis_cluster: Cluster) -> None:
    """The single-slot fast path: a nested limit set is one EVALSHA to reserve and one to settle,
    counted on the servers; the same call across two roots is one per slot."""

    def evalshas() -> int:
        total = 0
        for node in redis_cluster.primaries():
            total += int(node.client().info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))
        return total

    nested = (CounterRef("org:n", "month"), CounterRef("org:n/user:u", "day"))
    across = (CounterRef("org:n", "month"), CounterRef("user:u", "day"))
    assert store._plan([r.scope for r in nested]) is None
    assert spans_slots(store, "org:n", "user:u")
    for warm in (True, False):  # warm: the eviction check and the scripts' loads (NOSCRIPT) first
        for refs, want in ((nested, 2), (across, 4)):
            specs = tuple(CounterSpec(r, Caps(tokens=1_000)) for r in refs)
            lease = f"one-{want}-{warm}"
            before = evalshas()
            assert store.reserve(ReserveRequest(lease, specs, Amount(0, 10, 1), 60)).admitted
            assert store.settle(SettleRequest(lease, refs, Amount(0, 5, 1))) == "settled"
            if not warm:
                assert evalshas() - before == want, refs


def test_the_ledger_of_calls_across_slots_sums_exactly_to_status(store: RedisStore) -> None:
    """Each slot's settle writes its own record in its own root's stream; refusals undone in one
    slot (``unreserve``) leave no charge; summed per counter, the export equals status."""
    from budgetguard.ledger import totals

    limits = [
        Limit(tokens=10**9, per="day"),
        Limit(usd=1, scope="org:{org_id}"),
        Limit(requests=2, scope="user:{user_id}"),
    ]
    guard = BudgetGuard(limits=limits, store=store, prices=PRICES)
    model = guard.wrap(fake())
    assert spans_slots(store, "global", "org:acme", "user:ann")
    for user in ("ann", "bob", "ann", "cy", "ann"):  # ann's third call is refused in her slot
        try:
            model.invoke("hi", config={"metadata": {"org_id": "acme", "user_id": user}})
        except BudgetExceeded:
            assert user == "ann"
    records = store.ledger_records()
    assert {r.outcome for r in records} == {"settled"} and len(records) == 3 * 4  # 4 calls, 3 slots each
    sums = totals(records)
    pairs = store.scopes()
    states = store.status([CounterRef(s, p) for s, p in pairs])
    assert len(pairs) == 5  # global, the org, three users
    for (scope, per), st in zip(pairs, states, strict=True):
        assert sums.get((scope, per, st.window_start), Amount()) == st.spent, (scope, per)
        assert st.reserved == Amount(), (scope, per)
