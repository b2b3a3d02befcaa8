"""Redis ERROR REPLIES are store faults, end to end through ``BudgetGuard`` on real servers.

OOM under ``noeviction``, READONLY (a primary demoted to replica), MASTERDOWN
(a replica whose primary is gone, with ``replica-serve-stale-data no``), BUSY
(a long script), CLUSTERDOWN (a cluster with an uncovered slot). Each must
become ``BudgetStoreUnavailable``: closed mode refuses without calling the
model, open mode lets the call go ahead and spools it, and a settle that
hits one is spooled and replayed exactly once. A reply no retry can fix
(other data under the prefix: WRONGTYPE) is a ``ConfigError``, never spooled.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis_servers import Cluster, RedisServer
from test_faults import LIMITS, expected, fake, totals  # one definition of the fault suite's helpers

from budgetguard import BudgetGuard, CallRecord, ConfigError
from budgetguard.errors import BudgetStoreUnavailable

pytestmark = pytest.mark.redis


def spooled_ops(spool_dir: Path) -> list[str]:
    import json

    return [
        json.loads(line)["op"]
        for p in sorted(spool_dir.rglob("spool-*.jsonl"))
        for line in p.read_bytes().splitlines()
    ]


def recording(url: str, spool_dir: Path, **options: Any) -> tuple[BudgetGuard, list[CallRecord]]:
    """A guard on ``url`` and the list its ``on_record`` fills."""
    records: list[CallRecord] = []
    return BudgetGuard(
        limits=LIMITS, store=url, spool_dir=spool_dir, on_record=records.append, **options
    ), records


def refuses_closed(
    url: str, tmp_path: Path, reply: str, *, use_async: bool = False
) -> BudgetStoreUnavailable:
    """A closed guard refuses with BudgetStoreUnavailable naming ``reply``, without calling the model."""
    guard = BudgetGuard(limits=LIMITS, store=url, spool_dir=tmp_path / "closed")
    llm = fake()
    t0 = time.monotonic()
    with pytest.raises(BudgetStoreUnavailable) as info:
        if use_async:
            asyncio.run(guard.wrap(llm).ainvoke("refused"))
        else:
            guard.wrap(llm).invoke("refused")
    assert time.monotonic() - t0 < 3.0, "bounded by store_timeout (1 s), retries included"
    assert llm.calls.count == 0, "the model must not be called"
    assert reply in str(info.value), str(info.value)
    assert "not made" in str(info.value)
    return info.value


@pytest.fixture()
def admin(fresh_redis: RedisServer) -> Iterator[redis.Redis]:
    client = fresh_redis.client()
    yield client
    client.config_set("maxmemory", 0)


# ------------------------------------------------------------------ OOM under noeviction


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_oom_closed_refuses_without_calling_the_model(
    fresh_redis: RedisServer, admin: redis.Redis, tmp_path: Path, use_async: bool
) -> None:
    BudgetGuard(limits=LIMITS, store=fresh_redis.url, spool_dir=tmp_path / "w").wrap(fake()).invoke("warm")
    admin.config_set("maxmemory", 1)  # every write is now refused with OOM
    exc = refuses_closed(fresh_redis.url, tmp_path, "out of memory (OOM", use_async=use_async)
    assert "maxmemory" in str(exc) and f":{fresh_redis.port}/0" in str(exc)


def test_oom_open_lets_the_call_go_ahead_spools_it_and_replays_it_once(
    fresh_redis: RedisServer, admin: redis.Redis, tmp_path: Path
) -> None:
    guard, records = recording(fresh_redis.url, tmp_path, on_store_error="open")
    llm = fake()
    guarded = guard.wrap(llm)
    guarded.invoke("before")
    admin.config_set("maxmemory", 1)
    for i in range(3):
        guarded.invoke(f"under OOM {i}")
    assert llm.calls.count == 4, "open mode lets every call go ahead"
    assert [r.outcome for r in records[1:]] == ["spooled"] * 3
    assert spooled_ops(tmp_path).count("reserve") == 3
    admin.config_set("maxmemory", 0)
    assert guard.replay_spool() == 6  # three reserves, three settles
    assert guard.replay_spool() == 0
    assert totals(guard) == expected(records)


def test_a_settle_that_hits_oom_is_spooled_and_replayed_exactly_once(
    fresh_redis: RedisServer, admin: redis.Redis, tmp_path: Path
) -> None:
    """The model ran: the caller gets its answer, the settle waits in the spool, nothing is lost."""
    guard, records = recording(fresh_redis.url, tmp_path)
    llm = fake()
    guarded = guard.wrap(llm)
    guarded.invoke("before")
    chunks = []
    for chunk in guarded.stream("the store runs out of memory while this streams"):
        if not chunks:
            admin.config_set("maxmemory", 1)  # reserved already; the settle will hit OOM
        chunks.append(chunk)
    assert chunks and llm.calls.count == 2
    assert records[-1].outcome == "spooled"
    assert spooled_ops(tmp_path) == ["settle"]
    admin.config_set("maxmemory", 0)
    assert guard.replay_spool() == 1
    assert guard.replay_spool() == 0
    assert totals(guard) == expected(records), "final totals equal what was spent, counted once"
    guarded.invoke("after")
    assert totals(guard) == expected(records)


# ------------------------------------------------------------------ failover replies


def test_readonly_after_a_demotion_is_a_store_fault(fresh_redis: RedisServer, tmp_path: Path) -> None:
    primary = RedisServer().start()
    try:
        fresh_redis.client().replicaof("127.0.0.1", primary.port)
        refuses_closed(fresh_redis.url, tmp_path, "read-only replica (READONLY)")
    finally:
        fresh_redis.client().replicaof("no", "one")
        primary.stop()


def test_masterdown_on_a_replica_without_its_primary_is_a_store_fault(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    primary = RedisServer().start()
    replica = fresh_redis.client()
    replica.config_set("replica-serve-stale-data", "no")
    replica.replicaof("127.0.0.1", primary.port)
    deadline = time.monotonic() + 10
    while replica.info("replication")["master_link_status"] != "up":
        assert time.monotonic() < deadline, "the replica never synced"
        time.sleep(0.05)
    primary.stop()
    while replica.info("replication")["master_link_status"] == "up":
        assert time.monotonic() < deadline + 10
        time.sleep(0.05)
    refuses_closed(fresh_redis.url, tmp_path, "(MASTERDOWN)")


def test_busy_running_a_long_script_is_a_store_fault(fresh_redis: RedisServer, tmp_path: Path) -> None:
    fresh_redis.client().config_set("busy-reply-threshold", 50)
    busy_loop = (
        "local t = redis.call('TIME')[1] + 3 while tonumber(redis.call('TIME')[1]) < t do end return 1"
    )
    runner = threading.Thread(target=lambda: fresh_redis.client().eval(busy_loop, 0))
    runner.start()
    time.sleep(0.3)
    try:
        refuses_closed(fresh_redis.url, tmp_path, "busy running a script (BUSY)")
    finally:
        runner.join()


def test_clusterdown_with_an_uncovered_slot_is_a_store_fault(tmp_path: Path) -> None:
    cluster = Cluster(3).start()
    try:
        guard = BudgetGuard(limits=LIMITS, store=cluster.url, spool_dir=tmp_path / "w")
        guard.wrap(fake()).invoke("warm")
        slot = guard.store.client.keyslot("budgetguard:{global}:")  # type: ignore[attr-defined]
        for node in cluster.nodes:
            with contextlib.suppress(redis.ResponseError):  # only its owner has it assigned
                node.client().execute_command("CLUSTER", "DELSLOTS", slot)
        deadline = time.monotonic() + 10
        while any(n.client().cluster("info")["cluster_state"] == "ok" for n in cluster.nodes):
            assert time.monotonic() < deadline, "the cluster never noticed the uncovered slot"
            time.sleep(0.05)
        llm = fake()
        with pytest.raises(BudgetStoreUnavailable) as info:
            guard.wrap(llm).invoke("slot gone")
        assert llm.calls.count == 0
        assert "hash slot" in str(info.value) and "not made" in str(info.value)
    finally:
        cluster.stop()


# ------------------------------------------------------------------ replies no retry fixes


def test_other_data_under_the_prefix_is_a_config_error_never_spooled(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    guard = BudgetGuard(limits=LIMITS, store=fresh_redis.url, on_store_error="open", spool_dir=tmp_path)
    llm = fake()
    guarded = guard.wrap(llm)
    guarded.invoke("warm")
    admin = fresh_redis.client()
    clobbered = 0
    for key in admin.keys("budgetguard:*"):
        if admin.type(key) == b"hash":  # a counter: another app writes a string there
            admin.delete(key)
            admin.set(key, "not a budget")
            clobbered += 1
    assert clobbered
    with pytest.raises(ConfigError) as info:
        guarded.invoke("collides")
    assert "WRONGTYPE" in str(info.value) and "prefix" in str(info.value)
    assert llm.calls.count == 1, "even fail-open does not call the model on a config error"
    assert "reserve" not in spooled_ops(tmp_path), "a reply that would fail again is not spooled"
