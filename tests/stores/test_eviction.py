"""A Redis that may evict keys is refused: an evicted counter is a budget silently reset.

Real servers, one per policy class. The policy is read from ``INFO memory``
on the first operation (not in the constructor), so it is found even where
``CONFIG`` is renamed away, as on managed services.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_servers import RedisServer

from budgetguard import BudgetGuard, ConfigError, Limit
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores.base import ReserveRequest
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

pytestmark = pytest.mark.redis

EVICTING = (
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)
SPEC = CounterSpec(CounterRef("evict-probe", "lifetime"), Caps(tokens=100))


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    s = RedisServer(None, "--maxmemory", "64mb").start()
    yield s
    s.stop()


def reserve(store: RedisStore, lease: str) -> bool:
    return store.reserve(ReserveRequest(lease, (SPEC,), Amount(0, 1, 0), 60)).admitted


@pytest.mark.parametrize("policy", EVICTING)
def test_an_evicting_policy_is_refused_with_the_fix_named(
    server: RedisServer, policy: str, tmp_path: Path
) -> None:
    server.client().config_set("maxmemory-policy", policy)
    try:
        store = RedisStore.from_url(server.url)  # no I/O yet: constructors never connect
        with pytest.raises(ConfigError) as info:
            reserve(store, f"{policy}-1")
        msg = str(info.value)
        assert policy in msg and "noeviction" in msg and "allow_eviction" in msg
        assert f"127.0.0.1:{server.port}/0" in msg
        assert server.client().keys("budgetguard:{evict-probe}*") == [], "nothing was written"

        llm = FakeChatModel()
        guard = BudgetGuard(
            limits=[Limit(usd=1)], store=server.url, on_store_error="open", spool_dir=tmp_path
        )
        with pytest.raises(ConfigError):
            guard.wrap(llm).invoke("hi")
        assert llm.calls.count == 0, "a config error is not an outage: even fail-open refuses"
    finally:
        server.client().config_set("maxmemory-policy", "noeviction")


def test_noeviction_is_accepted_and_checked_once(server: RedisServer) -> None:
    store = RedisStore.from_url(server.url)
    assert reserve(store, "ok-1")
    server.client().config_set("maxmemory-policy", "allkeys-lru")
    try:  # checked on the first operation only: later ones cost no extra round trip
        assert reserve(store, "ok-2")
    finally:
        server.client().config_set("maxmemory-policy", "noeviction")
    store.release("ok-1", (SPEC.ref,))
    store.release("ok-2", (SPEC.ref,))


@pytest.mark.parametrize("how", ["argument", "url"])
def test_an_explicit_opt_in_accepts_an_evicting_server(server: RedisServer, how: str) -> None:
    server.client().config_set("maxmemory-policy", "allkeys-lru")
    try:
        if how == "argument":
            store = RedisStore.from_url(server.url, allow_eviction=True)
        else:
            store = RedisStore.from_url(server.url + "?allow_eviction=true")
        assert store.allow_eviction
        assert reserve(store, f"opt-in-{how}")
        store.release(f"opt-in-{how}", (SPEC.ref,))
    finally:
        server.client().config_set("maxmemory-policy", "noeviction")


def test_a_bad_opt_in_value_is_a_config_error(server: RedisServer) -> None:
    with pytest.raises(ConfigError, match="allow_eviction"):
        RedisStore.from_url(server.url + "?allow_eviction=maybe")
    assert not RedisStore.from_url(server.url + "?allow_eviction=false").allow_eviction


def test_the_policy_is_read_even_where_config_is_disabled(tmp_path: Path) -> None:
    """Managed services rename CONFIG away; INFO memory still reports the policy."""
    managed = RedisServer(
        None, "--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru", "--rename-command", "CONFIG", ""
    )
    managed.start()
    try:
        with pytest.raises(ConfigError, match="allkeys-lru"):
            reserve(RedisStore.from_url(managed.url), "managed-1")
    finally:
        managed.stop()


def test_eviction_would_have_reset_a_lifetime_cap(tmp_path: Path) -> None:
    """The incident: a small lifetime cap on an allkeys-* server under memory pressure.

    Refused up front now: the model is never called, so nothing is spent past the cap.
    """
    small = RedisServer(None, "--maxmemory", "2mb", "--maxmemory-policy", "allkeys-random").start()
    try:
        llm = FakeChatModel(input_tokens=50, output_tokens=10, max_tokens=16)
        guard = BudgetGuard(limits=[Limit(usd="0.0002")], store=small.url, spool_dir=tmp_path)
        guarded = guard.wrap(llm)
        for _ in range(5):
            with pytest.raises(ConfigError, match="maxmemory-policy allkeys-random"):
                guarded.invoke("hi")
        assert llm.calls.count == 0
    finally:
        small.stop()
