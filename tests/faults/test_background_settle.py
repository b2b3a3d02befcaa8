"""``settle="background"``: a network store's settles leave the caller's path and keep every guarantee.

Real redis-server processes (and the stall proxy in front of one), no mocks:
totals are exact once the settles are waited for (``flush``, ``remaining``),
from many threads and asyncio tasks; a settle the store cannot take ends in
the spool and is replayed once; a full queue makes the caller settle inline;
the process's exit waits for what is queued.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_servers import RedisServer
from stall_proxy import StallProxy
from test_faults import LIMITS, expected, fake, totals, wait_until

from budgetguard import BudgetGuard, CallRecord, ConfigError
from budgetguard.engine.settler import Settler
from budgetguard.telemetry import Telemetry

pytestmark = pytest.mark.redis


@pytest.fixture(autouse=True)
def _no_otel_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about a process with no OpenTelemetry SDK. ``tests/observe`` sets one for the
    whole process (OpenTelemetry's providers can be set only once), and with one, settles stay
    inline by design (``test_records_come_from_the_settler_thread`` checks that): so, whatever ran
    before, none is seen."""
    monkeypatch.setattr(Telemetry, "live", lambda self: False)


def background(url: str, spool_dir: Path, **options: Any) -> tuple[BudgetGuard, list[CallRecord]]:
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=LIMITS,
        store=url,
        spool_dir=spool_dir,
        on_record=records.append,
        settle="background",
        **options,
    )
    assert guard.engine.settler is not None
    return guard, records


@pytest.fixture()
def proxy(fresh_redis: RedisServer) -> Iterator[StallProxy]:
    p = StallProxy(fresh_redis.port).start()
    yield p
    p.close()


def test_many_threads_totals_exact_once_flushed(fresh_redis: RedisServer, tmp_path: Path) -> None:
    guard, records = background(fresh_redis.url, tmp_path)
    guarded = guard.wrap(fake())

    def calls() -> None:
        for i in range(25):
            guarded.invoke(f"call {i}")

    threads = [threading.Thread(target=calls) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert guard.flush(30)
    assert len(records) == 200 and {r.outcome for r in records} == {"settled"}
    assert totals(guard) == expected(records)
    assert totals(guard)["requests"] == (200, 0)


def test_many_asyncio_tasks_totals_exact(fresh_redis: RedisServer, tmp_path: Path) -> None:
    guard, records = background(fresh_redis.url, tmp_path)
    guarded = guard.wrap(fake())

    async def main() -> dict[str, Any]:
        await asyncio.gather(*(guarded.ainvoke(f"task {i}") for i in range(60)))
        status = await guard.aremaining()  # waits for the background settles before it reads
        return {r.quantity: (r.spent, r.reserved) for r in status.rows}

    got = asyncio.run(main())
    assert len(records) == 60 and {r.outcome for r in records} == {"settled"}
    assert got == expected(records) == totals(guard)


def test_a_read_right_after_a_call_sees_it_settled(fresh_redis: RedisServer, tmp_path: Path) -> None:
    guard, records = background(fresh_redis.url, tmp_path)
    guarded = guard.wrap(fake())
    for i in range(20):
        guarded.invoke(f"call {i}")
        assert totals(guard)["requests"] == (i + 1, 0), "remaining() waits for the call's settle"
    assert totals(guard) == expected(records)


@pytest.mark.parametrize("sdk", [False, True], ids=["no-otel-sdk", "otel-sdk"])
def test_records_come_from_the_settler_thread(
    fresh_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sdk: bool
) -> None:
    """With an OpenTelemetry SDK, settles stay in the caller (their spans belong to its context)."""
    monkeypatch.setattr(Telemetry, "live", lambda self: sdk)
    threads: list[str] = []
    guard = BudgetGuard(
        limits=LIMITS,
        store=fresh_redis.url,
        spool_dir=tmp_path,
        settle="background",
        on_record=lambda rec: threads.append(threading.current_thread().name),
    )
    guard.wrap(fake()).invoke("hi")
    assert guard.flush(10)
    assert threads == [threading.current_thread().name if sdk else "budgetguard-settler"]


def test_a_stalled_background_settle_is_spooled_and_replayed_once(proxy: StallProxy, tmp_path: Path) -> None:
    guard, records = background(proxy.url, tmp_path, store_timeout=0.3)
    guarded = guard.wrap(fake())
    guarded.invoke("before")
    assert guard.flush(10)  # its settle landed: only the next one meets the stall
    chunks = []
    for chunk in guarded.stream("the store stalls while this streams"):
        if not chunks:
            proxy.stall()  # reserved already: the settle, in the background, meets the stall
        chunks.append(chunk)
    assert chunks
    assert guard.engine.settled(10)
    assert [r.outcome for r in records] == ["settled", "spooled"]
    spooled = [line for p in tmp_path.rglob("spool-*.jsonl") for line in p.read_bytes().splitlines()]
    assert len(spooled) == 1 and b'"op":"settle"' in spooled[0]
    proxy.resume()  # the held settle may land too: replayed or not, it counts once
    wait_until(lambda: _replayed(guard), 10, "the spool to replay once the store answers")
    assert totals(guard) == expected(records), "final totals equal what was spent, counted once"
    guarded.invoke("after")
    assert guard.flush(10)
    assert totals(guard) == expected(records)


def _replayed(guard: BudgetGuard) -> bool:
    try:
        guard.replay_spool()
    except Exception:
        return False
    spool = guard.engine.spool
    return spool is not None and spool.pending() == 0


def test_a_full_queue_settles_in_the_caller(fresh_redis: RedisServer, tmp_path: Path) -> None:
    """Backpressure: with the thread held up and its queue full, the next settle runs inline."""
    release = threading.Event()
    where: list[str] = []
    records: list[CallRecord] = []

    def on_record(rec: CallRecord) -> None:
        name = threading.current_thread().name
        where.append(name)
        records.append(rec)
        if name == "budgetguard-settler":
            release.wait(10)  # hold the thread: the queue behind it fills

    guard = BudgetGuard(
        limits=LIMITS, store=fresh_redis.url, spool_dir=tmp_path, settle="background", on_record=on_record
    )
    engine = guard.engine
    engine.settler = settler = Settler(engine._sync, maxsize=1)
    guarded = guard.wrap(fake())
    guarded.invoke("one")  # the thread settles it, then waits in on_record
    wait_until(lambda: len(where) == 1, 10, "the thread to take the first settle")
    guarded.invoke("two")  # queued (the queue holds one)
    guarded.invoke("three")  # queue full: settled here
    assert settler.inline == 1
    assert where == ["budgetguard-settler", threading.current_thread().name]
    release.set()
    assert guard.flush(10)
    assert len(records) == 3 and {r.outcome for r in records} == {"settled"}
    assert totals(guard) == expected(records)


def test_reset_waits_for_the_settles_before_it(fresh_redis: RedisServer, tmp_path: Path) -> None:
    guard, _ = background(fresh_redis.url, tmp_path)
    guarded = guard.wrap(fake())
    for i in range(10):
        guarded.invoke(f"call {i}")
    guard.reset()
    assert guard.flush(10)
    assert totals(guard)["requests"] == (0, 0), "no settle landed after the reset"


def test_the_exit_waits_for_queued_settles(fresh_redis: RedisServer, tmp_path: Path) -> None:
    script = f"""
import sys
from budgetguard import BudgetGuard, Limit
from budgetguard.testing import FakeChatModel
guard = BudgetGuard(limits=[Limit(usd=100, tokens=10**9, requests=10**6)], store={fresh_redis.url!r},
                    spool_dir={str(tmp_path)!r}, settle="background")
guarded = guard.wrap(FakeChatModel(input_tokens=50, output_tokens=10, max_tokens=64))
for i in range(30):
    guarded.invoke(f"call {{i}}")
assert guard.engine.settler is not None
"""  # ends without waiting: the exit does
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    reader = BudgetGuard(limits=LIMITS, store=fresh_redis.url, spool_dir=tmp_path)
    assert totals(reader)["requests"] == (30, 0), "every queued settle landed before the process ended"


def test_the_setting_is_checked_and_applies_to_network_stores_only(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=r"settle must be 'background'.*or 'inline'.*got 'later'"):
        BudgetGuard(limit_usd=1, settle="later")  # type: ignore[arg-type]
    assert BudgetGuard(limit_usd=1, settle="background").engine.settler is None  # memory: instant
    assert BudgetGuard(limit_usd=1, store=fresh_redis.url, spool_dir=tmp_path).engine.settler is None
    assert (
        BudgetGuard(limit_usd=1, store=fresh_redis.url, spool_dir=tmp_path, settle="inline").engine.settler
        is None
    )


def _child_calls(url: str, spool_dir: str, out: Any) -> None:
    guard = _FORKED["guard"]
    guard.wrap(fake()).invoke("in the child")
    out.put(totals(guard)["requests"])  # must not wait for the parent's thread, which is not here


_FORKED: dict[str, BudgetGuard] = {}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_forked_child_settles_with_a_thread_of_its_own(fresh_redis: RedisServer, tmp_path: Path) -> None:
    import multiprocessing

    guard, _ = background(fresh_redis.url, tmp_path)
    guard.wrap(fake()).invoke("in the parent")  # the parent's thread is started
    _FORKED["guard"] = guard
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_calls, args=(fresh_redis.url, str(tmp_path), out))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    assert out.get(timeout=5) == (2, 0)
    assert guard.flush(10) and totals(guard)["requests"] == (2, 0)
