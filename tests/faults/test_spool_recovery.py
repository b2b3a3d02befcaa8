"""The spool keeps the totals true: read after replay, and survivors replay what dead processes left.

Real redis-server processes, killed and restarted; real spawned child processes.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from redis_servers import RedisServer

from budgetguard import BudgetGuard, BudgetStoreUnavailable, CallRecord, Limit
from budgetguard.testing import FakeChatModel

pytestmark = pytest.mark.redis

LIMITS = [Limit(usd=100, tokens=10**9, requests=10**6)]


def fake() -> FakeChatModel:
    return FakeChatModel(input_tokens=50, output_tokens=10, max_tokens=64)


def totals(guard: BudgetGuard) -> dict[str, tuple[Decimal | int, Decimal | int]]:
    return {r.quantity: (r.spent, r.reserved) for r in guard.remaining().rows}


def spent(records: list[CallRecord]) -> dict[str, tuple[Decimal | int, int]]:
    return {
        "usd": (sum((r.cost_usd for r in records), Decimal(0)), 0),
        "tokens": (sum(r.usage.total_tokens for r in records), 0),
        "requests": (len(records), 0),
    }


@pytest.fixture()
def aof_redis() -> Iterator[RedisServer]:
    """A server that keeps every write on disk, so a kill and restart loses nothing."""
    server = RedisServer(None, "--appendonly", "yes", "--appendfsync", "always").start()
    yield server
    server.stop()


def open_guard(server: RedisServer, spool_dir: Path, records: list[CallRecord]) -> BudgetGuard:
    """A fail-open guard with a short store timeout, recording every call."""
    return BudgetGuard(
        limits=LIMITS,
        store=server.url,
        on_store_error="open",
        spool_dir=spool_dir,
        store_timeout=0.3,
        on_record=records.append,
    )


def test_remaining_counts_what_waits_in_the_spool(aof_redis: RedisServer, tmp_path: Path) -> None:
    """Before the fix, after a recovery with no new call, status showed only what reached Redis."""
    records: list[CallRecord] = []
    guard = open_guard(aof_redis, tmp_path, records)
    llm = guard.wrap(fake())
    for i in range(3):
        llm.invoke(f"before {i}")
    aof_redis.kill()
    for i in range(5):
        llm.invoke(f"while down {i}")
    assert [r.outcome for r in records[3:]] == ["spooled"] * 5
    aof_redis.start()
    time.sleep(0.4)  # past the fail-fast window
    assert totals(guard) == spent(records), "the first read after recovery counts the spooled calls"
    assert guard.engine.spool is not None and guard.engine.spool.pending() == 0


async def test_aremaining_counts_what_waits_in_the_spool(aof_redis: RedisServer, tmp_path: Path) -> None:
    records: list[CallRecord] = []
    guard = open_guard(aof_redis, tmp_path, records)
    llm = guard.wrap(fake())
    await llm.ainvoke("before")
    aof_redis.kill()
    for i in range(4):
        await llm.ainvoke(f"while down {i}")
    aof_redis.start()
    time.sleep(0.4)
    got = {r.quantity: (r.spent, r.reserved) for r in (await guard.aremaining()).rows}
    assert got == spent(records)


def _child_spools_while_down(url: str, spool_dir: str, n: int, out: str) -> None:
    """A spawned worker: the store is down, its calls go ahead and are spooled; then it exits."""
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=LIMITS, store=url, on_store_error="open", spool_dir=spool_dir, on_record=records.append
    )
    llm = guard.wrap(fake())
    for i in range(n):
        llm.invoke(f"child call {i}")
    Path(out).write_text(json.dumps({"usd": str(sum((r.cost_usd for r in records), Decimal(0))), "n": n}))


def test_a_running_process_replays_what_a_dead_one_spooled(tmp_path: Path) -> None:
    """Before the fix, a spool left by a dead worker waited for a fresh process to start."""
    spool_dir = tmp_path / "spool"
    server = RedisServer()  # not started: both processes see the store down
    survivor = BudgetGuard(limits=LIMITS, store=server.url, spool_dir=spool_dir, store_timeout=0.3)
    with pytest.raises(BudgetStoreUnavailable):
        survivor.wrap(fake()).invoke("the survivor's first call, refused (closed mode)")
    out = tmp_path / "child.json"
    child = multiprocessing.get_context("spawn").Process(
        target=_child_spools_while_down, args=(server.url, str(spool_dir), 6, str(out))
    )
    child.start()
    child.join(90)
    assert child.exitcode == 0
    done = json.loads(out.read_text())
    (orphan,) = spool_dir.rglob(f"spool-{child.pid}-*.jsonl")
    server.start()
    try:
        time.sleep(0.4)  # past the survivor's fail-fast window
        state = survivor.engine._sync.state
        state.scan_every, state.next_scan = 0.0, 0.0  # look for orphaned spools at once, not in 10 s
        usd = survivor.remaining().rows[0]
        assert (usd.quantity, usd.spent, usd.reserved) == ("usd", Decimal(done["usd"]), 0)
        assert not orphan.exists(), "the dead worker's replayed file is removed"
    finally:
        server.stop()
