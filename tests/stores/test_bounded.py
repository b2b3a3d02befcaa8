"""Issue 8, items 5 and 6: every lease resolves, and Redis memory never grows with calls.

5. A lease whose own data vanished (its TTL lapsed on an idle root, or it was
   evicted) must still be charged by a later sweep, not stay reserved forever.
6. Settled-id markers are bounded per root (by age and by count), so keys and
   bytes grow with tenants and windows, never with the number of calls.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from clock import FakeClock
from redis_servers import RedisServer

from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores import MemoryStore
from budgetguard.stores.base import ReserveRequest, SettleRequest, Store
from budgetguard.stores.redis import RedisStore

T0 = float((int(time.time()) // 86400 + 40) * 86400 + 3600)  # fake time in the future: keys stay
LIFE = CounterSpec(CounterRef("tenant:a", "lifetime"), Caps(nanos=10**9))
EST = Amount(41_100, 10, 1)  # $0.0000411, as measured in the issue


def redis_store(server: RedisServer, clock: FakeClock, **options: Any) -> RedisStore:
    prefix = f"bd-{uuid.uuid4().hex[:10]}:"
    return RedisStore.from_url(server.url, prefix=prefix, server_time=False, clock=clock, **options)


def prefix_keys(server: RedisServer, store: RedisStore) -> list[str]:
    return sorted(k.decode() for k in server.client().scan_iter(match=f"{store.prefix}*", count=1000))


# ------------------------------------------------------------------ 5. leases always resolve


def test_a_lease_whose_ttl_lapsed_on_an_idle_root_is_still_charged(redis_server: RedisServer) -> None:
    """Crashed call, then an idle root for longer than the old lease-hash TTL (ttl + tombstone_ttl)."""
    clock = FakeClock(T0)
    store = redis_store(redis_server, clock, tombstone_ttl=1)
    assert store.reserve(ReserveRequest("crashed", (LIFE,), EST, ttl=0.05)).admitted
    time.sleep(1.3)  # real time: anything with the old TTL (50 ms + 1 s) is gone by now
    clock.advance(86400)  # an idle day, no traffic on the root
    st = store.status([LIFE.ref])[0]
    assert st.reserved == Amount(), f"still reserved with no lease left: {st}"
    assert st.spent == EST and st.estimated_count == 1


def test_a_lease_whose_hash_vanished_is_still_charged(redis_server: RedisServer) -> None:
    """What used to be the lease key (``l:<id>``) is deleted, as eviction would: the sweep still charges."""
    clock = FakeClock(T0)
    store = redis_store(redis_server, clock)
    assert store.reserve(ReserveRequest("evicted", (LIFE,), EST, ttl=60)).admitted
    redis_server.client().delete(f"{store.prefix}{{tenant:a}}:l:evicted")
    clock.advance(61)
    st = store.status([LIFE.ref])[0]
    assert st.reserved == Amount() and st.spent == EST


def test_no_lease_data_of_a_live_root_carries_a_ttl(redis_server: RedisServer) -> None:
    """Resolving expiry reads only keys without a TTL (volatile-* eviction never picks them)."""
    clock = FakeClock(T0)
    store = redis_store(redis_server, clock)
    assert store.reserve(ReserveRequest("live", (LIFE,), EST, ttl=60)).admitted
    client = redis_server.client()
    lease_keys = [k for k in prefix_keys(redis_server, store) if ":c:" not in k and not k.endswith("roots")]
    assert lease_keys
    assert all(client.pttl(k) == -1 for k in lease_keys), {k: client.pttl(k) for k in lease_keys}


# ------------------------------------------------------------------ 6. memory grows with tenants, not calls


def calls(store: Store, n: int, start: int = 0, spec: CounterSpec = LIFE) -> list[str]:
    """``n`` calls reserved and settled, a millisecond apart (the clock is the store's FakeClock)."""
    ids = [f"c{i}" for i in range(start, start + n)]
    clock = store._clock  # type: ignore[attr-defined]
    for lid in ids:
        clock.advance(0.001)
        assert store.reserve(ReserveRequest(lid, (spec,), EST, ttl=60)).admitted
        assert store.settle(SettleRequest(lid, (spec.ref,), EST)) == "settled"
    return ids


def test_redis_keys_do_not_grow_with_calls(redis_server: RedisServer) -> None:
    store = redis_store(redis_server, FakeClock(T0))
    calls(store, 5)
    after_5 = len(prefix_keys(redis_server, store))
    calls(store, 200, start=5)
    assert len(prefix_keys(redis_server, store)) == after_5, prefix_keys(redis_server, store)[:10]


def held(store: MemoryStore) -> int:
    """How many entries a MemoryStore's containers hold (nested mappings counted through)."""
    n = 0
    for v in vars(store).values() if hasattr(store, "__dict__") else ():
        if isinstance(v, (dict, list)):
            n += len(v)
            if isinstance(v, dict):
                n += sum(len(x) for x in v.values() if isinstance(x, dict))
    return n


def test_memory_store_entries_do_not_grow_with_calls() -> None:
    clock = FakeClock(T0)
    store = MemoryStore(clock=clock, settled_cap=50)
    calls(store, 60)
    at_cap = held(store)
    calls(store, 500, start=60)
    assert held(store) <= at_cap


def stores(server: RedisServer, clock: FakeClock, cap: int) -> list[tuple[str, Store]]:
    return [
        ("memory", MemoryStore(clock=clock, settled_cap=cap)),
        ("redis", redis_store(server, clock, settled_cap=cap)),
    ]


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_replays_within_the_cap_count_once_and_the_bound_is_what_the_docs_say(
    redis_server: RedisServer, kind: str
) -> None:
    clock = FakeClock(T0)
    store = dict(stores(redis_server, clock, cap=10))[kind]
    ids = calls(store, 30)
    spent = store.status([LIFE.ref])[0].spent
    for lid in ids[-10:]:  # the newest `cap` closes are remembered
        assert store.settle(SettleRequest(lid, (LIFE.ref,), EST)) == "replay"
        assert store.reserve(ReserveRequest(lid, (LIFE,), EST, ttl=60)).admitted  # a no-op replay
        assert not store.release(lid, (LIFE.ref,))
    assert store.status([LIFE.ref])[0].spent == spent
    assert store.status([LIFE.ref])[0].reserved == Amount()
    # older than the cap: forgotten, as documented (a replay that old may count twice)
    assert store.settle(SettleRequest(ids[0], (LIFE.ref,), EST)) == "unreserved"


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_late_reserve_after_a_release_never_reserves(redis_server: RedisServer, kind: str) -> None:
    clock = FakeClock(T0)
    store = dict(stores(redis_server, clock, cap=10))[kind]
    assert not store.release("timed-out", (LIFE.ref,))  # the client gave up before the reserve landed
    calls(store, 5)
    assert store.reserve(ReserveRequest("timed-out", (LIFE,), EST, ttl=60)).admitted
    assert store.status([LIFE.ref])[0].reserved == Amount()


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_markers_older_than_tombstone_ttl_are_forgotten(redis_server: RedisServer, kind: str) -> None:
    clock = FakeClock(T0)
    store = dict(stores(redis_server, clock, cap=1000))[kind]
    calls(store, 3)
    assert store.settle(SettleRequest("c0", (LIFE.ref,), EST)) == "replay"
    clock.advance(86401)
    calls(store, 1, start=3)  # any close on the root trims by age
    assert store.settle(SettleRequest("c1", (LIFE.ref,), EST)) == "unreserved"


def test_settled_cap_is_validated(redis_server: RedisServer) -> None:
    from budgetguard.errors import ConfigError

    with pytest.raises(ConfigError):
        MemoryStore(settled_cap=0)
    with pytest.raises(ConfigError):
        redis_store(redis_server, FakeClock(T0), settled_cap=0)
