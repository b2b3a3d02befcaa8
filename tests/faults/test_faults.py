"""Store faults against REAL redis-server processes: killed, stalled, restarted, crashed workers.

Nothing is mocked. A server is SIGKILLed, or a loopback TCP proxy between the
client and the server stops forwarding bytes (a stall: connections stay open,
nothing moves). With ``on_store_error="closed"`` the guard must refuse fast and
never call the model; with ``"open"`` it must let calls through, spool them
(fsync'ed JSON lines) and replay them exactly once when the store is back, so
the final totals equal what was really spent.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from clock import FakeClock
from redis_servers import RedisServer
from stall_proxy import StallProxy

from budgetguard import BudgetGuard, CallRecord, Limit, MemoryStore
from budgetguard.errors import BudgetStoreUnavailable
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores.base import ReserveRequest, SettleRequest, Store
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

pytestmark = pytest.mark.redis  # every test here talks to real redis-server processes

# One global lifetime counter with caps far above what a test spends.
LIMITS = [Limit(usd=100, tokens=10**9, requests=10**6)]
IN_TOKENS, OUT_TOKENS, MAX_OUT = 50, 10, 64


def fake(**kw: Any) -> FakeChatModel:
    """Fixed usage per call (50 in, 10 out), reservations capped at 64 output tokens."""
    return FakeChatModel(input_tokens=IN_TOKENS, output_tokens=OUT_TOKENS, max_tokens=MAX_OUT, **kw)


def totals(guard: BudgetGuard, **metadata: Any) -> dict[str, tuple[Decimal | int, Decimal | int]]:
    """quantity -> (spent, reserved) of the guard's global counter."""
    return {r.quantity: (r.spent, r.reserved) for r in guard.remaining(**metadata).rows}


def expected(records: list[CallRecord]) -> dict[str, tuple[Decimal | int, int]]:
    """What the recorded calls really spent (released calls cost nothing)."""
    charged = [r for r in records if r.outcome != "released"]
    return {
        "usd": (sum((r.cost_usd for r in charged), Decimal(0)), 0),
        "tokens": (sum(r.usage.total_tokens for r in charged), 0),
        "requests": (len(charged), 0),
    }


def wait_until(cond: Callable[[], bool], timeout: float, what: str, step: float = 0.02) -> float:
    """Poll ``cond`` (bounded); returns the seconds it took. Fails the test on timeout."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)
    return time.monotonic() - t0


def spool_lines(spool_dir: Path) -> list[bytes]:
    out: list[bytes] = []
    for path in sorted(spool_dir.rglob("spool-*.jsonl")):
        out += path.read_bytes().splitlines(keepends=True)
    return out


@pytest.fixture()
def proxy(fresh_redis: RedisServer) -> Iterator[StallProxy]:
    p = StallProxy(fresh_redis.port).start()
    yield p
    p.close()


@pytest.fixture()
def aof_redis() -> Iterator[RedisServer]:
    """A server whose data survives SIGKILL: AOF, fsync on every write; same dir across restarts."""
    server = RedisServer(None, "--appendonly", "yes", "--appendfsync", "always").start()
    conf = server.client().config_get("append*")
    assert conf["appendonly"] == "yes" and conf["appendfsync"] == "always", conf
    yield server
    server.stop()


# ------------------------------------------------------------------ fail closed


def test_closed_dead_server_refuses_fast_without_calling_the_model(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    guard = BudgetGuard(limits=LIMITS, store=fresh_redis.url, spool_dir=tmp_path)
    llm = fake()
    guarded = guard.wrap(llm)
    for i in range(3):
        guarded.invoke(f"before the fault {i}")
    assert llm.calls.count == 3

    fresh_redis.kill()
    t0 = time.monotonic()
    with pytest.raises(BudgetStoreUnavailable) as info:
        guarded.invoke("after the kill")
    dt = time.monotonic() - t0
    print(f"\n[closed/dead] fault -> BudgetStoreUnavailable in {dt * 1000:.1f} ms")
    assert dt < 2.0
    assert llm.calls.count == 3, "the model must not be called when the store is down"
    # a killed server refuses connections: said as such, not as "did not answer in time"
    assert "refused the connection" in str(info.value) and "not made" in str(info.value)

    # still down: every call is refused, none reaches the model, each one fast
    for _ in range(3):
        t1 = time.monotonic()
        with pytest.raises(BudgetStoreUnavailable):
            guarded.invoke("still down")
        assert time.monotonic() - t1 < 2.0
    assert llm.calls.count == 3

    fresh_redis.start()

    def call_ok() -> bool:
        try:
            guarded.invoke("after the restart")
        except BudgetStoreUnavailable:
            return False  # the guard may fail fast for up to store_timeout after a fault
        return True

    took = wait_until(call_ok, 5.0, "a guarded call to succeed after the restart", step=0.1)
    print(f"[closed/dead] first successful call {took * 1000:.0f} ms after the restart")
    assert llm.calls.count == 4
    # no AOF: the restarted server is empty, and holds exactly the call made since
    assert totals(guard)["requests"] == (1, 0)
    assert guard.engine.spool is not None and guard.engine.spool.pending() == 0


def test_closed_stalled_server_refuses_fast_and_recovers(
    fresh_redis: RedisServer, proxy: StallProxy, tmp_path: Path
) -> None:
    guard = BudgetGuard(limits=LIMITS, store=proxy.url, spool_dir=tmp_path)
    llm = fake()
    guarded = guard.wrap(llm)
    for i in range(3):
        guarded.invoke(f"before the stall {i}")
    assert llm.calls.count == 3

    proxy.stall()
    t0 = time.monotonic()
    with pytest.raises(BudgetStoreUnavailable):
        guarded.invoke("during the stall")
    dt = time.monotonic() - t0
    print(f"\n[closed/stalled] fault -> BudgetStoreUnavailable in {dt * 1000:.1f} ms")
    assert dt < 2.0
    assert llm.calls.count == 3

    t1 = time.monotonic()
    with pytest.raises(BudgetStoreUnavailable):
        guarded.invoke("still stalled")
    assert time.monotonic() - t1 < 2.0
    assert llm.calls.count == 3

    proxy.resume()

    def call_ok() -> bool:
        try:
            guarded.invoke("after the stall")
        except BudgetStoreUnavailable:
            return False
        return True

    took = wait_until(call_ok, 5.0, "a guarded call to succeed after the stall", step=0.1)
    print(f"[closed/stalled] first successful call {took * 1000:.0f} ms after resume")
    assert llm.calls.count == 4
    assert totals(guard)["requests"][0] == 4  # the 4 calls that ran, and no other spend


def test_closed_store_timeout_bounds_the_whole_operation(
    fresh_redis: RedisServer, proxy: StallProxy, tmp_path: Path
) -> None:
    """``store_timeout`` bounds every store operation, retries included (RedisStore docstring)."""
    guard = BudgetGuard(limits=LIMITS, store=proxy.url, spool_dir=tmp_path, store_timeout=0.6)
    llm = fake()
    guarded = guard.wrap(llm)
    guarded.invoke("warm the connection pool")
    proxy.stall()
    t0 = time.monotonic()
    with pytest.raises(BudgetStoreUnavailable):
        guarded.invoke("during the stall")
    dt = time.monotonic() - t0
    print(f"\n[closed/stalled] store_timeout=0.6 -> BudgetStoreUnavailable in {dt * 1000:.0f} ms")
    assert llm.calls.count == 1
    assert dt < 0.6 * 1.25, (
        f"store_timeout=0.6 but a stalled store took {dt:.2f}s to fail: the first attempt "
        "(socket timeout = store_timeout/3) runs before the retry deadline starts"
    )


def test_closed_stall_leaves_no_phantom_reservation(
    fresh_redis: RedisServer, proxy: StallProxy, tmp_path: Path
) -> None:
    """A reserve that timed out (the call was refused) may still reach Redis later.

    The call never ran, so once the store is back nothing may stay reserved
    for it, and nothing may be charged for it when its lease runs out
    (lease_ttl=1 here). Today the late reserve holds budget for lease_ttl and
    is then charged its worst case: spend for a call that never happened.
    """
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=LIMITS, store=proxy.url, spool_dir=tmp_path, on_record=records.append, lease_ttl=1
    )
    llm = fake()
    guarded = guard.wrap(llm)
    guarded.invoke("warm the connection pool")
    proxy.stall()
    with pytest.raises(BudgetStoreUnavailable):
        guarded.invoke("refused: the store is stalled")
    proxy.resume()
    wait_until(lambda: _succeeds(guarded.invoke, "after the stall"), 5.0, "recovery", step=0.1)
    time.sleep(0.3)  # let anything held in the network land
    guard.replay_spool()
    assert llm.calls.count == 2
    now = totals(guard)
    time.sleep(1.2)  # past lease_ttl: a leaked lease would now be charged as spend
    later = totals(guard)
    print(f"\n[closed/stalled] after recovery: {now}; after lease_ttl: {later}; ran: {expected(records)}")
    assert now == later == expected(records), (
        "a call refused with BudgetStoreUnavailable (never sent to the model) left a reservation "
        f"in Redis that is later charged: right after recovery {now}, after lease_ttl {later}, "
        f"but the calls that ran cost {expected(records)}"
    )


def _succeeds(fn: Callable[..., Any], *args: Any) -> bool:
    try:
        fn(*args)
    except BudgetStoreUnavailable:
        return False
    return True


# ------------------------------------------------------------------ fail open


def spy_fsync(monkeypatch: pytest.MonkeyPatch, under: Path) -> list[str]:
    """Record the path of every fsync'ed file under ``under`` (the real fsync still runs)."""
    seen: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        real(fd)
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if path.startswith(str(under)):
            seen.append(path)

    monkeypatch.setattr(os, "fsync", fsync)
    return seen


class Workers:
    """``n`` threads calling ``guarded.invoke`` until stopped (bounded by ``max_calls`` each)."""

    def __init__(self, guarded: Any, n: int = 4, max_calls: int = 5000) -> None:
        self.guarded = guarded
        self.errors: list[BaseException] = []
        self.durations: list[tuple[float, float]] = []  # (start, seconds) of each call
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i, max_calls), daemon=True) for i in range(n)
        ]

    def _run(self, i: int, max_calls: int) -> None:
        for k in range(max_calls):
            if self._stop.is_set():
                return
            t0 = time.monotonic()
            try:
                self.guarded.invoke(f"worker {i} call {k}")
            except BaseException as e:
                with self._lock:
                    self.errors.append(e)
            with self._lock:
                self.durations.append((t0, time.monotonic() - t0))

    def __enter__(self) -> Workers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        assert not any(t.is_alive() for t in self._threads), "a worker thread hung"


def run_open_fault(
    guard: BudgetGuard,
    llm: FakeChatModel,
    log: list[tuple[float, CallRecord]],
    spool_dir: Path,
    fsynced: list[str],
    fault: Callable[[], None],
    recover: Callable[[], None],
    label: str,
) -> None:
    """Calls run on 4 threads across a fault and a recovery; then totals must equal what ran."""
    guarded = guard.wrap(llm)
    spool = guard.engine.spool
    assert spool is not None
    with Workers(guarded) as workers:
        wait_until(lambda: len(log) >= 20, 10, "calls before the fault")
        before = len(log)
        fault()
        t_fault = time.monotonic()
        wait_until(
            lambda: any(t > t_fault and r.outcome == "spooled" for t, r in list(log)), 10, "a spooled call"
        )
        first = min(t for t, r in list(log) if t > t_fault and r.outcome == "spooled") - t_fault
        calls_at_fault = llm.calls.count
        wait_until(lambda: llm.calls.count >= calls_at_fault + 10, 15, "calls to go ahead during the fault")

        # while the store is down: the spool holds fsync'ed JSON lines
        lines = spool_lines(spool_dir)
        assert lines, "calls went ahead during the fault but nothing was spooled"
        for raw in lines:
            assert raw.endswith(b"\n")
            entry = json.loads(raw)
            assert entry["op"] in ("reserve", "settle", "release") and entry["lease"]
        ops = [json.loads(raw)["op"] for raw in lines]
        assert "settle" in ops
        # every line read above was fsync'ed (one append may still be between write and fsync)
        wait_until(
            lambda: sum(Path(p).name.startswith("spool-") for p in list(fsynced)) >= len(lines),
            2,
            f"{len(lines)} fsyncs of the spool, one per line",
        )
        # the fault lasts 4 s, several times the guard's fail-fast window (store_timeout)
        wait_until(lambda: time.monotonic() - t_fault > 4.0, 6, "the fault to last")
        t_recover = time.monotonic()
        recover()
        # keep calling across the recovery, past the guard's fail-fast window
        wait_until(lambda: time.monotonic() - t_recover > 1.5, 5, "calls after recovery")
    assert workers.errors == [], f"open mode let an error through: {workers.errors[:3]}"
    during = [d for t, d in workers.durations if t_fault < t < t_recover]

    guarded.invoke("one more call after recovery")  # replays whatever is left, if anything
    pending = spool.pending()
    # (if that call fell in the fail-fast window of a late failure, later calls must replay)
    for _ in range(15):
        if not spool.pending():
            break
        time.sleep(0.2)
        guarded.invoke("another call after recovery")
    left = spool.pending()
    got, want = totals(guard), expected(log_records(log))
    print(
        f"\n[open/{label}] fault -> first spooled call {first * 1000:.0f} ms; "
        f"calls before/during/total: {before}/{len(during)}/{len(log)}; "
        f"call latency during the fault: median {sorted(during)[len(during) // 2] * 1000:.0f} ms, "
        f"max {max(during) * 1000:.0f} ms, {sum(d > 0.5 for d in during)} calls over 0.5 s; "
        f"spool lines at first check {len(lines)}; "
        f"left after one more call {pending}\n[open/{label}] final totals {got}\n"
        f"[open/{label}] really spent  {want}"
    )
    assert llm.calls.count == len(log), "every call that ran was recorded once"
    assert got == want, "spent must equal what the calls really cost, each counted once"
    assert left == 0, "calls after recovery replay the spool by themselves"


def log_records(log: list[tuple[float, CallRecord]]) -> list[CallRecord]:
    return [r for _, r in log]


def test_open_killed_server_spools_and_replays_exactly_once(
    aof_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced = spy_fsync(monkeypatch, tmp_path)
    log: list[tuple[float, CallRecord]] = []
    guard = BudgetGuard(
        limits=LIMITS,
        store=aof_redis.url,
        on_store_error="open",
        spool_dir=tmp_path,
        on_record=lambda r: log.append((time.monotonic(), r)),
    )
    run_open_fault(guard, fake(latency=0.01), log, tmp_path, fsynced, aof_redis.kill, aof_redis.start, "dead")


def test_open_stalled_server_spools_and_replays_exactly_once(
    fresh_redis: RedisServer, proxy: StallProxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsynced = spy_fsync(monkeypatch, tmp_path)
    log: list[tuple[float, CallRecord]] = []
    guard = BudgetGuard(
        limits=LIMITS,
        store=proxy.url,
        on_store_error="open",
        spool_dir=tmp_path,
        on_record=lambda r: log.append((time.monotonic(), r)),
    )
    run_open_fault(guard, fake(latency=0.01), log, tmp_path, fsynced, proxy.stall, proxy.resume, "stalled")


def test_open_lost_reply_after_lease_expiry_counts_once(
    fresh_redis: RedisServer, proxy: StallProxy, tmp_path: Path
) -> None:
    """The server applies a reserve but its reply is lost; the lease expires before the replay.

    The spooled reserve is replayed after Redis already expired (and charged)
    that lease; the call must still be counted once, at its actual cost.
    """
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=LIMITS,
        store=proxy.url,
        on_store_error="open",
        spool_dir=tmp_path,
        lease_ttl=1,
        on_record=records.append,
    )
    llm = fake()
    guarded = guard.wrap(llm)
    guarded.invoke("warm the connection pool")
    proxy.stall_replies()
    guarded.invoke("the reserve reaches Redis, its reply does not")
    assert records[-1].outcome == "spooled"
    time.sleep(1.3)  # the lease Redis holds for that call expires (and is charged its estimate)
    proxy.resume()
    wait_until(lambda: _succeeds(guarded.invoke, "after the stall"), 5.0, "recovery", step=0.1)
    guard.replay_spool()
    assert guard.engine.spool is not None and guard.engine.spool.pending() == 0
    got, want = totals(guard), expected(records)
    print(f"\n[open/lost reply] totals {got}; really spent {want}")
    assert llm.calls.count == 3
    assert got == want, (
        "a spooled reserve replayed after its lease expired in Redis reserved it AGAIN, so the "
        f"call was charged its estimate on expiry AND its actual on settle: {got} vs {want}"
    )


# ------------------------------------------------------------------ another process's spool


def _child_spools_while_down(url: str, spool_dir: str, n: int, out: str) -> None:
    """Runs in a spawned process: the store is down, calls go ahead and are spooled."""
    records: list[CallRecord] = []
    guard = BudgetGuard(
        limits=LIMITS, store=url, on_store_error="open", spool_dir=spool_dir, on_record=records.append
    )
    llm = fake()
    guarded = guard.wrap(llm)
    for i in range(n):
        guarded.invoke(f"child call {i}")
    Path(out).write_text(
        json.dumps(
            {
                "usd": str(sum((r.cost_usd for r in records), Decimal(0))),
                "tokens": sum(r.usage.total_tokens for r in records),
                "requests": len(records),
                "model_calls": llm.calls.count,
                "outcomes": sorted({r.outcome for r in records}),
            }
        )
    )


def test_a_new_process_replays_what_a_dead_one_spooled_exactly_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    server = RedisServer()  # not started yet: the child sees it down
    out = tmp_path / "child.json"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_child_spools_while_down, args=(server.url, str(spool_dir), 7, str(out)))
    child.start()
    child.join(90)
    assert child.exitcode == 0, f"child exited with {child.exitcode}"
    done = json.loads(out.read_text())
    assert done["model_calls"] == done["requests"] == 7 and done["outcomes"] == ["spooled"]
    (left,) = spool_dir.rglob("spool-*.jsonl")
    assert len(left.read_bytes().splitlines()) == 14  # a reserve and a settle per call
    backup = tmp_path / "backup.jsonl"
    shutil.copy(left, backup)

    want = {
        "usd": (Decimal(done["usd"]), 0),
        "tokens": (done["tokens"], 0),
        "requests": (done["requests"], 0),
    }
    server.start()
    try:
        guard = BudgetGuard(limits=LIMITS, store=server.url, on_store_error="open", spool_dir=spool_dir)
        assert totals(guard) == want, "a new guard replays what the dead process left"
        assert guard.engine.spool is not None and guard.engine.spool.pending() == 0
        assert not left.exists(), "a dead process's replayed spool file is removed"

        # the same spool again (say, restored from a backup): nothing counts twice
        shutil.copy(backup, left)
        again = BudgetGuard(limits=LIMITS, store=server.url, on_store_error="open", spool_dir=spool_dir)
        assert totals(again) == want
        shutil.copy(backup, left)
        again.replay_spool()
        assert totals(again) == want and again.engine.spool is not None
        assert again.engine.spool.pending() == 0
    finally:
        server.stop()


# ------------------------------------------------------------------ crashed workers


def _child_hangs_in_the_model(url: str, spool_dir: str) -> None:
    """Runs in a spawned process: reserves, then sits in the model until SIGKILLed."""
    guard = BudgetGuard(limits=LIMITS, store=url, spool_dir=spool_dir, lease_ttl=1)
    guard.wrap(fake(latency=120)).invoke("this call never finishes")


def test_a_worker_killed_between_reserve_and_settle_is_charged_once_its_lease_expires(
    fresh_redis: RedisServer, tmp_path: Path
) -> None:
    guard = BudgetGuard(limits=LIMITS, store=fresh_redis.url, spool_dir=tmp_path, lease_ttl=1)
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_child_hangs_in_the_model, args=(fresh_redis.url, str(tmp_path)))
    child.start()
    try:
        wait_until(lambda: totals(guard)["requests"][1] == 1, 60, "the child's reservation", step=0.05)
        held = totals(guard)
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)
    assert child.exitcode == -signal.SIGKILL
    assert all(spent == 0 for spent, _ in held.values())

    took = wait_until(lambda: totals(guard)["requests"][1] == 0, 5, "the lease to expire", step=0.05)
    after = totals(guard)
    print(f"\n[crash] reserved while the worker hung: {held}; {took * 1000:.0f} ms later: {after}")
    # charged its estimate: what was reserved became spent, nothing stays reserved
    assert after == {q: (reserved, 0) for q, (_, reserved) in held.items()}
    (row,) = [r for r in guard.remaining().rows if r.quantity == "requests"]
    assert row.estimated == 1
    client = fresh_redis.client()
    assert client.zcard("budgetguard:{global}:lx") == 0, "no live lease is left behind"

    # the budget is not locked: later calls are admitted and settle normally
    records: list[CallRecord] = []
    guard2 = BudgetGuard(limits=LIMITS, store=fresh_redis.url, spool_dir=tmp_path, on_record=records.append)
    guard2.wrap(fake()).invoke("after the crash")
    final = totals(guard2)
    assert final["requests"] == (2, 0)
    assert final["tokens"] == (held["tokens"][1] + IN_TOKENS + OUT_TOKENS, 0)
    assert final["usd"] == (held["usd"][1] + records[0].cost_usd, 0)


def _stores(redis_url: str, clock: Callable[[], float]) -> list[tuple[str, Store]]:
    prefix = f"faults-{os.urandom(4).hex()}:"
    return [
        ("memory", MemoryStore(clock=clock)),
        ("redis", RedisStore.from_url(redis_url, prefix=prefix, server_time=False, clock=clock)),
    ]


REF = CounterRef("global", "lifetime")
SPEC = CounterSpec(REF, Caps(None, 10_000, None))


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_replayed_settle_never_counts_twice(redis_server: RedisServer, kind: str) -> None:
    clock = FakeClock(time.time() + 10 * 86400)
    store = dict(_stores(redis_server.url, clock))[kind]
    actual = Amount(7, 30, 1)
    # a live lease
    store.reserve(ReserveRequest("live", (SPEC,), Amount(9, 100, 1), 60))
    live = SettleRequest("live", (REF,), actual)
    assert store.settle(live) == "settled"
    # an expired lease (charged its estimate, then settled late)
    store.reserve(ReserveRequest("expired", (SPEC,), Amount(9, 100, 1), 1))
    clock.advance(2)
    late = SettleRequest("expired", (REF,), actual)
    assert store.settle(late) == "late"
    # a lease this store never saw
    unknown = SettleRequest("unknown", (REF,), actual)
    assert store.settle(unknown) == "unreserved"
    (st,) = store.status([REF])
    for req in (live, late, unknown, live, late, unknown):
        assert store.settle(req) == "replay"
    assert store.status([REF]) == [st]
    assert st.spent == Amount(21, 90, 3) and st.reserved == Amount()


def test_a_replayed_settle_never_counts_twice_across_a_server_restart(aof_redis: RedisServer) -> None:
    store = RedisStore.from_url(aof_redis.url)
    store.reserve(ReserveRequest("L", (SPEC,), Amount(9, 100, 1), 60))
    req = SettleRequest("L", (REF,), Amount(7, 30, 1))
    assert store.settle(req) == "settled"
    aof_redis.kill()
    aof_redis.start()
    assert _eventually(lambda: store.settle(req)) == "replay"
    (st,) = store.status([REF])
    assert st.spent == Amount(7, 30, 1) and st.reserved == Amount()


def _eventually(fn: Callable[[], Any], tries: int = 20) -> Any:
    for _ in range(tries):
        try:
            return fn()
        except BudgetStoreUnavailable:
            time.sleep(0.1)
    pytest.fail("the store did not come back")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_a_replayed_reserve_after_its_lease_expired_never_counts_twice(
    redis_server: RedisServer, kind: str
) -> None:
    """A spooled reserve can be replayed after the store expired that same lease.

    The replay must not open a second lease: the settle that follows must
    replace the expiry charge (a 'late' settle), not add to it.
    """
    clock = FakeClock(time.time() + 10 * 86400)
    store = dict(_stores(redis_server.url, clock))[kind]
    estimate, actual = Amount(9, 100, 1), Amount(7, 30, 1)
    store.reserve(ReserveRequest("L", (SPEC,), estimate, 1))
    clock.advance(2)  # the lease expires: charged its estimate
    assert store.status([REF])[0].spent == estimate
    store.reserve(ReserveRequest("L", (SPEC,), estimate, 1, force=True))  # the spool's replay
    outcome = store.settle(SettleRequest("L", (REF,), actual))
    (st,) = store.status([REF])
    assert (st.spent, st.reserved, outcome) == (actual, Amount(), "late"), (
        f"{kind}: replaying the reserve of an expired lease opened a new lease; the call was "
        f"charged {st.spent} (estimate + actual) instead of {actual}; settle said {outcome!r}"
    )


def test_a_spool_is_replayed_only_into_the_store_it_was_written_for(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Guards on different stores can share a spool directory (by default every RedisStore guard
    on a host uses ``<tmp>/budgetguard-spool``). Calls spooled while store A was down must be
    replayed into A, never into B."""
    dead = RedisServer()  # store A: never started
    dead.stop()  # (only removes its empty data dir)
    a = BudgetGuard(limits=LIMITS, store=dead.url, on_store_error="open", spool_dir=tmp_path)
    a.wrap(fake()).invoke("spooled for store A")
    assert a.engine.spool is not None and a.engine.spool.pending() == 2
    b_store = RedisStore.from_url(redis_server.url, prefix=f"faults-b-{os.urandom(4).hex()}:")
    b = BudgetGuard(limits=LIMITS, store=b_store, on_store_error="open", spool_dir=tmp_path)
    assert totals(b)["requests"] == (0, 0), "store B was charged for a call made against store A"
    assert a.engine.spool.pending() == 2, "A's lines wait for A"
