"""Issue 8, item 7: ephemeral scopes expire (``Limit(..., expire_after=...)``).

A counter of such a limit is forgotten ``expire_after`` seconds after its last
reserve or settle; its scope entry and (when the root holds nothing else) its
root entry go too, so per-run budgets never pile up. A live scope is never
dropped. Redis expires keys on its own clock, so the Redis tests use short real
times (a fake clock pinned to real time, moved with each sleep).
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from clock import FakeClock
from pydantic import ValidationError
from redis_servers import RedisServer

from budgetguard import BudgetGuard, Limit
from budgetguard.engine.plans import Planner
from budgetguard.pricing import Price
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores import MemoryStore
from budgetguard.stores.base import ReserveRequest, SettleRequest, Store
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

EST = Amount(41_100, 10, 1)
PRICES = {"test-model": Price(input_per_mtok=1, output_per_mtok=2)}


def test_expire_after_takes_seconds_or_a_timedelta_and_must_be_positive() -> None:
    assert Limit(usd=1, expire_after=30).expire_seconds == 30
    assert Limit(usd=1, expire_after=timedelta(minutes=2)).expire_seconds == 120
    assert Limit(usd=1, expire_after=0.5).expire_seconds == 0.5
    assert Limit(usd=1).expire_seconds is None
    for bad in (0, -1, timedelta(0), True, "soon"):
        with pytest.raises(ValidationError):
            Limit(usd=1, expire_after=bad)


def test_the_plan_carries_expire_after_to_the_stores() -> None:
    planner = Planner(
        [
            Limit(usd=1, scope="run:{run_id}", expire_after=60),
            Limit(tokens=5, scope="run:{run_id}", expire_after=600),  # same counter: the longer wins
            Limit(usd=9, scope="org:{org}", expire_after=60),
            Limit(requests=3, scope="org:{org}"),  # shared with a permanent limit: never expires
        ]
    )
    refs = planner.plan({"run_id": "r1", "org": "o"}).refs
    assert refs == (CounterRef("run:r1", "lifetime", 600.0), CounterRef("org:o", "lifetime", None))


# ------------------------------------------------------------------ both stores


def spec(scope: str, expire_after: float | None, per: str = "lifetime") -> CounterSpec:
    return CounterSpec(CounterRef(scope, per, expire_after), Caps(nanos=10**9))


def call(store: Store, lid: str, *specs: CounterSpec) -> None:
    assert store.reserve(ReserveRequest(lid, specs, EST, ttl=0.2)).admitted
    assert store.settle(SettleRequest(lid, tuple(s.ref for s in specs), EST)) == "settled"


class Env:
    """A store and a way to let time pass (real time too for Redis, whose keys expire on its clock)."""

    def __init__(self, kind: str, server: RedisServer | None) -> None:
        self.kind = kind
        self.clock = FakeClock(time.time())
        self.server = server
        if server is None:
            self.store: Store = MemoryStore(clock=self.clock)
        else:
            prefix = f"ex-{uuid.uuid4().hex[:10]}:"
            self.store = RedisStore.from_url(server.url, prefix=prefix, server_time=False, clock=self.clock)

    def wait(self, seconds: float) -> None:
        if self.server is not None:
            time.sleep(seconds)
        self.clock.advance(seconds)

    def spent(self, s: CounterSpec) -> Amount:
        return self.store.status([s.ref])[0].spent


@pytest.fixture(params=["memory", "redis"])
def env(request: pytest.FixtureRequest) -> Env:
    server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    return Env(request.param, server)


def test_a_counter_is_forgotten_expire_after_its_last_use_and_not_before(env: Env) -> None:
    run = spec("run:r1", 1.0)
    call(env.store, "a", run)
    env.wait(0.6)
    call(env.store, "b", run)  # a use refreshes the expiry
    env.wait(0.6)  # 1.2 s after the first use, 0.6 s after the last
    assert env.spent(run) == EST + EST
    env.wait(0.6)
    call(env.store, "c", run)  # reserve and settle again: fresh from here
    env.wait(1.3)
    assert env.spent(run) == Amount(), "the counter outlived expire_after"


def test_a_permanent_counter_and_a_live_scope_are_never_dropped(env: Env) -> None:
    org, run = spec("org:o", None), spec("org:o/run:r1", 1.0)
    day = spec("org:o/user:u", None, per="day")
    call(env.store, "a", org, run, day)
    env.wait(1.3)
    assert env.spent(org) == EST and env.spent(day) == EST
    assert env.spent(run) == Amount()


def test_remaining_shows_a_fresh_budget_after_expire_after(env: Env) -> None:
    guard = BudgetGuard(
        limits=[Limit(usd=1, scope="run:{run_id}", expire_after=1)],
        store=env.store,
        prices=PRICES,
    )
    fake = FakeChatModel(model_name="test-model", input_tokens=10, output_tokens=40, max_tokens=50)
    model = guard.wrap(fake)
    model.invoke("hi", config={"metadata": {"run_id": "r9"}})
    assert guard.remaining(run_id="r9").rows[0].spent > 0
    env.wait(1.3)
    assert guard.remaining(run_id="r9").rows[0].spent == 0


# ------------------------------------------------------------------ Redis: keys and registries


def test_redis_forgets_the_counter_its_scope_entry_and_its_root(redis_server: RedisServer) -> None:
    env = Env("redis", redis_server)
    store: Any = env.store
    client = redis_server.client()
    keep, run = spec("org:o", None), spec("run:r1", 1.0)
    call(store, "a", keep)
    call(store, "b", run)
    assert ("run:r1", "lifetime") in store.scopes()
    assert client.zscore(f"{store.prefix}rootz", f"{store.prefix}{{run:r1}}:") is not None
    env.wait(1.3)
    assert store.scopes() == [("org:o", "lifetime")]  # only the live ones
    left = sorted(k.decode() for k in client.scan_iter(match=f"{store.prefix}{{run:r1}}:*"))
    # closed ids and the ledger: bounded, with a TTL
    assert [k for k in left if not k.endswith((":d", ":ledger"))] == [], left
    assert all(client.pttl(k) > 0 for k in left if k.endswith(":ledger"))
    # the roots entry lapses after SLACK more, and goes with the next root written
    from budgetguard.stores.redis.roots import SLACK

    env.clock.advance(SLACK + 1)
    call(store, "c", spec("run:r2", 1.0))
    roots = {m.decode() for m in client.zrange(f"{store.prefix}rootz", 0, -1)}
    assert roots == {f"{store.prefix}{{org:o}}:", f"{store.prefix}{{run:r2}}:"}
    assert client.zscore(f"{store.prefix}rootz", f"{store.prefix}{{org:o}}:") == float("inf")


def test_redis_reset_still_finds_an_expiring_scope(redis_server: RedisServer) -> None:
    env = Env("redis", redis_server)
    run = spec("run:r1", 30.0)
    call(env.store, "a", run)
    assert env.store.reset("run:r1") == 1
    assert env.spent(run) == Amount()
