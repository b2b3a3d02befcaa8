"""Guarded calls per second against one Redis, as a share of that Redis's own EVALSHA ceiling.

Everything runs against the SAME redis-server in one run: first its ceiling,
``redis-benchmark`` sending the guard's own reserve script (EVALSHA, the same
keys and arguments, a random lease id per call) from as many parallel clients
as there are callers; then guarded ``ainvoke`` calls of a fake chat model
(``BudgetGuard`` with a ``RedisStore``) from 1, 8 and 64 asyncio callers in
one process, and from 4 processes of 16 callers each. A guarded call is one
reserve and one settle; the settles a guard leaves to its background worker
are waited for before the clock stops. Without ``redis-benchmark`` the ceiling
is a pipelined EVALSHA loop from Python instead (said so in the output).

By default it starts its own redis-server on a free loopback port (``--url``
uses an existing one, under a unique key prefix, deleted afterwards).
``--quick`` runs each case for a fraction of a second (the smoke test).

Run: ``python bench/throughput.py [--url URL] [--seconds S] [--quick] [--settle background]``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import secrets
import shutil
import subprocess
import tempfile
import time
from importlib.metadata import version
from typing import Any

import redis
from redis_overhead import own_redis_server  # bench/ is on sys.path when run as a script

from budgetguard import BudgetGuard
from budgetguard.reservation import Amount
from budgetguard.stores.base import ReserveRequest
from budgetguard.stores.redis import RedisStore
from budgetguard.testing import FakeChatModel

PROMPT = "Summarise the quarterly report in three bullet points, please."
GOAL = 0.5  # of the ceiling, with 64 callers


def _store(url: str, prefix: str) -> RedisStore:
    return RedisStore.from_url(url, prefix=prefix, max_connections=80)


#: the guards' settle= (``--settle``), through the environment so spawned processes see it too
SETTLE_ENV = "BUDGETGUARD_BENCH_SETTLE"


def _guard(url: str, prefix: str, spool: str) -> tuple[BudgetGuard, Any]:
    background = os.environ.get(SETTLE_ENV) == "background"
    store = _store(url, prefix)
    guard = BudgetGuard(
        limit_usd=10**9, store=store, spool_dir=spool, settle="background" if background else "inline"
    )
    return guard, guard.wrap(FakeChatModel(model_name="gpt-4o-mini", max_tokens=256))


async def _callers(model: Any, guard: BudgetGuard | None, n: int, seconds: float) -> tuple[int, float]:
    """Calls made by ``n`` asyncio callers in about ``seconds``, and the time they took."""
    count = 0
    start = time.perf_counter()
    stop = start + seconds

    async def caller() -> None:
        nonlocal count
        while time.perf_counter() < stop:
            await model.ainvoke(PROMPT)
            count += 1

    await asyncio.gather(*(caller() for _ in range(n)))
    if guard is not None:  # the settles left to the background are part of the work
        await guard.engine.drain()
    return count, time.perf_counter() - start


async def _warm_then_measure(
    url: str, prefix: str, spool: str, n: int, seconds: float, barrier: Any = None
) -> tuple[int, float]:
    """One loop for both (the store's asyncio client belongs to it): a short warm-up, then the run."""
    guard, model = _guard(url, prefix, spool)
    store = guard.engine.store
    assert isinstance(store, RedisStore)
    try:
        await _callers(model, guard, max(1, n // 8), min(seconds, 0.3))
        if barrier is not None:
            await asyncio.to_thread(barrier.wait)
        return await _callers(model, guard, n, seconds)
    finally:
        await store.async_client.aclose()
        store.close()


def run_callers(url: str, prefix: str, spool: str, n: int, seconds: float) -> tuple[int, float]:
    return asyncio.run(_warm_then_measure(url, prefix, spool, n, seconds))


def _process(args: tuple[str, str, str, int, float, Any]) -> tuple[int, float]:
    url, prefix, spool, n, seconds, barrier = args
    return asyncio.run(_warm_then_measure(url, prefix, spool, n, seconds, barrier))


def run_processes(url: str, prefix: str, spool: str, procs: int, n: int, seconds: float) -> float:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(procs)
        with ctx.Pool(procs) as pool:
            results = pool.map(_process, [(url, prefix, spool, n, seconds, barrier)] * procs)
    return sum(c for c, _ in results) / max(t for _, t in results)


def bare_rate(n: int, seconds: float) -> float:
    model = FakeChatModel(model_name="gpt-4o-mini", max_tokens=256)
    count, took = asyncio.run(_callers(model, None, n, seconds))
    return count / took


# ------------------------------------------------------------------ the ceiling


def _reserve_command(url: str, prefix: str) -> tuple[bytes, list[bytes]]:
    """The reserve script's sha and one call's KEYS and ARGV, as the guard sends them (script loaded)."""
    store = _store(url, prefix)
    specs = BudgetGuard(limit_usd=10**9, store=store).engine.plan({}).specs
    req = ReserveRequest(f"warm-{secrets.token_hex(4)}", specs, Amount(100_000, 300, 1), 600.0)
    store.reserve(req)  # loads the script
    keys, args = store._reserve_args(req)
    sha = store._sync_scripts["reserve"].sha
    store.close()
    enc = [v if isinstance(v, bytes) else str(v).encode() for v in [len(keys), *keys, *args]]
    lease_at = 1 + len(keys) + 1  # ARGV[2] is the lease id
    enc[lease_at] = b"ceiling-__rand_int__"
    return sha.encode(), enc


def ceiling(url: str, prefix: str, clients: int, seconds: float) -> tuple[float, str]:
    """EVALSHA of the reserve script per second from ``clients`` parallel clients, and how it was measured."""
    sha, cmd = _reserve_command(url, prefix)
    pool = redis.ConnectionPool.from_url(url)
    host, port = pool.connection_kwargs.get("host", "127.0.0.1"), pool.connection_kwargs.get("port", 6379)
    binary = shutil.which("redis-benchmark")
    if binary is not None:
        n = max(2_000, int(20_000 * seconds))
        argv = [binary, "-h", str(host), "-p", str(port), "-c", str(clients), "-n", str(n)]
        argv += ["-r", "100000000", "--csv", "EVALSHA", sha.decode(), *(c.decode() for c in cmd)]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=True).stdout
        row = [line for line in out.splitlines() if line.startswith('"EVALSHA')][-1]
        return float(row.split(",")[1].strip('"')), f"redis-benchmark -c {clients}"
    client = redis.Redis.from_url(url)
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        pipe = client.pipeline(transaction=False)
        for _ in range(clients):
            args = [c.replace(b"__rand_int__", secrets.token_hex(6).encode()) for c in cmd]
            pipe.execute_command("EVALSHA", sha, *args)
        pipe.execute()
        done += clients
    client.close()
    return done / (time.perf_counter() - start), f"a Python loop pipelining {clients} EVALSHAs"


# ------------------------------------------------------------------ the run


def run(url: str, seconds: float, own: bool) -> None:
    prefix = f"bgtp:{os.getpid()}-{secrets.token_hex(4)}:"
    spool = tempfile.mkdtemp(prefix="bg-throughput-spool-")
    admin = redis.Redis.from_url(url)
    server = admin.info("server")
    try:
        rows: list[tuple[str, float, float, str]] = []
        for n in (1, 8, 64):
            top, how = ceiling(url, prefix, n, seconds)
            count, took = run_callers(url, prefix, spool, n, seconds)
            rows.append((f"{n} asyncio caller{'s' if n > 1 else ''}, 1 process", count / took, top, how))
        top, how = ceiling(url, prefix, 64, seconds)
        procs = run_processes(url, prefix, spool, 4, 16, seconds)
        rows.append(("4 processes x 16 asyncio callers", procs, top, how))
        bare = bare_rate(64, seconds)
    finally:
        if not own:
            keys = list(admin.scan_iter(match=f"{prefix}*", count=1000))
            for i in range(0, len(keys), 1000):
                admin.unlink(*keys[i : i + 1000])
        admin.close()
        shutil.rmtree(spool, ignore_errors=True)

    print(
        f"redis-server {server.get('redis_version')} at {url} "
        f"({'started by this script' if own else 'existing server'}); {seconds:g} s per case\n"
        f"python {platform.python_version()}, redis-py {version('redis')}, "
        f"langchain-core {version('langchain-core')}, {os.cpu_count()} CPUs"
    )
    print()
    head = f"{'case':<36} {'guarded calls/s':>16} {'EVALSHA ceiling/s':>18} {'share':>7}"
    print(f"{head}   ceiling measured by")
    for name, rate, top, how in rows:
        print(f"{name:<36} {rate:>16.0f} {top:>18.0f} {rate / top:>6.1%}   {how}")
    print(
        f"\nunguarded ainvoke, 64 asyncio callers: {bare:.0f} calls/s (the fake model and LangChain alone, "
        f"{bare / rows[2][2]:.1%} of the ceiling); guarded / unguarded: {rows[2][1] / bare:.2f}"
    )
    share = rows[2][1] / rows[2][2]
    verdict = "meets" if share >= GOAL else "MISSES"
    print(f"RESULT: with 64 callers the guard reaches {share:.1%} of the ceiling: it {verdict} the goal")
    print(f"        of {GOAL:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="use this Redis (redis://host:port/db) instead of starting one")
    ap.add_argument("--seconds", type=float, default=3.0, help="how long each case runs (default 3)")
    ap.add_argument("--quick", action="store_true", help="0.3 s per case: a smoke run, not a measurement")
    ap.add_argument(
        "--settle",
        choices=("inline", "background"),
        default="inline",
        help="the guards' settle= (default inline, the guard's default)",
    )
    args = ap.parse_args()
    os.environ[SETTLE_ENV] = args.settle
    print(f"settle={args.settle!r}")
    seconds = 0.3 if args.quick else args.seconds
    if seconds <= 0:
        ap.error("--seconds must be > 0")
    if args.url:
        run(args.url, seconds, own=False)
    else:
        with own_redis_server() as url:
            run(url, seconds, own=True)


if __name__ == "__main__":
    main()
