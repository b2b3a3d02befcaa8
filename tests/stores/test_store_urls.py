"""Store URLs: one registry of schemes, matched case-insensitively by every layer."""

from __future__ import annotations

import pytest
from redis_servers import RedisServer

import budgetguard
from budgetguard import ConfigError, MemoryStore
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores import registry, store_from_url
from budgetguard.stores.base import ReserveRequest
from budgetguard.stores.redis import RedisStore

ALL = (
    "memory",
    "redis",
    "rediss",
    "unix",
    "redis+cluster",
    "rediss+cluster",
    "redis+sentinel",
    "rediss+sentinel",
)


def test_every_scheme_is_declared_once_by_one_connector() -> None:
    declared = [s for c in registry.CONNECTORS for s in c.schemes]
    assert tuple(declared) == ALL
    for scheme in ALL:
        assert registry.lookup(scheme) is registry.lookup(scheme.upper()) is not None


def test_the_unknown_scheme_messages_list_the_registry() -> None:
    with pytest.raises(ConfigError) as info:
        store_from_url("ftp://h")
    for scheme in ALL:
        assert f"'{scheme}://'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        RedisStore.from_url("memory://")
    msg = str(info.value)
    assert "'memory'" in msg and "memory://" not in msg
    for scheme in ALL[1:]:
        assert f"{scheme}://" in msg


@pytest.mark.parametrize("url", ["MEMORY://", "Memory://", "memory://"])
def test_memory_in_any_case(url: str) -> None:
    assert isinstance(store_from_url(url), MemoryStore)


@pytest.mark.parametrize("scheme", ["REDIS", "Redis", "redis"])
def test_a_redis_url_in_any_case_is_accepted_by_every_layer(scheme: str) -> None:
    url = f"{scheme}://127.0.0.1:1/0"  # nothing listens: building the store connects to nothing
    for store in (
        store_from_url(url),
        RedisStore.from_url(url),
        budgetguard.BudgetGuard(limit_usd=1, store=url).store,
    ):
        assert isinstance(store, RedisStore)
        assert store.label == "redis://127.0.0.1:1/0"  # host, port and db, the scheme lower case


def test_sentinel_and_unix_schemes_in_upper_case() -> None:
    assert (
        RedisStore.from_url("REDIS+SENTINEL://127.0.0.1:1/svc").label
        == "redis+sentinel://127.0.0.1:1/svc?db=0"
    )
    assert store_from_url("UNIX:///tmp/none.sock").label == "unix:///tmp/none.sock?db=0"  # type: ignore[attr-defined]


def test_an_upper_case_url_reaches_the_same_server(redis_server: RedisServer) -> None:
    upper = redis_server.url.replace("redis://", "REDIS://", 1)
    assert upper != redis_server.url
    spec = CounterSpec(CounterRef("case-probe", "lifetime"), Caps(tokens=10))
    store = store_from_url(upper)
    assert store.reserve(ReserveRequest("case-1", (spec,), Amount(0, 3, 0), 60)).admitted
    (seen,) = RedisStore.from_url(redis_server.url).status([spec.ref])
    assert seen.reserved == Amount(0, 3, 0)
    store.release("case-1", (spec.ref,))
