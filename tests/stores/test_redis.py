"""RedisStore against real redis-server processes started by the suite.

Construction (URLs, env, unix sockets, existing clients, secrets), fail-fast on
a dead or stalled server, atomicity across OS processes, Redis Cluster, lost
scripts, lease expiry after a SIGKILLed worker, listing/reset/key schema, the
asyncio path and the client settings. Nothing is mocked; the Redis at :6379
is never used (every server here is the suite's own, on a free port).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import redis
import redis.asyncio as aredis
import redis_servers
from redis.crc import key_slot
from redis_servers import Cluster, RedisServer

import budgetguard
from budgetguard import BudgetExceeded, BudgetGuard, CallRecord, ConfigError, Limit, Price
from budgetguard.errors import BudgetStoreUnavailable
from budgetguard.reservation import Amount, Caps, CounterRef, CounterSpec
from budgetguard.stores.base import ReserveRequest, SettleRequest
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

pytestmark = pytest.mark.redis  # every test here talks to real redis-server processes

# ------------------------------------------------------------------ shared arithmetic

#: $1 / $2 per million input / output tokens: 1,000 / 2,000 nano-dollars a token.
PRICES = {"test-model": Price(input_per_mtok=1, output_per_mtok=2)}
PROMPT = "hi"
#: the guard's worst case for PROMPT: 8 per call + 6 per message + 2 bytes, and max_tokens=50 out
EST_INPUT, MAX_OUT = 16, 50
EST_NANOS = EST_INPUT * 1_000 + MAX_OUT * 2_000  # 116,000
#: what the fake reports: 10 in, 40 out (<= the estimate, so settles only ever free room)
ACT_INPUT, ACT_OUTPUT = 10, 40
ACT_NANOS = ACT_INPUT * 1_000 + ACT_OUTPUT * 2_000  # 90,000
NANOS = Decimal(1_000_000_000)
PASSWORD = "s3cret"


def fake(**kw: Any) -> FakeChatModel:
    opts: dict[str, Any] = {
        "model_name": "test-model",
        "input_tokens": ACT_INPUT,
        "output_tokens": ACT_OUTPUT,
        "max_tokens": MAX_OUT,
    }
    opts.update(kw)
    return FakeChatModel(**opts)


def new_prefix() -> str:
    return f"t-{uuid.uuid4().hex[:12]}:"


@pytest.fixture(autouse=True)
def _private_spool(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards on a blocking store keep a spool; never share the machine-wide default."""
    monkeypatch.setenv("BUDGETGUARD_SPOOL_DIR", str(tmp_path / "spool"))


def test_the_arithmetic_the_process_tests_rely_on() -> None:
    records: list[CallRecord] = []
    guard = BudgetGuard(limit_usd=1, prices=PRICES, on_record=records.append)
    guard.wrap(fake()).invoke(PROMPT)
    (rec,) = records
    assert rec.reserved_usd == EST_NANOS / NANOS
    assert rec.cost_usd == ACT_NANOS / NANOS
    assert rec.outcome == "settled"
    (row,) = [r for r in guard.remaining().rows if r.quantity == "usd"]
    assert row.spent == ACT_NANOS / NANOS


# ------------------------------------------------------------------ construction


def test_a_redis_url_picks_redis_store_everywhere(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = redis_server.url
    store = budgetguard.store_from_url(url)
    assert isinstance(store, RedisStore)
    assert store.status([CounterRef("probe", "lifetime")])[0].spent == Amount()

    guard = BudgetGuard(limit_usd=1, store=url)
    assert isinstance(guard.store, RedisStore)

    monkeypatch.setenv("BUDGETGUARD_STORE", url)
    assert isinstance(budgetguard.store_from_url(None), RedisStore)
    scope = f"env-{uuid.uuid4().hex}"
    env_guard = BudgetGuard(limits=[Limit(requests=5, scope=scope)], prices=PRICES)
    assert isinstance(env_guard.store, RedisStore)
    env_guard.wrap(fake()).invoke(PROMPT)
    # the call was recorded in the server, not in this process: another store sees it
    (seen,) = RedisStore.from_url(url).status([CounterRef(scope, "lifetime")])
    assert seen.spent == Amount(ACT_NANOS, ACT_INPUT + ACT_OUTPUT, 1)


def test_a_unix_socket_url_works() -> None:
    sockdir = tempfile.mkdtemp(prefix="bg-")  # short: unix socket paths are limited to ~107 bytes
    path = os.path.join(sockdir, "redis.sock")
    server = RedisServer(None, "--unixsocket", path, "--unixsocketperm", "700").start()
    try:
        url = f"unix://{path}?db=0"
        store = budgetguard.store_from_url(url)
        assert isinstance(store, RedisStore)
        assert "unix://" in repr(store)
        guard = BudgetGuard(limits=[Limit(requests=3)], store=url, prices=PRICES)
        model = guard.wrap(fake())
        model.invoke(PROMPT)
        (row,) = guard.remaining().rows
        assert row.spent == 1 and row.reserved == 0
        # and it really is that server's: its own TCP client sees the keys
        assert server.client().keys("budgetguard:*")
    finally:
        server.stop()
        shutil.rmtree(sockdir, ignore_errors=True)


async def test_a_store_from_existing_clients(redis_server: RedisServer) -> None:
    sync = redis.Redis(port=redis_server.port)
    asy = aredis.Redis(port=redis_server.port)
    try:
        store = RedisStore(client=sync, async_client=asy, prefix=new_prefix())
        guard = BudgetGuard(limits=[Limit(requests=10)], store=store, prices=PRICES)
        model = guard.wrap(fake())
        model.invoke(PROMPT)
        await model.ainvoke(PROMPT)
        (row,) = guard.remaining().rows
        assert row.spent == 2 and row.reserved == 0
        (arow,) = (await guard.aremaining()).rows
        assert arow == row
        assert store.scopes() == [("global", "lifetime")]
    finally:
        sync.close()
        await asy.aclose()


async def test_a_sync_only_client_serves_the_async_calls_too(redis_server: RedisServer) -> None:
    client = redis.Redis(port=redis_server.port)
    store = RedisStore(client=client, prefix=new_prefix())
    spec = CounterSpec(CounterRef("async-scope", "lifetime"), Caps(tokens=100))
    res = await store.areserve(ReserveRequest("a1", (spec,), Amount(10, 40, 1), 60))
    assert res.admitted
    assert (await store.astatus([spec.ref]))[0].reserved == Amount(10, 40, 1)
    assert await store.asettle(SettleRequest("a1", (spec.ref,), Amount(5, 30, 1))) == "settled"
    assert (await store.areserve(ReserveRequest("a2", (spec,), Amount(0, 70, 0), 60))).admitted
    assert not (await store.areserve(ReserveRequest("a3", (spec,), Amount(0, 1, 0), 60))).admitted
    assert await store.arelease("a2", (spec.ref,)) is True
    (st,) = await store.astatus([spec.ref])
    assert st.spent == Amount(5, 30, 1) and st.reserved == Amount()

    guard = BudgetGuard(limits=[Limit(requests=10, scope="g")], store=store, prices=PRICES)
    model = guard.wrap(fake())
    await model.ainvoke(PROMPT)
    assert [r.spent for r in (await guard.aremaining()).rows] == [1]
    assert await store.areset("async-scope") == 1
    client.close()


async def test_scopes_lists_a_scope_first_reserved_through_the_async_api_of_a_sync_only_store(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(client=redis.Redis(port=redis_server.port), prefix=new_prefix())
    spec = CounterSpec(CounterRef("only-async", "day"), Caps(tokens=100))
    assert (await store.areserve(ReserveRequest("x1", (spec,), Amount(0, 1, 1), 60))).admitted
    assert ("only-async", "day") in store.scopes()


@pytest.mark.parametrize(
    "url",
    [
        "memcached://localhost:11211",
        "http://user:s3cret@example.com",
        "localhost:6379",
        "mongodb://:s3cret@h",
    ],
)
def test_a_bad_scheme_is_a_config_error_naming_the_valid_ones(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        budgetguard.store_from_url(url)
    msg = str(info.value)
    for scheme in ("memory://", "redis://", "rediss://", "unix://", "redis+cluster://"):
        assert scheme in msg
    assert PASSWORD not in msg
    with pytest.raises(ConfigError) as info:
        BudgetGuard(limit_usd=1, store=url)
    assert "redis://" in str(info.value) and PASSWORD not in str(info.value)


def test_redis_store_from_url_rejects_a_non_redis_scheme() -> None:
    with pytest.raises(ConfigError) as info:
        RedisStore.from_url("http://:s3cret@localhost:6379")
    msg = str(info.value)
    assert "redis://" in msg and "unix://" in msg and "redis+cluster://" in msg
    assert PASSWORD not in msg


def _text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + str(exc)


def test_a_password_in_the_url_is_never_shown() -> None:
    server = RedisServer(None, "--requirepass", PASSWORD).start()
    try:
        url = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
        store = RedisStore.from_url(url, prefix=new_prefix())
        guard = BudgetGuard(limits=[Limit(requests=10)], store=store, prices=PRICES)
        url_guard = BudgetGuard(limits=[Limit(requests=10)], store=url, prices=PRICES)
        model = guard.wrap(fake())
        model.invoke(PROMPT)  # authenticated
        assert guard.remaining().rows[0].spent == 1
        for obj in (store, guard, url_guard, url_guard.store, guard.remaining()):
            assert PASSWORD not in repr(obj) and PASSWORD not in str(obj)

        wrong = BudgetGuard(
            limits=[Limit(requests=10)],
            store=f"redis://:wrong-pass-123@127.0.0.1:{server.port}/0",
            prices=PRICES,
        )
        wrong_model = fake()
        with pytest.raises(budgetguard.BudgetError) as info:
            wrong.wrap(wrong_model).invoke(PROMPT)
        assert "wrong-pass-123" not in _text(info.value)
        assert wrong_model.calls.count == 0

        server.kill()
        before = model.calls.count
        with pytest.raises(BudgetStoreUnavailable) as dead:
            model.invoke(PROMPT)
        assert PASSWORD not in _text(dead.value)
        assert PASSWORD not in str(dead.value.store)
        assert model.calls.count == before
    finally:
        server.stop()


# ------------------------------------------------------------------ dead and stalled servers


def _time_refusal(fn: Any) -> float:
    t0 = time.monotonic()
    with pytest.raises(BudgetStoreUnavailable):
        fn()
    return time.monotonic() - t0


async def _atime_refusal(coro: Any) -> float:
    t0 = time.monotonic()
    with pytest.raises(BudgetStoreUnavailable):
        await coro
    return time.monotonic() - t0


def _guard_on(url: str) -> tuple[BudgetGuard, FakeChatModel, Any]:
    store = RedisStore.from_url(url, prefix=new_prefix())  # default timeout=1.0
    assert store.timeout == 1.0
    guard = BudgetGuard(limits=[Limit(requests=100)], store=store, prices=PRICES)
    model = fake()
    return guard, model, guard.wrap(model)


async def test_a_dead_server_fails_fast_and_the_model_is_never_called(fresh_redis: RedisServer) -> None:
    guard, model, guarded = _guard_on(fresh_redis.url)
    aguard, amodel, aguarded = _guard_on(fresh_redis.url)
    assert guard.remaining().rows[0].spent == 0  # connected and warm
    assert (await aguard.aremaining()).rows[0].spent == 0
    fresh_redis.kill()

    elapsed = _time_refusal(lambda: guarded.invoke(PROMPT))
    aelapsed = await _atime_refusal(aguarded.ainvoke(PROMPT))
    status_elapsed = await _atime_refusal(_guard_on(fresh_redis.url)[0].aremaining())
    print(f"\ndead server: invoke {elapsed:.3f}s, ainvoke {aelapsed:.3f}s, aremaining {status_elapsed:.3f}s")
    assert elapsed < 2 and aelapsed < 2 and status_elapsed < 2
    assert model.calls.count == 0 and amodel.calls.count == 0


def test_a_server_that_was_never_there_fails_fast() -> None:
    _, model, guarded = _guard_on(f"redis://127.0.0.1:{redis_servers.free_port()}/0")
    elapsed = _time_refusal(lambda: guarded.invoke(PROMPT))
    print(f"\nno server: invoke {elapsed:.3f}s")
    assert elapsed < 2 and model.calls.count == 0


async def test_a_stalled_server_fails_fast_and_recovers_when_it_resumes(fresh_redis: RedisServer) -> None:
    guard, model, guarded = _guard_on(fresh_redis.url)
    aguard, amodel, aguarded = _guard_on(fresh_redis.url)
    assert guard.remaining().rows[0].spent == 0
    assert (await aguard.aremaining()).rows[0].spent == 0
    assert fresh_redis.proc is not None
    pid = fresh_redis.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        elapsed = _time_refusal(lambda: guarded.invoke(PROMPT))
        aelapsed = await _atime_refusal(aguarded.ainvoke(PROMPT))
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"\nstalled server (SIGSTOP): invoke {elapsed:.3f}s, ainvoke {aelapsed:.3f}s")
    assert elapsed < 2 and aelapsed < 2
    assert model.calls.count == 0 and amodel.calls.count == 0

    deadline = time.monotonic() + 10
    while True:  # once the server answers again, calls go through (no lingering lock-out)
        try:
            guarded.invoke(PROMPT)
            break
        except BudgetStoreUnavailable:
            assert time.monotonic() < deadline, "the guard did not recover after SIGCONT"
            time.sleep(0.1)
    (row,) = guard.remaining().rows
    assert row.spent == 1 and row.reserved == 0 and model.calls.count == 1


class Blackhole:
    """A TCP listener that accepts connections and never reads or answers."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.conns.append(conn)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        for c in [*self.conns, self.sock]:
            c.close()


@pytest.fixture()
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    yield hole
    hole.close()


async def test_a_server_that_accepts_but_never_answers_fails_fast(blackhole: Blackhole) -> None:
    url = f"redis://127.0.0.1:{blackhole.port}/0"
    _, model, guarded = _guard_on(url)
    _, amodel, aguarded = _guard_on(url)
    elapsed = _time_refusal(lambda: guarded.invoke(PROMPT))
    aelapsed = await _atime_refusal(aguarded.ainvoke(PROMPT))
    print(f"\nblackhole proxy: invoke {elapsed:.3f}s, ainvoke {aelapsed:.3f}s")
    assert elapsed < 2 and aelapsed < 2
    assert blackhole.conns, "the client never reached the listener"
    assert model.calls.count == 0 and amodel.calls.count == 0


# ------------------------------------------------------------------ many processes, one budget

PROCESSES, CALLERS = 8, 4
REQUESTS_CAP = 96
USD_CAP = Decimal("0.01")
USD_CAP_NANOS = int(USD_CAP * NANOS)
#: admitted until spent + estimate > cap, all settled to ACT_NANOS: the first k with
#: k * ACT + EST > CAP is the number of calls that fit (ACT <= EST, so nothing overshoots).
USD_ADMITTED = (USD_CAP_NANOS - EST_NANOS) // ACT_NANOS + 1


def _hammer_worker(url: str, prefixes: tuple[str, str], barrier: Any, results: Any, wid: int) -> None:
    """One OS process: CALLERS threads on a requests budget, then CALLERS asyncio tasks on a USD one."""
    out: dict[str, Any] = {"wid": wid, "pid": os.getpid()}
    try:
        # --- requests=N, threads: stop at the first refusal (settles never free a request)
        records: list[CallRecord] = []
        store = RedisStore.from_url(url, prefix=prefixes[0])
        guard = BudgetGuard(
            limits=[Limit(requests=REQUESTS_CAP)], store=store, prices=PRICES, on_record=records.append
        )
        model = fake(latency=0.01)  # calls overlap, across threads and processes
        guarded = guard.wrap(model)
        admitted = [0] * CALLERS

        def caller(i: int) -> None:
            while True:
                try:
                    guarded.invoke(PROMPT)
                except BudgetExceeded:
                    return
                admitted[i] += 1

        barrier.wait(60)
        threads = [threading.Thread(target=caller, args=(i,)) for i in range(CALLERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["requests"] = {
            "admitted": sum(admitted),
            "calls": model.calls.count,
            "costs": [str(r.cost_usd) for r in records if r.outcome != "refused"],  # refusals: $0 records
            "outcomes": sorted({r.outcome for r in records if r.outcome != "refused"}),
        }

        # --- usd cap, asyncio tasks: a refusal while others hold reservations may
        # turn into room once they settle, so retry until refused with nothing reserved
        records2: list[CallRecord] = []
        store2 = RedisStore.from_url(url, prefix=prefixes[1])
        guard2 = BudgetGuard(
            limits=[Limit(usd=USD_CAP)], store=store2, prices=PRICES, on_record=records2.append
        )
        model2 = fake(latency=0.01)
        guarded2 = guard2.wrap(model2)

        async def acaller() -> int:
            n = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    await guarded2.ainvoke(PROMPT)
                except BudgetExceeded as e:
                    if e.reserved == 0:
                        return n
                    await asyncio.sleep(0.002)
                    continue
                n += 1
            raise AssertionError("caller never saw the budget exhausted")

        async def run() -> list[int]:
            return list(await asyncio.gather(*(acaller() for _ in range(CALLERS))))

        barrier.wait(60)
        out["usd"] = {
            "admitted": sum(asyncio.run(run())),
            "calls": model2.calls.count,
            "costs": [str(r.cost_usd) for r in records2 if r.outcome != "refused"],
            "outcomes": sorted({r.outcome for r in records2 if r.outcome != "refused"}),
        }
    except BaseException as e:  # report, never hang the parent
        out["error"] = "".join(traceback.format_exception(e))
        barrier.abort()
    results.put(out)


def test_many_processes_never_overspend_one_budget(fresh_redis: RedisServer) -> None:
    ctx = multiprocessing.get_context("spawn")
    prefixes = (new_prefix(), new_prefix())
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_hammer_worker, args=(fresh_redis.url, prefixes, barrier, results, i))
        for i in range(PROCESSES)
    ]
    t0 = time.monotonic()
    for p in procs:
        p.start()

    # watch both budgets while the workers run: spent + reserved never passes the cap
    watch = [RedisStore.from_url(fresh_redis.url, prefix=p) for p in prefixes]
    ref = CounterRef("global", "lifetime")
    samples, peak_req, peak_usd = 0, 0, 0
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while len(got) < PROCESSES:
        assert time.monotonic() < deadline, "workers did not finish"
        (r,), (u,) = watch[0].status([ref]), watch[1].status([ref])
        samples += 1
        peak_req = max(peak_req, r.spent.requests + r.reserved.requests)
        peak_usd = max(peak_usd, u.spent.nanos + u.reserved.nanos)
        assert r.spent.requests + r.reserved.requests <= REQUESTS_CAP
        assert u.spent.nanos + u.reserved.nanos <= USD_CAP_NANOS
        while not results.empty():
            got.append(results.get())
        time.sleep(0.01)
    for p in procs:
        p.join(10)
    elapsed = time.monotonic() - t0

    errors = [g["error"] for g in got if "error" in g]
    assert not errors, errors[0]
    assert len({g["pid"] for g in got}) == PROCESSES
    # the processes really competed: admissions are spread over several of them
    assert sum(g["requests"]["admitted"] > 0 for g in got) >= PROCESSES // 2
    assert sum(g["usd"]["admitted"] > 0 for g in got) >= PROCESSES // 2

    # requests=N: exactly N admitted across every process; the store agrees with the workers
    req = [g["requests"] for g in got]
    assert sum(x["admitted"] for x in req) == REQUESTS_CAP
    assert sum(x["calls"] for x in req) == REQUESTS_CAP
    (r,) = watch[0].status([ref])
    assert r.spent.requests == REQUESTS_CAP and r.reserved == Amount()
    req_costs = [Decimal(c) for x in req for c in x["costs"]]
    assert len(req_costs) == REQUESTS_CAP
    assert sum(req_costs) * NANOS == r.spent.nanos == REQUESTS_CAP * ACT_NANOS
    assert {o for x in req for o in x["outcomes"]} == {"settled"}

    # usd: exactly the number of calls that fit by the estimate-then-settle arithmetic
    usd = [g["usd"] for g in got]
    admitted = sum(x["admitted"] for x in usd)
    assert admitted == USD_ADMITTED == 110
    assert sum(x["calls"] for x in usd) == USD_ADMITTED
    (u,) = watch[1].status([ref])
    usd_costs = [Decimal(c) for x in usd for c in x["costs"]]
    assert len(usd_costs) == USD_ADMITTED
    assert sum(usd_costs) * NANOS == u.spent.nanos == USD_ADMITTED * ACT_NANOS
    assert u.spent.nanos <= USD_CAP_NANOS and u.reserved == Amount()
    assert u.spent.nanos + EST_NANOS > USD_CAP_NANOS  # and nothing that fitted was refused
    assert {o for x in usd for o in x["outcomes"]} == {"settled"}

    print(
        f"\n{PROCESSES} processes x {CALLERS} callers in {elapsed:.2f}s (spawn included); "
        f"requests: {[x['admitted'] for x in req]} = {REQUESTS_CAP}, peak {peak_req}/{REQUESTS_CAP}; "
        f"usd: {[x['admitted'] for x in usd]} = {admitted}, peak {peak_usd}/{USD_CAP_NANOS} nanos; "
        f"{samples} status samples"
    )


# ------------------------------------------------------------------ Redis Cluster

NESTED = [
    Limit(usd=1, scope="org:{org_id}"),
    Limit(tokens=10_000, per="day", scope="org:{org_id}/user:{user_id}"),
    Limit(requests=50, per="minute", scope="org:{org_id}/user:{user_id}"),
]


async def test_cluster_nested_scopes_share_one_slot_sync_and_async(redis_cluster: Cluster) -> None:
    store = RedisStore.from_url(redis_cluster.url, prefix=new_prefix())
    assert store.cluster
    records: list[CallRecord] = []
    guard = BudgetGuard(limits=NESTED, store=store, prices=PRICES, on_record=records.append)
    model = guard.wrap(fake())
    orgs = [f"org{i}" for i in range(6)]  # several roots: spread over the three primaries
    for org in orgs:
        cfg: Any = {"metadata": {"org_id": org, "user_id": "u1"}}
        model.invoke(PROMPT, config=cfg)
        await model.ainvoke(PROMPT, config=cfg)
        chunks = [c async for c in model.astream(PROMPT, config=cfg)]
        assert chunks
        status = guard.remaining(org_id=org, user_id="u1")
        astatus = await guard.aremaining(org_id=org, user_id="u1")
        assert status == astatus
        by = {(r.scope, r.quantity): r for r in status.rows}
        assert by[(f"org:{org}", "usd")].spent == 3 * ACT_NANOS / NANOS
        assert by[(f"org:{org}/user:u1", "tokens")].spent == 3 * (ACT_INPUT + ACT_OUTPUT)
        assert by[(f"org:{org}/user:u1", "requests")].spent == 3
        assert all(r.reserved == 0 for r in status.rows)
    assert len(records) == 3 * len(orgs) and {r.outcome for r in records} == {"settled"}
    assert ("org:org0/user:u1", "day") in store.scopes()
    slots = {key_slot(f"org:{org}".encode()) for org in orgs}
    assert len(slots) > 1  # the orgs really live in different slots


# ------------------------------------------------------------------ lost scripts


async def test_calls_survive_a_script_flush(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=new_prefix())
    guard = BudgetGuard(limits=[Limit(requests=1_000)], store=store, prices=PRICES)
    model = guard.wrap(fake())
    admin = redis_server.client()
    sha = store._sync_scripts["reserve"].sha
    for i in range(30):
        if i == 15:
            admin.script_flush()
            assert admin.script_exists(sha) == [False]
        model.invoke(PROMPT)
    assert admin.script_exists(sha) == [True]  # reloaded by the next call
    for i in range(10):
        if i in (0, 5):
            admin.script_flush()
            await guard.aremaining()  # the asyncio client reloads its copy too
        await model.ainvoke(PROMPT)
    (row,) = guard.remaining().rows
    assert row.spent == 40 and row.reserved == 0


# ------------------------------------------------------------------ a worker killed mid-call


def _slow_call_worker(url: str, prefix: str) -> None:
    store = RedisStore.from_url(url, prefix=prefix)
    guard = BudgetGuard(limits=[Limit(usd=1, requests=2)], store=store, prices=PRICES, lease_ttl=1)
    guard.wrap(fake(latency=5)).invoke(PROMPT)


def test_a_sigkilled_worker_leaves_a_lease_that_expires_and_charges_its_estimate(
    redis_server: RedisServer,
) -> None:
    prefix = new_prefix()
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    guard = BudgetGuard(limits=[Limit(usd=1, requests=2)], store=store, prices=PRICES, lease_ttl=1)
    proc = multiprocessing.get_context("spawn").Process(
        target=_slow_call_worker, args=(redis_server.url, prefix)
    )
    proc.start()
    try:
        deadline = time.monotonic() + 30
        while True:  # wait for the child's reservation to appear
            status = guard.remaining()
            if any(r.quantity == "requests" and r.reserved == 1 for r in status.rows):
                break
            assert proc.is_alive() and time.monotonic() < deadline, "the child never reserved"
            time.sleep(0.02)
        reserved_at = time.monotonic()
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(5)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)
    assert proc.exitcode == -signal.SIGKILL

    time.sleep(max(0.0, reserved_at + 1.2 - time.monotonic()))
    by = {r.quantity: r for r in guard.remaining().rows}
    print(f"\nlease of a SIGKILLed worker charged after {time.monotonic() - reserved_at:.2f}s")
    assert by["usd"].reserved == 0 and by["requests"].reserved == 0
    assert by["usd"].spent == EST_NANOS / NANOS  # the conservative rule: the estimate is charged
    assert by["requests"].spent == 1
    assert by["usd"].estimated == 1
    # and the budget is not locked: the remaining request is usable
    guard.wrap(fake()).invoke(PROMPT)
    by = {r.quantity: r for r in guard.remaining().rows}
    assert by["requests"].spent == 2 and by["usd"].spent == (EST_NANOS + ACT_NANOS) / NANOS


# ------------------------------------------------------------------ listing, reset, keys


def test_scopes_reset_and_the_key_schema(redis_server: RedisServer) -> None:
    prefix = new_prefix()
    store = RedisStore.from_url(redis_server.url, prefix=prefix)
    guard = BudgetGuard(
        limits=[
            Limit(usd=1, scope="org:{org}"),
            Limit(tokens=10_000, per="day", scope="org:{org}/user:{user}"),
        ],
        store=store,
        prices=PRICES,
    )
    model = guard.wrap(fake())
    for org, user in (("acme", "u1"), ("acme", "u2"), ("beta", "u1")):
        model.invoke(PROMPT, config={"metadata": {"org": org, "user": user}})
    assert store.scopes() == [
        ("org:acme", "lifetime"),
        ("org:acme/user:u1", "day"),
        ("org:acme/user:u2", "day"),
        ("org:beta", "lifetime"),
        ("org:beta/user:u1", "day"),
    ]

    keys = sorted(k.decode() for k in redis_server.client().keys(prefix + "*"))
    assert keys and all(k.startswith(prefix) for k in keys)
    tails = [k[len(prefix) :] for k in keys]
    listings = ("rootz", "ledgerz", "limits")  # roots, ledger streams, limit definitions
    assert all(t in listings or t.startswith(("{org:acme}:", "{org:beta}:")) for t in tails), tails
    assert "{org:acme}:c:lifetime:0:org:acme" in tails
    assert any(t.startswith("{org:acme}:c:day:") and t.endswith(":org:acme/user:u2") for t in tails)
    for root in ("org:acme", "org:beta"):  # one hash slot per root
        assert len({key_slot(k.encode()) for k in keys if k.startswith(f"{prefix}{{{root}}}")}) == 1
    # nothing anywhere else on the server carries this prefix's data
    assert not [k for k in redis_server.client().keys("*org:acme*") if not k.decode().startswith(prefix)]

    assert guard.reset("org:acme") == 1
    by = {r.scope: r for r in guard.remaining(org="acme", user="u1").rows}
    assert by["org:acme"].spent == 0
    assert by["org:acme/user:u1"].spent == ACT_INPUT + ACT_OUTPUT
    assert store.reset("org:acme/user:u1") == 1
    assert guard.remaining(org="acme", user="u1").rows[1].spent == 0
    by = {r.scope: r for r in guard.remaining(org="beta", user="u1").rows}
    assert by["org:beta"].spent == ACT_NANOS / NANOS  # other roots untouched
    assert guard.reset("org:nobody") == 0


# ------------------------------------------------------------------ asyncio path


async def test_ainvoke_and_astream_record_and_aremaining_matches_remaining(redis_server: RedisServer) -> None:
    records: list[CallRecord] = []
    store = RedisStore.from_url(redis_server.url, prefix=new_prefix())
    guard = BudgetGuard(
        limits=[Limit(usd=1, requests=10), Limit(tokens=1_000, per="day")],
        store=store,
        prices=PRICES,
        on_record=records.append,
    )
    model = guard.wrap(fake())
    msg = await model.ainvoke(PROMPT)
    assert msg.content
    chunks = [c async for c in model.astream(PROMPT)]
    assert "".join(str(c.content) for c in chunks) == msg.content
    results = await asyncio.gather(*(model.ainvoke(PROMPT) for _ in range(5)))
    assert len(results) == 5
    assert len(records) == 7
    assert {r.outcome for r in records} == {"settled"}
    assert all(r.cost_usd == ACT_NANOS / NANOS for r in records)

    status, astatus = guard.remaining(), await guard.aremaining()
    assert status == astatus
    by = {(r.per, r.quantity): r for r in status.rows}
    assert by[("lifetime", "usd")].spent == 7 * ACT_NANOS / NANOS
    assert by[("lifetime", "requests")].spent == 7
    assert by[("day", "tokens")].spent == 7 * (ACT_INPUT + ACT_OUTPUT)
    assert all(r.reserved == 0 for r in status.rows)


# ------------------------------------------------------------------ client settings


def test_from_url_builds_blocking_pools_with_short_timeouts_and_no_redis_py_retries() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0", timeout=0.9, max_connections=7)
    pool = store.client.connection_pool
    assert type(pool) is redis.BlockingConnectionPool
    assert pool.max_connections == 7 and pool.timeout == 0.9
    apool = store.async_client.connection_pool
    assert isinstance(apool, aredis.BlockingConnectionPool)
    for p in (pool, apool):
        kw = p.connection_kwargs
        assert kw["socket_timeout"] == pytest.approx(0.3)
        assert kw["socket_connect_timeout"] == pytest.approx(0.3)
        assert kw["retry"].get_retries() == 0
    assert store.timeout == 0.9
    default = RedisStore.from_url("redis://127.0.0.1:1/0")
    assert default.client.connection_pool.connection_kwargs["socket_timeout"] == pytest.approx(1 / 3)


# ------------------------------------------------------------------ which client each path uses


def _count_commands(client: Any, log: list[str], tag: str) -> None:
    """Wrap a client's execute_command to log what it sends (sync or async)."""
    original = client.execute_command
    if asyncio.iscoroutinefunction(original):

        async def counted_async(*args: Any, **kwargs: Any) -> Any:
            log.append(f"{tag}:{args[0]}")
            return await original(*args, **kwargs)

        client.execute_command = counted_async
    else:

        def counted(*args: Any, **kwargs: Any) -> Any:
            log.append(f"{tag}:{args[0]}")
            return original(*args, **kwargs)

        client.execute_command = counted


async def test_ainvoke_and_astream_use_redis_asyncio_and_invoke_uses_the_sync_client(
    redis_server: RedisServer,
) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=f"paths-{uuid.uuid4().hex}:")
    guard = BudgetGuard(limits=[Limit(requests=100)], store=store)
    llm = guard.wrap(FakeChatModel())
    await llm.ainvoke("warm")  # the first use of each client loads the scripts (NOSCRIPT, SCRIPT LOAD)
    await asyncio.to_thread(llm.invoke, "warm")
    log: list[str] = []
    _count_commands(store.client, log, "sync")
    _count_commands(store.async_client, log, "async")

    await llm.ainvoke("hi")
    assert [x.split(":")[0] for x in log if "EVALSHA" in x] == ["async", "async"], log
    log.clear()
    assert [c async for c in llm.astream("hi")]
    assert [x.split(":")[0] for x in log if "EVALSHA" in x] == ["async", "async"], log
    log.clear()
    await asyncio.to_thread(llm.invoke, "hi")
    assert [x.split(":")[0] for x in log if "EVALSHA" in x] == ["sync", "sync"], log
    assert guard.remaining().rows[0].spent == 5


async def test_a_sync_invoke_inside_a_running_event_loop_is_still_enforced(redis_server: RedisServer) -> None:
    """The async-dispatch detection must never take a sync call for an async one."""
    store = RedisStore.from_url(redis_server.url, prefix=f"inloop-{uuid.uuid4().hex}:")
    guard = BudgetGuard(limits=[Limit(requests=1)], store=store)
    model = FakeChatModel()
    llm = guard.wrap(model)
    llm.invoke("hi")  # a blocking call made from inside the loop, as notebooks and some servers do
    with pytest.raises(BudgetExceeded):
        llm.invoke("hi")
    with pytest.raises(BudgetExceeded):
        await llm.ainvoke("hi")
    assert model.calls.count == 1
    (row,) = guard.remaining().rows
    assert (row.spent, row.reserved) == (1, 0)


async def test_a_refused_ainvoke_on_redis_never_reaches_the_provider(redis_server: RedisServer) -> None:
    store = RedisStore.from_url(redis_server.url, prefix=f"arefuse-{uuid.uuid4().hex}:")
    guard = BudgetGuard(limits=[Limit(requests=2)], store=store)
    model = FakeChatModel()
    llm = guard.wrap(model)
    results = await asyncio.gather(*(llm.ainvoke("hi") for _ in range(6)), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 2
    assert all(isinstance(r, BudgetExceeded) for r in results if isinstance(r, BaseException))
    assert model.calls.count == 2
    with guard.enforce():
        with pytest.raises(BudgetExceeded):
            await FakeChatModel().ainvoke("hi")


# ------------------------------------------------------------------ asyncio-only clients, Sentinel


async def test_an_asyncio_only_client_serves_a_guard_sync_and_async(redis_server: RedisServer) -> None:
    """The guard's sync path needs a sync client: the store derives one to the same server."""
    async_client = aredis.Redis(port=redis_server.port, db=0)
    store = RedisStore(async_client=async_client, prefix=f"aonly-{uuid.uuid4().hex}:")
    assert store.supports_sync and store.client is not None
    assert store.client.connection_pool.connection_kwargs["port"] == redis_server.port
    guard = BudgetGuard(limits=[Limit(requests=3)], store=store)
    llm = guard.wrap(FakeChatModel())
    await asyncio.to_thread(llm.invoke, "sync")
    await llm.ainvoke("async")
    assert [r.spent for r in (await guard.aremaining()).rows] == [2]
    assert [r.spent for r in guard.remaining().rows] == [2]


def test_a_sentinel_url_finds_the_primary(tmp_path: Any) -> None:
    primary = RedisServer().start()
    sentinel_port = redis_servers.free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\nprotected-mode no\ndir {tmp_path}\n"
        f"sentinel monitor bgprimary 127.0.0.1 {primary.port} 1\n"
        "sentinel down-after-milliseconds bgprimary 5000\n"
    )
    proc = subprocess.Popen(
        [redis_servers.redis_binary(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                addr = redis.Redis(port=sentinel_port, socket_timeout=0.5).execute_command(
                    "SENTINEL", "get-master-addr-by-name", "bgprimary"
                )
                if addr:
                    break
            except redis.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "redis sentinel did not start"
            time.sleep(0.05)
        url = f"redis+sentinel://127.0.0.1:{sentinel_port}/bgprimary?db=0"
        guard = BudgetGuard(limits=[Limit(requests=2)], store=url)
        assert "sentinel" in repr(guard.store)
        model = FakeChatModel()
        llm = guard.wrap(model)
        llm.invoke("a")
        asyncio.run(llm.ainvoke("b"))
        with pytest.raises(BudgetExceeded):
            llm.invoke("c")
        assert model.calls.count == 2
        # the counters live on the primary the sentinel named
        assert any(k.startswith(b"budgetguard:") for k in primary.client().keys("*"))
    finally:
        proc.kill()
        proc.wait(5)
        primary.stop()


# ------------------------------------------------------------------ the Lua mirrors budgetguard.windows


def test_the_lua_windows_match_budgetguard_windows(redis_server: RedisServer) -> None:
    from importlib import resources

    from budgetguard.stores.redis.scripts import fields_line
    from budgetguard.windows import PERIODS, window_end, window_start

    common = (resources.files("budgetguard.stores.redis") / "lua" / "common.lua").read_text(encoding="utf-8")
    probe = """
local out = {}
for i = 1, #ARGV, 2 do
  local ws = window_start(ARGV[i], tonumber(ARGV[i + 1]))
  out[#out + 1] = I(ws)
  out[#out + 1] = I(window_end(ARGV[i], ws) or -1)
end
return out
"""
    times = [0, 59, 60, 345599, 345600, 951782400, 1709164800, 1735689599, 1735689600, 4102444800, 4107542399]
    cases = [(per, t) for per in PERIODS for t in times]
    client = redis_server.client()
    reply = client.eval(f"{fields_line()}\n{common}\n{probe}", 0, *[v for c in cases for v in c])
    got = [(int(reply[i]), int(reply[i + 1])) for i in range(0, len(reply), 2)]
    want = [(window_start(p, t), window_end(p, window_start(p, t)) or -1) for p, t in cases]
    assert got == want


# ------------------------------------------------------------------ the Lua mirrors budgetguard.reservation


def test_the_lua_apply_functions_match_budgetguard_reservation(redis_server: RedisServer) -> None:
    """The Lua states are flat lists in FIELDS order: each apply_* on them equals reservation.py's."""
    from dataclasses import replace
    from importlib import resources

    from budgetguard.reservation import CounterState, apply_expire, apply_release, apply_reserve, apply_settle
    from budgetguard.stores.redis import codec
    from budgetguard.stores.redis.scripts import fields_line

    common = (resources.files("budgetguard.stores.redis") / "lua" / "common.lua").read_text(encoding="utf-8")
    probe = """
local function amt(o) if ARGV[o] == '' then return nil end
  return {tonumber(ARGV[o]), tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])} end
local st = {}
for i = 1, #FIELDS do st[i] = tonumber(ARGV[1 + i]) end
local op, a, b, act = ARGV[1], amt(13), amt(16), amt(19)
if op == 'reserve' then apply_reserve(st, a)
elseif op == 'release' then apply_release(st, a)
elseif op == 'expire' then apply_expire(st, a)
else apply_settle(st, a, b, act, ARGV[22] == '1', ARGV[23] == '1') end
for i = 1, #FIELDS do st[i] = I(st[i]) end
return st
"""
    script = redis_server.client().register_script(f"{fields_line()}\n{common}\n{probe}")
    states = [
        CounterState(0, Amount(500, 50, 5), Amount(100, 10, 1), 2, Amount(7, 0, 1), 3),
        CounterState(0, Amount(0, 0, 0), Amount(40, 0, 1), 0, Amount(), 0),  # reserved dips after a reset
    ]
    small, big, zero = Amount(100, 10, 1), Amount(150, 5, 2), Amount()
    ops: list[tuple[str, Amount | None, Amount | None, Amount | None, bool, bool]] = [
        ("reserve", small, None, None, False, False),
        ("release", small, None, None, False, False),
        ("expire", small, None, None, False, False),
        *[
            ("settle", r, c, act, est, over)
            for r, c in ((small, None), (None, small), (None, None))
            for act in (big, zero, small)
            for est in (False, True)
            for over in (False, True)
        ],
    ]

    def flat(s: CounterState) -> list[int]:
        return [*s.spent, *s.reserved, s.overshoot_count, *s.overshoot, s.estimated_count]

    def text(a: Amount | None) -> list[str]:
        return ["", "", ""] if a is None else [str(x) for x in a]

    for st0 in states:
        for op, a, b, act, est, over in ops:
            want = replace(st0)
            if op == "reserve":
                apply_reserve(want, a)  # type: ignore[arg-type]
            elif op == "release":
                apply_release(want, a)  # type: ignore[arg-type]
            elif op == "expire":
                apply_expire(want, a)  # type: ignore[arg-type]
            else:
                apply_settle(want, a, b, act, est, over)  # type: ignore[arg-type]
            flags = ["1" if est else "0", "1" if over else "0"]
            args = [op, *map(str, flat(st0)), *text(a), *text(b), *text(act), *flags]
            got = [int(x) for x in script(args=args)]
            assert len(got) == len(codec.FIELDS)
            assert got == flat(want), (op, st0, a, b, act, est, over)
