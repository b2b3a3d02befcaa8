"""Clear errors, never raw ones: what a misconfigured or unreachable Redis is reported as.

Real servers only. A missing database, a Sentinel URL at a plain Redis, a
refused connection, a name that does not resolve and a stall each get their
own message, with host, port and db and never a secret; a failed status read
does not claim a call was refused; ``guard.health()`` answers a readiness
probe in one bounded round trip and never raises for a down store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis_servers import Cluster, RedisServer, free_port
from stall_proxy import StallProxy

import budgetguard
from budgetguard import BudgetGuard, BudgetStoreUnavailable, ConfigError, Health, Limit
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores import store_from_url
from budgetguard.stores.base import ReserveRequest
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

SPEC = CounterSpec(CounterRef("errors-probe", "lifetime"), Caps(tokens=100))
LIMITS = [Limit(usd=1)]


def reserve(store: RedisStore) -> bool:
    return store.reserve(ReserveRequest(f"e-{time.monotonic_ns()}", (SPEC,), Amount(0, 1, 0), 60)).admitted


def dead_url() -> str:
    return f"redis://user:s3cret@127.0.0.1:{free_port()}/3"


@pytest.fixture()
def proxy(fresh_redis: RedisServer) -> Iterator[StallProxy]:
    p = StallProxy(fresh_redis.port).start()
    yield p
    p.close()


# ------------------------------------------------------------------ configuration mistakes


def test_a_database_out_of_range_is_a_config_error_naming_the_fix(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/99"
    with pytest.raises(ConfigError) as info:
        reserve(RedisStore.from_url(url))
    msg = str(info.value)
    assert f"127.0.0.1:{redis_server.port}/99" in msg and "databases" in msg and "/0" in msg
    llm = FakeChatModel()
    with pytest.raises(ConfigError):
        BudgetGuard(limits=LIMITS, store=url, spool_dir=tmp_path).wrap(llm).invoke("hi")
    assert llm.calls.count == 0


def test_a_sentinel_url_at_a_plain_redis_is_a_config_error(redis_server: RedisServer) -> None:
    with pytest.raises(ConfigError) as info:
        reserve(RedisStore.from_url(f"redis+sentinel://127.0.0.1:{redis_server.port}/mymaster"))
    msg = str(info.value)
    assert "not a Sentinel" in msg and "redis://" in msg and f"127.0.0.1:{redis_server.port}" in msg


UPPER = ("REDIS", "REDISS", "UNIX", "REDIS+SENTINEL", "RediS+ClusteR")


@pytest.mark.parametrize("scheme", UPPER)
def test_every_scheme_in_upper_case_reaches_every_layer(scheme: str, redis_cluster: Cluster) -> None:
    if "CLUSTER" in scheme.upper():
        url = scheme + redis_cluster.url[len("redis+cluster") :]
    elif scheme == "UNIX":
        url = "UNIX:///tmp/none.sock"
    else:
        url = f"{scheme}://127.0.0.1:1/0"  # nothing listens: building a store connects to nothing
    for store in (store_from_url(url), RedisStore.from_url(url), BudgetGuard(limit_usd=1, store=url).store):
        assert isinstance(store, RedisStore)
        assert store.label.startswith(scheme.lower() + "://"), store.label


def test_labels_keep_host_port_and_db_but_no_secret() -> None:
    url = dead_url()
    store = RedisStore.from_url(url)
    port_db = url.rsplit(":", 1)[1]  # "<port>/3"
    assert store.label == f"redis://127.0.0.1:{port_db}"
    with pytest.raises(BudgetStoreUnavailable) as info:
        reserve(store)
    assert f"127.0.0.1:{port_db}" in str(info.value) and "s3cret" not in str(info.value)
    assert "s3cret" not in repr(store)


# ------------------------------------------------------------------ kinds of unreachable


def test_a_refused_connection_is_not_reported_as_a_timeout() -> None:
    with pytest.raises(BudgetStoreUnavailable) as info:
        reserve(RedisStore.from_url(dead_url()))
    msg = str(info.value)
    assert "refused the connection" in msg and "did not answer in time" not in msg


def test_a_host_that_does_not_resolve_is_reported_as_dns() -> None:
    with pytest.raises(BudgetStoreUnavailable) as info:
        reserve(RedisStore.from_url("redis://no-such-host.invalid:6379/0"))
    msg = str(info.value)
    assert "does not resolve (DNS)" in msg and "did not answer" not in msg and "refused" not in msg


def test_a_stalled_server_did_not_answer_in_time(proxy: StallProxy) -> None:
    store = RedisStore.from_url(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.5)
    assert reserve(store)
    proxy.stall()
    with pytest.raises(BudgetStoreUnavailable) as info:
        reserve(store)
    assert "did not answer in time" in str(info.value) and "refused" not in str(info.value)


# ------------------------------------------------------------------ messages fit the operation


def test_a_failed_status_read_does_not_say_the_call_was_not_made(tmp_path: Path) -> None:
    guard = BudgetGuard(limits=LIMITS, store=dead_url(), spool_dir=tmp_path)
    with pytest.raises(BudgetStoreUnavailable) as first:
        guard.remaining()
    with pytest.raises(BudgetStoreUnavailable) as breaker:  # failing fast now, from the breaker
        guard.remaining()
    with pytest.raises(BudgetStoreUnavailable) as asynchronous:
        asyncio.run(guard.aremaining())
    for exc in (first.value, breaker.value, asynchronous.value):
        assert exc.operation == "status"
        assert "not made" not in str(exc) and "status could not be read" in str(exc)
    with pytest.raises(BudgetStoreUnavailable) as call:
        guard.wrap(FakeChatModel()).invoke("hi")
    assert call.value.operation == "reserve" and "not made" in str(call.value)


# ------------------------------------------------------------------ health checks


def test_health_of_a_store_that_answers(redis_server: RedisServer, tmp_path: Path) -> None:
    guard = BudgetGuard(limits=LIMITS, store=redis_server.url, spool_dir=tmp_path)
    for health in (guard.health(), guard.health(), asyncio.run(guard.ahealth())):
        assert isinstance(health, Health) and health.ok and bool(health)
        assert health.problem is None and health.fix is None
        assert 0 < health.latency < 0.5
        assert health.store == f"redis://127.0.0.1:{redis_server.port}/0"
    assert BudgetGuard(limit_usd=1).health().ok, "the memory store is always healthy"


def test_health_of_a_down_store_never_raises_and_says_why(tmp_path: Path) -> None:
    guard = BudgetGuard(limits=LIMITS, store=dead_url(), spool_dir=tmp_path)
    for health in (guard.health(), asyncio.run(guard.ahealth())):
        assert not health.ok and not health
        assert health.problem is not None and "refused the connection" in health.problem
        assert health.fix is not None and "port" in health.fix
        assert "s3cret" not in repr(health)


def test_health_of_a_stalled_store_is_bounded_by_its_timeout(proxy: StallProxy, tmp_path: Path) -> None:
    guard = BudgetGuard(
        limits=LIMITS, store=f"redis://127.0.0.1:{proxy.port}/0", store_timeout=0.6, spool_dir=tmp_path
    )
    assert guard.health().ok
    proxy.stall()
    for health in (guard.health(), asyncio.run(guard.ahealth())):
        assert not health.ok and health.problem is not None and "did not answer" in health.problem
        assert health.latency < 0.6 + 0.3


def test_health_reports_an_evicting_policy(fresh_redis: RedisServer, tmp_path: Path) -> None:
    fresh_redis.client().config_set("maxmemory-policy", "allkeys-lru")
    health = BudgetGuard(limits=LIMITS, store=fresh_redis.url, spool_dir=tmp_path).health()
    assert not health.ok and health.problem is not None and "noeviction" in health.problem


def test_health_is_exported() -> None:
    assert budgetguard.Health is Health and "Health" in budgetguard.__all__
